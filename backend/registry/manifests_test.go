package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
)

const (
	mtOCI     = backend.MediaTypeOCIManifest
	mtIndex   = backend.MediaTypeOCIIndex
	mtDocker  = backend.MediaTypeDockerManifest
	mtDList   = backend.MediaTypeDockerManifestList
	dockerCfg = "application/vnd.docker.container.image.v1+json"
)

func dockerManifest(e *env, repo string) []byte {
	cfg := []byte(`{"architecture":"arm64","os":"linux"}`)
	cd := e.pushBlob(repo, cfg)
	ld := e.pushBlob(repo, []byte("docker layer"))
	// odd spacing and key order on purpose: the bytes must survive as sent
	return []byte(fmt.Sprintf("{\n   \"schemaVersion\": 2,\n   \"mediaType\": %q,\n   \"config\": {\"mediaType\": %q, \"size\": %d, \"digest\": %q},\n   \"layers\": [{\"mediaType\": \"application/vnd.docker.image.rootfs.diff.tar.gzip\", \"size\": 12, \"digest\": %q}]\n}",
		mtDocker, dockerCfg, len(cfg), cd, ld))
}

func indexOf(mt string, children ...string) []byte {
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[%s]}`, mt, strings.Join(children, ",")))
}

func child(mt string, body []byte, arch string) string {
	return fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d,"platform":{"architecture":%q,"os":"linux"}}`, mt, digest.FromBytes(body), len(body), arch)
}

func TestManifestRoundTrip(t *testing.T) {
	e := newEnv(t, Options{})
	repo := "man/rt"
	oci := e.image(repo, "l1", "l2")
	dock := dockerManifest(e, repo)
	e.expect(e.pushManifest(repo, digest.FromBytes(oci).String(), mtOCI, oci), 201, "")
	e.expect(e.pushManifest(repo, digest.FromBytes(dock).String(), mtDocker, dock), 201, "")
	idx := indexOf(mtIndex, child(mtOCI, oci, "amd64"), child(mtDocker, dock, "arm64"))
	list := indexOf(mtDList, child(mtDocker, dock, "arm64"))
	artifact := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"artifactType":"application/vnd.example.sbom","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"data":"e30="},"layers":[]}`, mtOCI))
	e.pushBlob(repo, []byte("{}"))

	cases := []struct {
		name, ref, mt string
		body          []byte
	}{
		{"OCI manifest by tag", "v1", mtOCI, oci},
		{"Docker schema 2 by tag", "docker", mtDocker, dock},
		{"OCI index", "index", mtIndex, idx},
		{"Docker manifest list", "list", mtDList, list},
		{"artifact", "sbom", mtOCI, artifact},
		{"sha512 digest", digest.SHA512.FromBytes(oci).String(), mtOCI, oci},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.pushManifest(repo, c.ref, c.mt, c.body)
			e.expect(r, http.StatusCreated, "")
			d := digest.FromBytes(c.body)
			if backend.IsDigestShaped(c.ref) {
				d = digest.Digest(c.ref)
			}
			if r.header.Get("Docker-Content-Digest") != string(d) || r.header.Get("Location") != "/v2/"+repo+"/manifests/"+string(d) {
				t.Fatalf("headers %v", r.header)
			}
			for _, ref := range []string{c.ref, string(d)} {
				g := e.do("GET", "/v2/"+repo+"/manifests/"+ref, nil, "Accept: "+c.mt)
				e.expect(g, 200, "")
				if !bytes.Equal(g.body, c.body) {
					t.Fatalf("GET %s: bytes changed:\n%s\nwant\n%s", ref, g.body, c.body)
				}
				if g.header.Get("Content-Type") != c.mt || g.header.Get("Docker-Content-Digest") != string(d) {
					t.Fatalf("GET %s headers %v", ref, g.header)
				}
				h := e.do("HEAD", "/v2/"+repo+"/manifests/"+ref, nil)
				e.expect(h, 200, "")
				if h.header.Get("Content-Length") != fmt.Sprint(len(c.body)) || h.header.Get("Docker-Content-Digest") != string(d) || len(h.body) != 0 {
					t.Fatalf("HEAD %s headers %v", ref, h.header)
				}
			}
		})
	}
	// everything survives a restart (no cache involved then)
	e.restart(Options{})
	for _, c := range cases {
		g := e.do("GET", "/v2/"+repo+"/manifests/"+c.ref, nil)
		if g.status != 200 || !bytes.Equal(g.body, c.body) {
			t.Fatalf("after restart %s: %d", c.ref, g.status)
		}
	}
}

func TestAcceptNegotiation(t *testing.T) {
	e := newEnv(t, Options{})
	repo := "acc/ept"
	oci := e.image(repo, "a")
	dock := dockerManifest(e, repo)
	e.expect(e.pushManifest(repo, "oci", mtOCI, oci), 201, "")
	e.expect(e.pushManifest(repo, "dock", mtDocker, dock), 201, "")
	list := indexOf(mtDList, child(mtDocker, dock, "amd64"))
	e.expect(e.pushManifest(repo, "list", mtDList, list), 201, "")
	cases := []struct {
		ref    string
		accept []string
		status int
		mt     string
	}{
		{"oci", nil, 200, mtOCI},
		{"oci", []string{"Accept: */*"}, 200, mtOCI},
		{"oci", []string{"Accept: " + mtDocker + ", " + mtOCI}, 200, mtOCI},
		{"oci", []string{"Accept: " + mtDocker, "Accept: " + mtOCI + ";q=0.5"}, 200, mtOCI},
		{"oci", []string{"Accept: " + mtDocker}, 404, ""},
		{"dock", []string{"Accept: " + mtDocker}, 200, mtDocker},
		{"list", []string{"Accept: " + mtDList}, 200, mtDList},
		// an old client that cannot read lists gets the linux/amd64 image
		{"list", []string{"Accept: " + mtDocker}, 200, mtDocker},
	}
	for _, c := range cases {
		t.Run(c.ref+" "+strings.Join(c.accept, " "), func(t *testing.T) {
			r := e.do("GET", "/v2/"+repo+"/manifests/"+c.ref, nil, c.accept...)
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			if c.status == 200 && r.header.Get("Content-Type") != c.mt {
				t.Fatalf("Content-Type %q, want %q", r.header.Get("Content-Type"), c.mt)
			}
			if c.status == 404 && r.errCode() != "MANIFEST_UNKNOWN" {
				t.Fatalf("code %q", r.errCode())
			}
		})
	}
}

// TestManifestBadInput: each bad manifest gets its 4xx and code, and no
// tag or revision is created.
func TestManifestBadInput(t *testing.T) {
	e := newEnv(t, Options{})
	repo := "bad/man"
	good := e.image(repo, "x")
	e.expect(e.pushManifest(repo, "keep", mtOCI, good), 201, "")
	missingLayer := bytes.Replace(good, []byte(digest.FromString("x")), []byte(digest.FromString("absent")), 1)
	missingChild := indexOf(mtIndex, fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":10}`, mtOCI, digest.FromString("nope")))
	big := append(append([]byte(`{"schemaVersion":2,"mediaType":"`+mtOCI+`","annotations":{"a":"`), bytes.Repeat([]byte("x"), backend.MaxManifestSize)...), []byte(`"}}`)...)
	wrongSize := bytes.Replace(good, []byte(`"size":1}`), []byte(`"size":2}`), 1)
	cases := []struct {
		name, ref, ct string
		body          []byte
		status        int
		code          string
	}{
		{"not JSON", "t1", mtOCI, []byte("{nope"), 400, "MANIFEST_INVALID"},
		{"JSON array", "t1", mtOCI, []byte("[]"), 400, "MANIFEST_INVALID"},
		{"empty", "t1", mtOCI, nil, 400, "MANIFEST_INVALID"},
		{"unknown media type", "t1", "application/vnd.example+json", []byte(`{"schemaVersion":2,"mediaType":"application/vnd.example+json"}`), 400, "MANIFEST_INVALID"},
		{"content type differs from mediaType", "t1", mtDocker, good, 400, "MANIFEST_INVALID"},
		{"schema 1", "t1", "application/vnd.docker.distribution.manifest.v1+prettyjws", []byte(`{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}`), 400, "MANIFEST_INVALID"},
		{"no config", "t1", mtOCI, []byte(`{"schemaVersion":2,"mediaType":"` + mtOCI + `","layers":[]}`), 400, "MANIFEST_INVALID"},
		{"bad layer digest", "t1", mtOCI, bytes.Replace(good, []byte(digest.FromString("x")), []byte("sha256:short"), 1), 400, "MANIFEST_INVALID"},
		{"missing layer", "t1", mtOCI, missingLayer, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"missing index child", "t1", mtIndex, missingChild, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"wrong blob size", "t1", mtOCI, wrongSize, 400, "MANIFEST_INVALID"},
		{"digest mismatch", string(digest.FromString("other")), mtOCI, good, 400, "DIGEST_INVALID"},
		{"bad digest reference", "sha256:1234", mtOCI, good, 400, "DIGEST_INVALID"},
		{"invalid tag", "-bad", mtOCI, good, 400, "MANIFEST_INVALID"},
		{"too big", "t1", mtOCI, big, 413, "SIZE_INVALID"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.pushManifest(repo, c.ref, c.ct, c.body)
			if r.status != c.status || r.errCode() != c.code {
				t.Fatalf("got %d %s, want %d %s: %.200s", r.status, r.errCode(), c.status, c.code, r.body)
			}
		})
	}
	tl := e.do("GET", "/v2/"+repo+"/tags/list", nil)
	if string(bytes.TrimSpace(tl.body)) != `{"name":"bad/man","tags":["keep"]}` {
		t.Fatalf("tags %s", tl.body)
	}
	for _, b := range [][]byte{missingLayer, missingChild, wrongSize} {
		e.expect(e.do("GET", "/v2/"+repo+"/manifests/"+digest.FromBytes(b).String(), nil), 404, "MANIFEST_UNKNOWN")
	}
	e.expect(e.do("GET", "/v2/"+repo+"/manifests/nosuchtag", nil), 404, "MANIFEST_UNKNOWN")
	e.expect(e.do("GET", "/v2/"+repo+"/manifests/"+digest.FromString("zz").String(), nil), 404, "MANIFEST_UNKNOWN")
}

func TestNondistributableLayer(t *testing.T) {
	e := newEnv(t, Options{})
	repo := "nd/img"
	good := e.image(repo)
	m := bytes.Replace(good, []byte(`"layers":[]`), []byte(fmt.Sprintf(`"layers":[{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":%q,"size":5,"urls":["https://example.com/l"]}]`, digest.FromString("far away"))), 1)
	e.expect(e.pushManifest(repo, "win", mtOCI, m), 201, "")
}

func TestReferrers(t *testing.T) {
	e := newEnv(t, Options{Delete: true})
	repo := "ref/errers"
	subject := e.image(repo, "base")
	sd := digest.FromBytes(subject)
	e.expect(e.pushManifest(repo, "base", mtOCI, subject), 201, "")
	e.pushBlob(repo, []byte("{}"))
	mk := func(at string, n int) []byte {
		return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"artifactType":%q,"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[],"subject":{"mediaType":%q,"digest":%q,"size":%d},"annotations":{"n":"%d"}}`,
			mtOCI, at, mtOCI, sd, len(subject), n))
	}
	sig, sbom := mk("application/vnd.example.sig", 1), mk("application/vnd.example.sbom", 2)
	for _, b := range [][]byte{sig, sbom} {
		r := e.pushManifest(repo, digest.FromBytes(b).String(), mtOCI, b)
		e.expect(r, 201, "")
		if r.header.Get("OCI-Subject") != string(sd) {
			t.Fatalf("OCI-Subject %q", r.header.Get("OCI-Subject"))
		}
	}
	// a referrer to a subject that does not exist (yet) is accepted
	orphan := bytes.Replace(mk("application/vnd.example.sig", 3), []byte(sd), []byte(digest.FromString("later")), 1)
	e.expect(e.pushManifest(repo, "orphan", mtOCI, orphan), 201, "")

	type index struct {
		MediaType string               `json:"mediaType"`
		Manifests []backend.Descriptor `json:"manifests"`
	}
	get := func(q string) (index, *resp) {
		r := e.do("GET", "/v2/"+repo+"/referrers/"+string(sd)+q, nil)
		e.expect(r, 200, "")
		var idx index
		if err := json.Unmarshal(r.body, &idx); err != nil {
			t.Fatal(err)
		}
		if r.header.Get("Content-Type") != mtIndex || idx.MediaType != mtIndex {
			t.Fatalf("referrers content type %q", r.header.Get("Content-Type"))
		}
		return idx, r
	}
	idx, r := get("")
	if len(idx.Manifests) != 2 || r.header.Get("OCI-Filters-Applied") != "" {
		t.Fatalf("referrers %s", r.body)
	}
	idx, r = get("?artifactType=application/vnd.example.sbom")
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != digest.FromBytes(sbom) || idx.Manifests[0].Annotations["n"] != "2" || r.header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Fatalf("filtered referrers %s %v", r.body, r.header)
	}
	// none for an unknown subject: an empty index, not an error
	r = e.do("GET", "/v2/"+repo+"/referrers/"+digest.FromString("none").String(), nil)
	if r.status != 200 || !strings.Contains(string(r.body), `"manifests":[]`) {
		t.Fatalf("empty referrers %d %s", r.status, r.body)
	}
	e.expect(e.do("GET", "/v2/"+repo+"/referrers/sha256:bad", nil), 400, "DIGEST_INVALID")
	// deleting a referrer removes it from the list
	e.expect(e.do("DELETE", "/v2/"+repo+"/manifests/"+digest.FromBytes(sig).String(), nil), 202, "")
	idx, _ = get("")
	if len(idx.Manifests) != 1 {
		t.Fatalf("after delete: %d referrers", len(idx.Manifests))
	}
}

func TestDeleteManifestAndTag(t *testing.T) {
	e := newEnv(t, Options{})
	repo := "del/m"
	m := e.image(repo, "q")
	d := digest.FromBytes(m)
	e.expect(e.pushManifest(repo, "a", mtOCI, m), 201, "")
	e.expect(e.pushManifest(repo, "b", mtOCI, m), 201, "")
	e.expect(e.do("DELETE", "/v2/"+repo+"/manifests/a", nil), 405, "UNSUPPORTED")
	e.expect(e.do("DELETE", "/v2/"+repo+"/manifests/"+string(d), nil), 405, "UNSUPPORTED")

	e.restart(Options{Delete: true})
	e.expect(e.do("DELETE", "/v2/"+repo+"/manifests/a", nil), 202, "")
	e.expect(e.do("GET", "/v2/"+repo+"/manifests/a", nil), 404, "MANIFEST_UNKNOWN")
	e.expect(e.do("GET", "/v2/"+repo+"/manifests/b", nil), 200, "")
	e.expect(e.do("DELETE", "/v2/"+repo+"/manifests/a", nil), 404, "MANIFEST_UNKNOWN")
	e.expect(e.do("DELETE", "/v2/"+repo+"/manifests/"+string(d), nil), 202, "")
	e.expect(e.do("GET", "/v2/"+repo+"/manifests/"+string(d), nil), 404, "MANIFEST_UNKNOWN")
	e.expect(e.do("GET", "/v2/"+repo+"/manifests/b", nil), 404, "MANIFEST_UNKNOWN") // tags of a deleted manifest go with it
	e.expect(e.do("DELETE", "/v2/"+repo+"/manifests/"+string(d), nil), 404, "MANIFEST_UNKNOWN")
}

func TestTagsAndCatalogPagination(t *testing.T) {
	e := newEnv(t, Options{})
	m := e.image("p/one", "z")
	for _, tag := range []string{"c", "a", "B", "b", "1.0"} {
		e.expect(e.pushManifest("p/one", tag, mtOCI, m), 201, "")
	}
	for _, repo := range []string{"p/two", "p/three", "q"} {
		e.pushBlob(repo, []byte(repo))
	}
	type page struct {
		Tags         []string `json:"tags"`
		Repositories []string `json:"repositories"`
	}
	cases := []struct {
		path, want, link string
	}{
		{"/v2/p/one/tags/list", "1.0 B a b c", ""},
		{"/v2/p/one/tags/list?n=2", "1.0 B", `</v2/p/one/tags/list?last=B&n=2>; rel="next"`},
		{"/v2/p/one/tags/list?n=2&last=B", "a b", `</v2/p/one/tags/list?last=b&n=2>; rel="next"`},
		{"/v2/p/one/tags/list?n=2&last=b", "c", ""},
		{"/v2/p/one/tags/list?n=10&last=c", "", ""},
		{"/v2/p/one/tags/list?n=0", "", ""},
		{"/v2/p/two/tags/list", "", ""},
		{"/v2/_catalog", "p/one p/three p/two q", ""},
		{"/v2/_catalog?n=1", "p/one", `</v2/_catalog?last=p%2Fone&n=1>; rel="next"`},
		{"/v2/_catalog?n=2&last=p/one", "p/three p/two", `</v2/_catalog?last=p%2Ftwo&n=2>; rel="next"`},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			r := e.do("GET", c.path, nil)
			e.expect(r, 200, "")
			var p page
			if err := json.Unmarshal(r.body, &p); err != nil {
				t.Fatal(err)
			}
			if p.Tags == nil && p.Repositories == nil && !strings.Contains(string(r.body), "[]") {
				t.Errorf("list must be [] not null: %s", r.body)
			}
			got := strings.Join(append(p.Tags, p.Repositories...), " ")
			if got != c.want || r.header.Get("Link") != c.link {
				t.Fatalf("got %q Link %q, want %q Link %q", got, r.header.Get("Link"), c.want, c.link)
			}
		})
	}
	e.expect(e.do("GET", "/v2/no/such/tags/list", nil), 404, "NAME_UNKNOWN")
	e.expect(e.do("GET", "/v2/p/one/tags/list?n=-1", nil), 400, "")

	// the caller's Access.Catalog hides repositories from the catalog
	rt, perr := backend.ParseRoute("GET", "/v2/_catalog", nil)
	if perr != nil {
		t.Fatal(perr)
	}
	rec := httptest.NewRecorder()
	keep := func(n string) bool { return strings.HasPrefix(n, "p/t") }
	e.reg.ServeRoute(rec, httptest.NewRequest("GET", "/v2/_catalog", nil), rt, backend.Access{Catalog: keep})
	if got := strings.TrimSpace(rec.Body.String()); got != `{"repositories":["p/three","p/two"]}` {
		t.Fatalf("filtered catalog %s", got)
	}
}

// TestServeRoute: the registry serves the route it is given, not the
// request's URL: the gateway parsed it once and the policy decided on it.
func TestServeRoute(t *testing.T) {
	e := newEnv(t, Options{})
	d := e.pushBlob("ctx/repo", []byte("c"))
	rt, perr := backend.ParseRoute("GET", "/v2/ctx/repo/blobs/"+string(d), nil)
	if perr != nil {
		t.Fatal(perr)
	}
	rec := httptest.NewRecorder()
	e.reg.ServeRoute(rec, httptest.NewRequest("GET", "/somewhere/else", nil), rt, backend.Access{})
	if rec.Code != 200 || rec.Body.String() != "c" {
		t.Fatalf("%d %q", rec.Code, rec.Body.String())
	}
}

// TestMountAccess: a cross-repository mount reads its source only when
// the caller's Access allows it; otherwise the client gets a normal
// upload (202), as from a repository without the blob, and the route it
// passed in is left as it was.
func TestMountAccess(t *testing.T) {
	e := newEnv(t, Options{})
	d := e.pushBlob("src/secret", []byte("layer"))
	for i, c := range []struct {
		name   string
		access backend.Access
		status int
	}{
		{"may read the source", backend.Access{MayMount: true}, http.StatusCreated},
		{"may not read the source", backend.Access{}, http.StatusAccepted},
		{"full access", backend.FullAccess(), http.StatusCreated},
	} {
		t.Run(c.name, func(t *testing.T) {
			repo := fmt.Sprintf("dst/m%d", i)
			path := "/v2/" + repo + "/blobs/uploads/?mount=" + string(d) + "&from=src/secret"
			req := httptest.NewRequest("POST", path, nil)
			rt, perr := backend.ParseRequest(req)
			if perr != nil {
				t.Fatal(perr)
			}
			rec := httptest.NewRecorder()
			e.reg.ServeRoute(rec, req, rt, c.access)
			if rec.Code != c.status {
				t.Fatalf("mount answered %d %s, want %d", rec.Code, rec.Body, c.status)
			}
			if rt.MountFrom != "src/secret" {
				t.Fatalf("the caller's route was changed: MountFrom %q", rt.MountFrom)
			}
			want := http.StatusNotFound
			if c.status == http.StatusCreated {
				want = http.StatusOK
			}
			e.expect(e.do("HEAD", "/v2/"+repo+"/blobs/"+string(d), nil), want, "")
		})
	}
}

// TestTwoRegistriesOneRoot: during a config reload the old and the new
// Registry serve the same root for a while; neither may serve a tag or a
// manifest the other has changed or deleted.
func TestTwoRegistriesOneRoot(t *testing.T) {
	a := newEnv(t, Options{Delete: true})
	b := newEnv(t, Options{Root: a.root, Delete: true})
	repo := "two/reg"
	m1, m2 := a.image(repo, "one"), a.image(repo, "two")
	a.expect(a.pushManifest(repo, "t", mtOCI, m1), 201, "")
	if r := b.do("GET", "/v2/"+repo+"/manifests/t", nil); !bytes.Equal(r.body, m1) {
		t.Fatalf("b sees %d %s", r.status, r.body)
	}
	a.expect(a.pushManifest(repo, "t", mtOCI, m2), 201, "")
	if r := b.do("HEAD", "/v2/"+repo+"/manifests/t", nil); r.header.Get("Docker-Content-Digest") != digest.FromBytes(m2).String() {
		t.Fatalf("b serves a stale tag: %s", r.header.Get("Docker-Content-Digest"))
	}
	a.expect(a.do("DELETE", "/v2/"+repo+"/manifests/"+digest.FromBytes(m2).String(), nil), 202, "")
	b.expect(b.do("GET", "/v2/"+repo+"/manifests/"+digest.FromBytes(m2).String(), nil), 404, "MANIFEST_UNKNOWN")
	b.expect(b.do("GET", "/v2/"+repo+"/manifests/t", nil), 404, "MANIFEST_UNKNOWN")
}
