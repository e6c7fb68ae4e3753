package cache

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/wharf-dev/wharf/backend"
)

// Tag lists come from the upstream (n and last passed on); when it is
// down, the tags the cache knows are listed.
func TestTagsList(t *testing.T) {
	up := startUpstream(t)
	im := up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, randBytes(t, 100))
	for _, tag := range []string{"v2", "v3", "v4"} {
		up.pushManifest("team/app", tag, backend.MediaTypeOCIManifest, im.manifest)
	}
	ce := newCache(t, Options{Upstream: up.srv.URL})
	tags := func(r *resp) string {
		var v struct {
			Tags []string `json:"tags"`
		}
		if err := json.Unmarshal(r.body, &v); err != nil {
			t.Fatalf("tag list %s: %v", r.body, err)
		}
		return strings.Join(v.Tags, ",")
	}
	r := ce.do("GET", "/v2/team/app/tags/list")
	expect(t, r, http.StatusOK, "")
	if got := tags(r); got != "v1,v2,v3,v4" {
		t.Fatalf("tags %s", got)
	}
	r = ce.do("GET", "/v2/team/app/tags/list?n=2&last=v1")
	expect(t, r, http.StatusOK, "")
	if got := tags(r); got != "v2,v3" || !strings.Contains(r.header.Get("Link"), "last=v3") {
		t.Fatalf("page: %s, Link %q", got, r.header.Get("Link"))
	}
	expect(t, ce.do("GET", "/v2/team/nope/tags/list"), http.StatusNotFound, backend.CodeNameUnknown)

	// upstream down: the cached tags
	expect(t, ce.do("GET", "/v2/team/app/manifests/v3", acceptAllHdr), http.StatusOK, "")
	expect(t, ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr), http.StatusOK, "")
	up.down.Store(http.StatusBadGateway)
	r = ce.do("GET", "/v2/team/app/tags/list")
	expect(t, r, http.StatusOK, "")
	if got := tags(r); got != "v1,v3" {
		t.Fatalf("cached tags %s", got)
	}
	r = ce.do("GET", "/v2/team/app/tags/list?n=1")
	if got := tags(r); got != "v1" || r.header.Get("Link") == "" {
		t.Fatalf("cached page %s, Link %q", got, r.header.Get("Link"))
	}
	expect(t, ce.do("GET", "/v2/team/nope/tags/list"), http.StatusBadGateway, backend.CodeUnknown)
}

// Referrers are passed through; an upstream that cannot answer gives a
// 404 (clients fall back to the tag schema).
func TestReferrers(t *testing.T) {
	up := startUpstream(t)
	im := up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, randBytes(t, 100))
	empty := up.pushBlob("team/app", []byte("{}"))
	sig := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"artifactType":"application/vnd.test.sig","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2},"layers":[],"subject":{"mediaType":%q,"digest":%q,"size":%d}}`,
		backend.MediaTypeOCIManifest, empty, backend.MediaTypeOCIManifest, im.digest, len(im.manifest)))
	sd := up.pushManifest("team/app", "sig", backend.MediaTypeOCIManifest, sig)
	ce := newCache(t, Options{Upstream: up.srv.URL})
	r := ce.do("GET", "/v2/team/app/referrers/"+string(im.digest))
	expect(t, r, http.StatusOK, "")
	if r.header.Get("Content-Type") != backend.MediaTypeOCIIndex || !strings.Contains(string(r.body), string(sd)) {
		t.Fatalf("referrers %v %s", r.header, r.body)
	}
	r = ce.do("GET", "/v2/team/app/referrers/"+string(im.digest)+"?artifactType=application/vnd.other")
	expect(t, r, http.StatusOK, "")
	if strings.Contains(string(r.body), string(sd)) || r.header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Fatalf("filtered referrers %v %s", r.header, r.body)
	}
	up.down.Store(http.StatusServiceUnavailable)
	expect(t, ce.do("GET", "/v2/team/app/referrers/"+string(im.digest)), http.StatusNotFound, "")
}

// A client that cannot take every manifest type gets what the upstream
// gives for its Accept header, and the cache's answer for the tag (the
// index) is not replaced by it.
func TestRestrictedAccept(t *testing.T) {
	up := startUpstream(t)
	amd := up.pushImage("team/app", "amd64", backend.MediaTypeDockerManifest, randBytes(t, 100))
	arm := up.pushImage("team/app", "arm64", backend.MediaTypeDockerManifest, randBytes(t, 100))
	index := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[{"mediaType":%q,"digest":%q,"size":%d,"platform":{"architecture":"amd64","os":"linux"}},{"mediaType":%q,"digest":%q,"size":%d,"platform":{"architecture":"arm64","os":"linux"}}]}`,
		backend.MediaTypeDockerManifestList, backend.MediaTypeDockerManifest, amd.digest, len(amd.manifest), backend.MediaTypeDockerManifest, arm.digest, len(arm.manifest)))
	id := up.pushManifest("team/app", "multi", backend.MediaTypeDockerManifestList, index)
	ce := newCache(t, Options{Upstream: up.srv.URL})

	old := "Accept: " + backend.MediaTypeDockerManifest
	r := ce.do("GET", "/v2/team/app/manifests/multi", old)
	expect(t, r, http.StatusOK, "")
	if r.header.Get("Docker-Content-Digest") != string(amd.digest) || !bytes.Equal(r.body, amd.manifest) {
		t.Fatalf("schema2-only client got %s", r.header.Get("Docker-Content-Digest"))
	}
	r = ce.do("GET", "/v2/team/app/manifests/multi", acceptAllHdr)
	expect(t, r, http.StatusOK, "")
	if r.header.Get("Docker-Content-Digest") != string(id) || r.header.Get("Content-Type") != backend.MediaTypeDockerManifestList {
		t.Fatalf("multi-arch client got %s %s", r.header.Get("Docker-Content-Digest"), r.header.Get("Content-Type"))
	}
	// children by digest, as docker pulls them after the index
	up.down.Store(http.StatusServiceUnavailable)
	r = ce.do("GET", "/v2/team/app/manifests/"+string(amd.digest), acceptAllHdr)
	expect(t, r, http.StatusOK, "")
	// no Accept at all: anything goes, the index is served from the cache
	r = ce.do("GET", "/v2/team/app/manifests/multi")
	expect(t, r, http.StatusOK, "")
	if r.header.Get("Docker-Content-Digest") != string(id) {
		t.Fatalf("no-Accept client got %s", r.header.Get("Docker-Content-Digest"))
	}
}
