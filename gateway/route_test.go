package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/auth"
	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/policy"
)

// fakeBackend records what the gateway hands it. It is an http.Handler
// too, so that a gateway that served a request without a route (the way
// backends were reached before the request contract) fails the test.
type fakeBackend struct {
	t      *testing.T
	routes []*backend.Route
	access []backend.Access
	ns     string // as a RouteResolver: qualify every repository with ns/
}

func (f *fakeBackend) ServeRoute(w http.ResponseWriter, r *http.Request, rt *backend.Route, a backend.Access) {
	if rt == nil {
		f.t.Errorf("%s %s reached the backend with a nil route", r.Method, r.URL)
	}
	f.routes = append(f.routes, rt)
	f.access = append(f.access, a)
	w.WriteHeader(http.StatusOK)
}

func (f *fakeBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.t.Errorf("%s %s reached the backend without a route (ServeHTTP)", r.Method, r.URL)
	w.WriteHeader(http.StatusTeapot)
}

// resolver is fakeBackend as a backend.RouteResolver.
type resolver struct{ *fakeBackend }

func (f resolver) ResolveRoute(rt *backend.Route, _ func(string) string) *backend.Error {
	if rt.Repo != "" {
		rt.ClientRepo, rt.Repo = rt.Repo, f.ns+"/"+rt.Repo
	}
	return nil
}

// TestBackendOnlyWithRoute: every request the gateway lets through reaches
// the backend by ServeRoute with the route parsed from it (and resolved);
// a request that does not parse, the token path of a site without auth
// and paths outside /v2/ never reach it. Every /v2/ answer carries the
// API version header.
func TestBackendOnlyWithRoute(t *testing.T) {
	d := "sha256:" + strings.Repeat("ab", 32)
	for _, c := range []struct {
		method, path string
		status       int          // 0: the backend's 200
		kind         backend.Kind // when reached
		repo         string
	}{
		{"GET", "/v2/", 0, backend.KindPing, ""},
		{"GET", "/v2", 0, backend.KindPing, ""},
		{"GET", "/v2/_catalog", 0, backend.KindCatalog, ""},
		{"GET", "/v2/a/b/tags/list", 0, backend.KindTags, "a/b"},
		{"PUT", "/v2/a/b/manifests/v1", 0, backend.KindManifest, "a/b"},
		{"HEAD", "/v2/a/blobs/" + d, 0, backend.KindBlob, "a"},
		{"POST", "/v2/a/blobs/uploads/?mount=" + d + "&from=c/d", 0, backend.KindUploadStart, "a"},
		{"PATCH", "/v2/a/blobs/uploads/u-1", 0, backend.KindUpload, "a"},
		{"GET", "/v2/a/referrers/" + d, 0, backend.KindReferrers, "a"},
		{"GET", "/v2/a/blobs/sha256:nothex", 400, 0, ""},
		{"GET", "/v2/A/manifests/v1", 400, 0, ""},
		{"GET", "/v2/nothing", 404, 0, ""},
		{"GET", auth.TokenPath, 404, 0, ""}, // no [auth]: no token endpoint
		{"GET", "/", 404, 0, ""},            // no web side
		{"GET", "/v2x", 404, 0, ""},
	} {
		for _, ns := range []string{"", "docker.io"} {
			t.Run(c.method+" "+c.path+" "+ns, func(t *testing.T) {
				fb := &fakeBackend{t: t, ns: ns}
				s := &siteServer{g: &Gateway{}, host: "r.test", be: fb}
				if ns != "" {
					s.be, s.res = resolver{fb}, resolver{fb}
				}
				rec := httptest.NewRecorder()
				s.serve(rec, httptest.NewRequest(c.method, c.path, nil), &exchange{})
				want := c.status
				if want == 0 {
					want = http.StatusOK
				}
				if rec.Code != want {
					t.Fatalf("status %d, want %d: %s", rec.Code, want, rec.Body)
				}
				if apiPath(strings.SplitN(c.path, "?", 2)[0]) && rec.Header().Get("Docker-Distribution-Api-Version") == "" {
					t.Error("an API answer without the API version header")
				}
				if c.status != 0 {
					if len(fb.routes) != 0 {
						t.Fatalf("a refused request reached the backend: %+v", fb.routes[0])
					}
					return
				}
				if len(fb.routes) != 1 {
					t.Fatalf("backend reached %d times", len(fb.routes))
				}
				rt, repo := fb.routes[0], c.repo
				if ns != "" && repo != "" {
					repo = ns + "/" + repo
				}
				if rt.Kind != c.kind || rt.Repo != repo {
					t.Fatalf("route %s %q, want %s %q", rt.Kind, rt.Repo, c.kind, repo)
				}
				if c.kind == backend.KindUploadStart && (rt.MountFrom != "c/d" || !fb.access[0].MayMount) {
					t.Fatalf("without [auth] a mount may read its source: route %+v access %+v", rt, fb.access[0])
				}
				if fb.access[0].Catalog != nil {
					t.Fatal("without [auth] the catalog is not filtered")
				}
			})
		}
	}
}

// TestWebSide: paths outside /v2/ go to the site's web side (the UI or a
// proxy's upstream), never to the backend's API, and the user web
// reports reaches the access log.
func TestWebSide(t *testing.T) {
	for path, web := range map[string]bool{"/": true, "/r/a/b": true, "/login": true, "/v2x": true, "/v2/": false, "/v2": false, "/v2/a/tags/list": false} {
		fb := &fakeBackend{t: t}
		var webbed bool
		s := &siteServer{g: &Gateway{}, host: "r.test", be: fb, web: func(w http.ResponseWriter, r *http.Request) string {
			webbed = true
			w.WriteHeader(298)
			return "viewer"
		}}
		var buf bytes.Buffer
		log := zerolog.New(&buf)
		h := accessLog(&log, newMetrics(), "r.test")(s.serve)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if webbed != web || (len(fb.routes) == 1) == web {
			t.Errorf("%s: web side %v, backend %d times; want web %v", path, webbed, len(fb.routes), web)
		}
		if web != strings.Contains(buf.String(), `"user":"viewer"`) {
			t.Errorf("%s: log line %s", path, buf.String())
		}
	}
	// A proxy site without [auth] passes the token endpoint on to its
	// upstream (another wharf's /v2/token); other sites answer 404.
	for _, upstreamToken := range []bool{false, true} {
		fb := &fakeBackend{t: t}
		s := &siteServer{g: &Gateway{}, host: "r.test", be: fb, upstreamToken: upstreamToken, web: func(w http.ResponseWriter, r *http.Request) string {
			w.WriteHeader(298)
			return ""
		}}
		rec := httptest.NewRecorder()
		s.serve(rec, httptest.NewRequest("GET", auth.TokenPath+"?scope=repository:a:pull", nil), &exchange{})
		if want := map[bool]int{false: 404, true: 298}[upstreamToken]; rec.Code != want || len(fb.routes) != 0 {
			t.Errorf("token path with upstreamToken %v: %d (backend %d times), want %d", upstreamToken, rec.Code, len(fb.routes), want)
		}
	}
}

// TestDecisionHandedDown: with [auth], the backend gets auth's decision as
// explicit values (a mount reads only a source the caller may pull, the
// catalog filter of the policy), refused requests never reach it, and the
// access log names the user auth returned, refused or not.
func TestDecisionHandedDown(t *testing.T) {
	dir := t.TempDir()
	hp := filepath.Join(dir, "htpasswd")
	writeHtpasswd(t, hp, "alice", "bob")
	svc, err := auth.New(t.Context(), auth.Config{Htpasswd: hp, KeyFile: filepath.Join(dir, "token.key"), Watch: -1}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.New([]policy.Rule{
		{Repos: []string{"team/*"}, Users: []string{"alice"}, Allow: []string{"pull", "push"}},
		{Repos: []string{"public/*"}, Users: []string{"*"}, Allow: []string{"pull"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := "sha256:" + strings.Repeat("cd", 32)
	for _, c := range []struct {
		name, method, path, user string
		status                   int // 0: reached the backend
		mayMount                 bool
		catalog                  []string // what the filter keeps of team/x, public/y, other/z
	}{
		{"mount from a pullable source", "POST", "/v2/team/app/blobs/uploads/?mount=" + d + "&from=public/base", "alice", 0, true, nil},
		{"mount from a source the user may not pull", "POST", "/v2/team/app/blobs/uploads/?mount=" + d + "&from=other/secret", "alice", 0, false, nil},
		{"catalog filtered by the policy", "GET", "/v2/_catalog", "alice", 0, false, []string{"team/x", "public/y"}},
		{"catalog of another user", "GET", "/v2/_catalog", "bob", 0, false, []string{"public/y"}},
		{"push refused", "PUT", "/v2/team/app/manifests/v1", "bob", 403, false, nil},
		{"anonymous push challenged", "PUT", "/v2/team/app/manifests/v1", "", 401, false, nil},
		{"bad password", "GET", "/v2/", "mallory", 401, false, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			fb := &fakeBackend{t: t}
			s := &siteServer{g: &Gateway{}, host: "r.test", be: fb, guard: svc.Guard(auth.Site{Host: "r.test", Policy: pol})}
			var buf bytes.Buffer
			log := zerolog.New(&buf)
			h := accessLog(&log, newMetrics(), "r.test")(s.serve)
			req := httptest.NewRequest(c.method, "http://r.test"+c.path, nil)
			if c.user != "" {
				req.SetBasicAuth(c.user, "pw")
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			var line struct{ User string }
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatalf("log line %q: %v", buf.String(), err)
			}
			wantUser := c.user
			if c.user == "mallory" {
				wantUser = ""
			}
			if line.User != wantUser {
				t.Errorf("access log names %q, want %q", line.User, wantUser)
			}
			if c.status != 0 {
				if rec.Code != c.status || len(fb.routes) != 0 {
					t.Fatalf("status %d, backend reached %d times; want %d and never", rec.Code, len(fb.routes), c.status)
				}
				return
			}
			if rec.Code != 200 || len(fb.routes) != 1 {
				t.Fatalf("status %d, backend reached %d times: %s", rec.Code, len(fb.routes), rec.Body)
			}
			a := fb.access[0]
			if a.MayMount != c.mayMount {
				t.Errorf("MayMount %v, want %v", a.MayMount, c.mayMount)
			}
			if (a.Catalog != nil) != (c.catalog != nil) {
				t.Fatalf("catalog filter %v, want one: %v", a.Catalog != nil, c.catalog != nil)
			}
			if a.Catalog != nil {
				var kept []string
				for _, r := range []string{"team/x", "public/y", "other/z"} {
					if a.Catalog(r) {
						kept = append(kept, r)
					}
				}
				if strings.Join(kept, " ") != strings.Join(c.catalog, " ") {
					t.Errorf("catalog keeps %v, want %v", kept, c.catalog)
				}
			}
		})
	}
}
