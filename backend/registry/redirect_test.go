package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage/s3store"
	"github.com/wharf-dev/wharf/e2e/harness"
)

// s3Env is a registry on a versitygw bucket.
func s3Env(t *testing.T, redirect bool) (*env, *harness.VersityGW) {
	t.Helper()
	gw := harness.StartVersityGW(t, "wharf")
	st, err := s3store.New(context.Background(), s3store.Options{
		Config:    s3store.Config{Bucket: "wharf", Prefix: "registry.test", Endpoint: gw.Endpoint, PathStyle: true, Region: "us-east-1"},
		AccessKey: gw.AccessKey, SecretKey: gw.SecretKey, UploadTTL: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	return newEnv(t, Options{Store: st, Redirect: redirect}), gw
}

// noFollow sends one request without following redirects.
func noFollow(t *testing.T, method, url string, hdr ...string) *resp {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return &resp{status: res.StatusCode, header: res.Header, body: b}
}

// TestBlobRedirect: with redirect on, a blob GET answers 307 to a
// pre-signed URL that serves exactly the blob (whole and in a range) to
// a client without credentials; HEAD, manifests, unknown blobs and blobs
// of another repository are answered by wharf as before. With redirect
// off the same GET streams the blob.
func TestBlobRedirect(t *testing.T) {
	e, gw := s3Env(t, true)
	data := make([]byte, 300<<10)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	d := e.pushBlob("team/app", data)
	blobURL := e.srv.URL + "/v2/team/app/blobs/" + string(d)

	r := noFollow(t, http.MethodGet, blobURL)
	if r.status != http.StatusTemporaryRedirect {
		t.Fatalf("GET: %d %s, want 307", r.status, r.body)
	}
	loc := r.header.Get("Location")
	if !strings.HasPrefix(loc, gw.Endpoint+"/wharf/registry.test/blobs/sha256/") || !strings.Contains(loc, "X-Amz-Signature=") {
		t.Fatalf("Location %q is not a pre-signed URL of the bucket", loc)
	}
	if !strings.Contains(loc, "X-Amz-Expires=1200") {
		t.Errorf("Location %q: want the default expiry of 20 minutes", loc)
	}
	if r.header.Get("Docker-Content-Digest") != string(d) {
		t.Errorf("Docker-Content-Digest %q", r.header.Get("Docker-Content-Digest"))
	}
	// The URL works for a client with no S3 credentials.
	got := noFollow(t, http.MethodGet, loc)
	if got.status != http.StatusOK || !bytes.Equal(got.body, data) {
		t.Fatalf("pre-signed GET: %d, %d bytes (want %d)", got.status, len(got.body), len(data))
	}
	got = noFollow(t, http.MethodGet, loc, "Range: bytes=1000-1999")
	if got.status != http.StatusPartialContent || !bytes.Equal(got.body, data[1000:2000]) {
		t.Fatalf("pre-signed ranged GET: %d, %d bytes", got.status, len(got.body))
	}
	// A client that follows redirects (net/http, as Go clients do) gets the blob.
	res, err := http.Get(blobURL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("followed GET: %d, %d bytes, %v", res.StatusCode, len(body), err)
	}
	// A tampered URL is refused by S3.
	if bad := noFollow(t, http.MethodGet, strings.Replace(loc, "X-Amz-Expires=1200", "X-Amz-Expires=9999", 1)); bad.status != http.StatusForbidden {
		t.Fatalf("tampered pre-signed URL: %d, want 403", bad.status)
	}

	// HEAD is answered by wharf itself.
	h := noFollow(t, http.MethodHead, blobURL)
	if h.status != http.StatusOK || h.header.Get("Location") != "" || h.header.Get("Content-Length") != "307200" {
		t.Fatalf("HEAD: %d, Location %q, Content-Length %q", h.status, h.header.Get("Location"), h.header.Get("Content-Length"))
	}
	// Unknown here: 404 from wharf, no redirect.
	for _, u := range []string{
		e.srv.URL + "/v2/team/app/blobs/sha256:" + strings.Repeat("0", 64),
		e.srv.URL + "/v2/other/repo/blobs/" + string(d),
	} {
		r := noFollow(t, http.MethodGet, u)
		if r.status != http.StatusNotFound || r.errCode() != backend.CodeBlobUnknown || r.header.Get("Location") != "" {
			t.Fatalf("GET %s: %d %s, Location %q", u, r.status, r.body, r.header.Get("Location"))
		}
	}
	// Manifests are served by wharf.
	m := e.image("team/app", "layer-a")
	e.expect(e.pushManifest("team/app", "v1", backend.MediaTypeOCIManifest, m), http.StatusCreated, "")
	if r := noFollow(t, http.MethodGet, e.srv.URL+"/v2/team/app/manifests/v1"); r.status != http.StatusOK || !bytes.Equal(r.body, m) {
		t.Fatalf("manifest GET: %d %s", r.status, r.body)
	}

	// Redirect off (the default): the blob streams from wharf.
	off, _ := s3Env(t, false)
	d2 := off.pushBlob("team/app", data)
	if r := noFollow(t, http.MethodGet, off.srv.URL+"/v2/team/app/blobs/"+string(d2)); r.status != http.StatusOK || !bytes.Equal(r.body, data) {
		t.Fatalf("redirect off: %d, %d bytes", r.status, len(r.body))
	}
}

// TestRedirectNeedsARedirector: redirect on a local store is ignored.
func TestRedirectNeedsARedirector(t *testing.T) {
	e := newEnv(t, Options{Redirect: true})
	d := e.pushBlob("a", []byte("x"))
	if r := noFollow(t, http.MethodGet, e.srv.URL+"/v2/a/blobs/"+string(d)); r.status != http.StatusOK || string(r.body) != "x" {
		t.Fatalf("GET on the local store: %d %q", r.status, r.body)
	}
}
