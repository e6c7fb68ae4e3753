package registry_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// TestKillDuringUpload: kill -9 while one blob upload has an acknowledged
// first chunk and another is in the middle of a streamed PATCH. After a
// restart neither blob is visible, the acknowledged chunk is still there
// (the upload resumes from where the registry said it was), and the
// resumed upload completes with the right bytes.
func TestKillDuringUpload(t *testing.T) {
	harness.ForEachTarget(t, func(t *testing.T, tg harness.Target) {
		reg := tg.Start(t)
		raw := harness.NewRawClient(reg.URL())
		repo := repoName(t, "blobs")
		const size = 1 << 20
		blobA, blobB := randomBytes(t, size), randomBytes(t, size)
		digestA, digestB := sha256Of(blobA), sha256Of(blobB)

		// Upload A: POST, then one acknowledged chunk of the first half.
		locA := startUpload(t, raw, repo)
		h := http.Header{
			"Content-Type":  {"application/octet-stream"},
			"Content-Range": {fmt.Sprintf("0-%d", size/2-1)},
		}
		r := raw.Do(t, http.MethodPatch, locA, h, blobA[:size/2])
		if r.Status != http.StatusAccepted {
			t.Fatalf("PATCH first half: %d %s", r.Status, r.Body)
		}
		if got, want := r.Header.Get("Range"), fmt.Sprintf("0-%d", size/2-1); got != want {
			t.Fatalf("PATCH first half answered Range %q, want %q", got, want)
		}
		locA = relative(t, raw, r.Header.Get("Location"))

		// Upload B: a streamed PATCH whose body stops half way.
		locB := startUpload(t, raw, repo)
		patch := raw.StartPatch(t, locB)
		patch.Write(t, blobB[:size/2])
		reg.Kill(t)
		patch.Cut(t)
		reg.Start(t)

		raw = harness.NewRawClient(reg.URL())
		for _, d := range []v1.Hash{digestA, digestB} {
			if r := raw.Do(t, http.MethodHead, "/v2/"+repo+"/blobs/"+d.String(), nil, nil); r.Status != http.StatusNotFound {
				t.Errorf("HEAD blob %s after kill -9: %d, want 404 (a partial upload must never be visible)", d, r.Status)
			}
		}

		// A resumes: the registry still has the acknowledged first half.
		st := raw.Do(t, http.MethodGet, locA, nil, nil)
		if st.Status != http.StatusNoContent {
			t.Fatalf("GET upload status of A after restart: %d %s", st.Status, st.Body)
		}
		if got, want := st.Header.Get("Range"), fmt.Sprintf("0-%d", size/2-1); got != want {
			t.Fatalf("upload A resumes at Range %q, want %q (the acknowledged chunk was lost)", got, want)
		}
		locA = relative(t, raw, st.Header.Get("Location"))
		h.Set("Content-Range", fmt.Sprintf("%d-%d", size/2, size-1))
		r = raw.Do(t, http.MethodPatch, locA, h, blobA[size/2:])
		if r.Status != http.StatusAccepted {
			t.Fatalf("PATCH second half after restart: %d %s", r.Status, r.Body)
		}
		locA = relative(t, raw, r.Header.Get("Location"))
		r = raw.Do(t, http.MethodPut, withDigest(locA, digestA), http.Header{"Content-Type": {"application/octet-stream"}}, nil)
		if r.Status != http.StatusCreated {
			t.Fatalf("PUT to finish A: %d %s", r.Status, r.Body)
		}
		got := raw.GetBlob(t, repo, digestA.String())
		if got.Status != http.StatusOK || !bytes.Equal(got.Body, blobA) {
			t.Fatalf("GET resumed blob A: %d, %d bytes, equal=%v", got.Status, len(got.Body), bytes.Equal(got.Body, blobA))
		}

		// B is pushed again from scratch and comes back intact.
		raw.PushBlob(t, repo, "application/octet-stream", blobB)
		got = raw.GetBlob(t, repo, digestB.String())
		if got.Status != http.StatusOK || !bytes.Equal(got.Body, blobB) {
			t.Fatalf("GET re-pushed blob B: %d, %d bytes", got.Status, len(got.Body))
		}
	})
}

func startUpload(t *testing.T, raw *harness.RawClient, repo string) string {
	t.Helper()
	r := raw.Do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("POST upload: %d %s", r.Status, r.Body)
	}
	return relative(t, raw, r.Header.Get("Location"))
}

// relative turns a Location header into a path on the registry.
func relative(t *testing.T, raw *harness.RawClient, loc string) string {
	t.Helper()
	base, err := url.Parse(raw.Base)
	if err != nil {
		t.Fatal(err)
	}
	u, err := base.Parse(loc)
	if err != nil || u.Host != base.Host {
		t.Fatalf("Location %q is not on %s (%v)", loc, base.Host, err)
	}
	return u.RequestURI()
}

func withDigest(loc string, d v1.Hash) string {
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	return loc + sep + "digest=" + url.QueryEscape(d.String())
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
