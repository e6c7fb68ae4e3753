package backend

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
)

const (
	dA = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	dB = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// TestParseRequestTyped: the typed forms of a request (tag, digest, upload
// id, mount source, Accept list) come out of one parse, so no backend
// parses the path, query or headers again.
func TestParseRequestTyped(t *testing.T) {
	for _, c := range []struct {
		method, target string
		accept         []string
		want           Route
		badDigest      bool
	}{
		{method: "GET", target: "/v2/a/b/manifests/v1", accept: []string{"application/vnd.oci.image.manifest.v1+json; q=0.9, application/json", "text/plain"},
			want: Route{Kind: KindManifest, Repo: "a/b", Reference: "v1", Tag: "v1", Action: ActionPull,
				Accept: []string{"application/vnd.oci.image.manifest.v1+json", "application/json", "text/plain"}}},
		{method: "HEAD", target: "/v2/a/manifests/" + dA,
			want: Route{Kind: KindManifest, Repo: "a", Reference: dA, Digest: dA, Action: ActionPull}},
		// shaped like a digest, not a valid one: left to the backend
		{method: "PUT", target: "/v2/a/manifests/sha256:zz", badDigest: true,
			want: Route{Kind: KindManifest, Repo: "a", Reference: "sha256:zz", Action: ActionPush}},
		{method: "GET", target: "/v2/a/blobs/" + dB,
			want: Route{Kind: KindBlob, Repo: "a", Reference: dB, Digest: dB, Action: ActionPull}},
		{method: "GET", target: "/v2/a/referrers/" + dB,
			want: Route{Kind: KindReferrers, Repo: "a", Reference: dB, Digest: dB, Action: ActionPull}},
		{method: "PATCH", target: "/v2/a/blobs/uploads/u-1",
			want: Route{Kind: KindUpload, Repo: "a", Reference: "u-1", UploadID: "u-1", Action: ActionPush}},
		{method: "POST", target: "/v2/a/blobs/uploads/?mount=" + dA + "&from=b/c",
			want: Route{Kind: KindUploadStart, Repo: "a", Action: ActionPush, MountDigest: dA, MountFrom: "b/c", MountFromGiven: true}},
		// an invalid from= is no source, but was given (no "any repository" mount)
		{method: "POST", target: "/v2/a/blobs/uploads/?mount=" + dA + "&from=B..C",
			want: Route{Kind: KindUploadStart, Repo: "a", Action: ActionPush, MountDigest: dA, MountFromGiven: true}},
		{method: "POST", target: "/v2/a/blobs/uploads/?mount=" + dA,
			want: Route{Kind: KindUploadStart, Repo: "a", Action: ActionPush, MountDigest: dA}},
		// an invalid mount digest: a normal upload, the source still named
		{method: "POST", target: "/v2/a/blobs/uploads/?mount=sha256:zz&from=b",
			want: Route{Kind: KindUploadStart, Repo: "a", Action: ActionPush, MountFrom: "b", MountFromGiven: true}},
		// from= without mount= means nothing
		{method: "POST", target: "/v2/a/blobs/uploads/?from=b",
			want: Route{Kind: KindUploadStart, Repo: "a", Action: ActionPush}},
	} {
		r := httptest.NewRequest(c.method, c.target, nil)
		for _, a := range c.accept {
			r.Header.Add("Accept", a)
		}
		rt, err := ParseRequest(r)
		if err != nil {
			t.Errorf("%s %s: %v", c.method, c.target, err)
			continue
		}
		if (rt.BadDigest != nil) != c.badDigest {
			t.Errorf("%s %s: BadDigest = %v", c.method, c.target, rt.BadDigest)
		}
		rt.BadDigest = nil
		if !reflect.DeepEqual(*rt, c.want) {
			t.Errorf("%s %s:\n got %+v\nwant %+v", c.method, c.target, *rt, c.want)
		}
	}
}

// TestAccepts: media-type matching against the parsed Accept list.
func TestAccepts(t *testing.T) {
	const oci = "application/vnd.oci.image.manifest.v1+json"
	for _, c := range []struct {
		accept []string
		mt     string
		want   bool
	}{
		{nil, oci, true},                         // no Accept: anything
		{[]string{";;;"}, oci, true},             // nothing parseable: anything
		{[]string{oci}, oci, true},               // listed
		{[]string{oci}, oci + "; x=1", true},     // parameters of the offered type do not matter
		{[]string{"text/plain"}, oci, false},     // not listed
		{[]string{"text/plain, */*"}, oci, true}, // wildcard
		{[]string{"application/*"}, oci, true},
		{[]string{"application/json"}, oci, true}, // taken as "any JSON", as before
	} {
		rt := &Route{Accept: ParseAccept(c.accept)}
		if got := rt.Accepts(c.mt); got != c.want {
			t.Errorf("Accept %q, %s: %v, want %v", c.accept, c.mt, got, c.want)
		}
	}
}

// TestForAccess: a mount source survives only with MayMount; the copy
// keeps MountFromGiven (so the registry searches no other repository)
// and the caller's route is never changed.
func TestForAccess(t *testing.T) {
	for _, c := range []struct {
		name      string
		from      string
		given     bool
		access    Access
		wantFrom  string
		wantMount bool
	}{
		{"may mount", "src/a", true, Access{MayMount: true}, "src/a", true},
		{"may not mount", "src/a", true, Access{}, "", true},
		{"full access", "src/a", true, FullAccess(), "src/a", true},
		{"invalid from", "", true, Access{}, "", true},
		{"no from, full access", "", false, FullAccess(), "", true},
		{"no from, a guarded caller", "", false, Access{}, "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			rt := &Route{Kind: KindUploadStart, Repo: "dst/b", MountDigest: dA, MountFrom: c.from, MountFromGiven: c.given}
			got := rt.ForAccess(c.access)
			if got.MountFrom != c.wantFrom || got.MountFromGiven != rt.MountFromGiven || got.Repo != rt.Repo || (got.MountDigest != "") != c.wantMount {
				t.Fatalf("ForAccess gives %+v", got)
			}
			if rt.MountFrom != c.from || rt.MountDigest != dA {
				t.Fatalf("the caller's route changed: %+v", rt)
			}
		})
	}
}

// standaloneBackend records what ServeStandalone hands it.
type standaloneBackend struct {
	rt *Route
	a  Access
}

func (b *standaloneBackend) ServeRoute(_ http.ResponseWriter, _ *http.Request, rt *Route, a Access) {
	b.rt, b.a = rt, a
}

type resolvingBackend struct{ standaloneBackend }

func (b *resolvingBackend) ResolveRoute(rt *Route, q func(string) string) *Error {
	if ns := q("ns"); ns != "" {
		rt.ClientRepo, rt.Repo, rt.Namespace = rt.Repo, ns+"/"+rt.Repo, ns
	}
	return nil
}

// TestServeStandalone: a backend used on its own gets the parsed (and, for
// a RouteResolver, resolved) route with FullAccess; a request that does
// not parse gets its error and never reaches the backend.
func TestServeStandalone(t *testing.T) {
	b := &resolvingBackend{}
	rec := httptest.NewRecorder()
	ServeStandalone(b, rec, httptest.NewRequest("GET", "/v2/library/alpine/manifests/3?ns=docker.io", nil))
	if b.rt == nil || b.rt.Repo != "docker.io/library/alpine" || b.rt.Tag != "3" || !b.a.MayMount || b.a.Catalog != nil {
		t.Fatalf("route %+v access %+v", b.rt, b.a)
	}
	if rec.Header().Get("Docker-Distribution-Api-Version") == "" {
		t.Error("no API version header")
	}
	p := &standaloneBackend{}
	rec = httptest.NewRecorder()
	ServeStandalone(p, rec, httptest.NewRequest("GET", "/v2/Bad/manifests/3", nil))
	if p.rt != nil || rec.Code != http.StatusBadRequest {
		t.Fatalf("a bad name reached the backend (%+v) or answered %d", p.rt, rec.Code)
	}
}
