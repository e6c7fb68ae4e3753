package registry_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/wharf-dev/wharf/e2e/harness"
)

const (
	sigConfigType = "application/vnd.wharf.e2e.signature.config.v1+json"
	sbomType      = "application/vnd.wharf.e2e.sbom.v1+json"
	emptyJSONType = "application/vnd.oci.empty.v1+json"
)

// TestReferrers: two artifacts refer to a pushed image, one written by
// go-containerregistry (crane's library; artifact type from its config
// media type), one with an explicit artifactType written over raw HTTP. The
// referrers API lists both, filters by artifactType, and a manifest PUT with
// a subject answers with OCI-Subject.
func TestReferrers(t *testing.T) {
	harness.ForEachTarget(t, func(t *testing.T, tg harness.Target) {
		tg.SkipIfBroken(t, harness.FeatureReferrers)
		testReferrers(t, tg.Start(t))
	})
}

func testReferrers(t *testing.T, reg harness.Registry) {
	crane := harness.Crane(t)
	{
		repo := repoName(t, "app")
		subjectImg := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 1, 64<<10)
		subjectRef := reg.Addr() + "/" + repo + ":v1"
		if err := remote.Write(harness.Ref(t, subjectRef), subjectImg, harness.RemoteOptions()...); err != nil {
			t.Fatalf("push subject: %v", err)
		}
		subject := describe(t, subjectImg)
		subjectDigest := harness.Ref(t, reg.Addr()+"/"+repo+"@"+subject.Digest.String()).(name.Digest)

		// Artifact 1: an OCI image manifest whose config media type is the
		// artifact type, pushed by digest with go-containerregistry.
		sigLayer, err := random.Layer(4<<10, "application/vnd.wharf.e2e.signature.v1")
		if err != nil {
			t.Fatalf("signature layer: %v", err)
		}
		sig, err := mutate.AppendLayers(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), sigConfigType), sigLayer)
		if err != nil {
			t.Fatalf("signature artifact: %v", err)
		}
		sig = mutate.Subject(sig, subject).(v1.Image)
		sigDigest := harness.MustDigest(t, sig)
		if err := remote.Write(subjectDigest.Context().Digest(sigDigest.String()), sig, harness.RemoteOptions()...); err != nil {
			t.Fatalf("push signature artifact: %v", err)
		}

		// Artifact 2: artifactType, empty config, subject; raw HTTP so the
		// PUT answer's headers can be checked.
		raw := harness.NewRawClient(reg.URL())
		cfg := raw.PushBlob(t, repo, emptyJSONType, []byte("{}"))
		layer := raw.PushBlob(t, repo, sbomType, []byte(`{"packages":["wharf-e2e"]}`))
		sbomManifest, err := json.Marshal(map[string]any{
			"schemaVersion": 2,
			"mediaType":     types.OCIManifestSchema1,
			"artifactType":  sbomType,
			"config":        cfg,
			"layers":        []v1.Descriptor{layer},
			"subject":       subject,
			"annotations":   map[string]string{"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
		})
		if err != nil {
			t.Fatalf("sbom manifest: %v", err)
		}
		sbomDigest := sha256Of(sbomManifest)
		put := raw.PutManifest(t, repo, sbomDigest.String(), string(types.OCIManifestSchema1), sbomManifest)
		if put.Status != http.StatusCreated {
			t.Fatalf("PUT sbom manifest: %d %s", put.Status, put.Body)
		}
		if got := put.Header.Get("OCI-Subject"); got != subject.Digest.String() {
			t.Errorf("PUT of a manifest with a subject answered OCI-Subject %q, want %s", got, subject.Digest)
		}
		if got := put.Header.Get("Docker-Content-Digest"); got != sbomDigest.String() {
			t.Errorf("PUT answered Docker-Content-Digest %q, want %s", got, sbomDigest)
		}

		// The referrers API, unfiltered and filtered.
		all := getReferrers(t, raw, repo, subject.Digest, "")
		wantAll := map[v1.Hash]string{sigDigest: sigConfigType, sbomDigest: sbomType}
		checkReferrers(t, all, wantAll)
		filtered := getReferrers(t, raw, repo, subject.Digest, sbomType)
		checkReferrers(t, filtered, map[v1.Hash]string{sbomDigest: sbomType})

		// A digest nothing refers to: 200 and an empty index.
		none := getReferrers(t, raw, repo, sigDigest, "")
		checkReferrers(t, none, map[v1.Hash]string{})

		// go-containerregistry's client sees the same through the API.
		idx, err := remote.Referrers(subjectDigest, harness.RemoteOptions()...)
		if err != nil {
			t.Fatalf("remote.Referrers: %v", err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatalf("referrers index: %v", err)
		}
		checkReferrers(t, im, wantAll)

		// And crane can fetch the artifacts by digest.
		for d := range wantAll {
			ref := reg.Addr() + "/" + repo + "@" + d.String()
			if got := crane.Must(t, "digest", "--insecure", ref); got != d.String()+"\n" {
				t.Errorf("crane digest %s = %q", ref, got)
			}
		}
	}
}

func describe(t *testing.T, img v1.Image) v1.Descriptor {
	t.Helper()
	mt, err := img.MediaType()
	if err != nil {
		t.Fatalf("media type: %v", err)
	}
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatalf("manifest: %v", err)
	}
	return v1.Descriptor{MediaType: mt, Digest: sha256Of(raw), Size: int64(len(raw))}
}

func sha256Of(b []byte) v1.Hash {
	h, _, err := v1.SHA256(bytesReader(b))
	if err != nil {
		panic(err) // reading from memory cannot fail
	}
	return h
}

// getReferrers calls GET /v2/<repo>/referrers/<digest>[?artifactType=] and
// checks the answer's status, media type and filter header.
func getReferrers(t *testing.T, raw *harness.RawClient, repo string, d v1.Hash, artifactType string) *v1.IndexManifest {
	t.Helper()
	path := "/v2/" + repo + "/referrers/" + d.String()
	if artifactType != "" {
		path += "?artifactType=" + url.QueryEscape(artifactType)
	}
	r := raw.Do(t, http.MethodGet, path, http.Header{"Accept": {string(types.OCIImageIndex)}}, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != string(types.OCIImageIndex) {
		t.Errorf("GET %s: Content-Type %q, want %s", path, ct, types.OCIImageIndex)
	}
	if artifactType != "" && !slices.Contains(r.Header.Values("OCI-Filters-Applied"), "artifactType") {
		t.Errorf("GET %s: OCI-Filters-Applied %q, want artifactType", path, r.Header.Values("OCI-Filters-Applied"))
	}
	var im v1.IndexManifest
	if err := json.Unmarshal(r.Body, &im); err != nil {
		t.Fatalf("GET %s: body is not an index: %v\n%s", path, err, r.Body)
	}
	if im.SchemaVersion != 2 || im.MediaType != types.OCIImageIndex {
		t.Errorf("GET %s: schemaVersion %d mediaType %q", path, im.SchemaVersion, im.MediaType)
	}
	return &im
}

// checkReferrers compares an index's descriptors (digest -> artifactType)
// with want.
func checkReferrers(t *testing.T, im *v1.IndexManifest, want map[v1.Hash]string) {
	t.Helper()
	got := map[v1.Hash]string{}
	for _, d := range im.Manifests {
		got[d.Digest] = d.ArtifactType
		if d.MediaType != types.OCIManifestSchema1 || d.Size <= 0 {
			t.Errorf("referrer %s: mediaType %q size %d", d.Digest, d.MediaType, d.Size)
		}
	}
	if len(got) != len(want) || len(im.Manifests) != len(want) {
		t.Fatalf("referrers %v, want %v", got, want)
	}
	for d, at := range want {
		if got[d] != at {
			t.Errorf("referrer %s has artifactType %q, want %q", d, got[d], at)
		}
	}
}
