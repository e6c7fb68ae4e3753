package cache

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/internal/conf"
)

// tokenServer puts the token dance (or plain Basic) in front of the
// upstream registry, as Docker Hub, ghcr.io and quay.io do.
type tokenServer struct {
	up         *upstreamEnv
	user, pass string // required at the token endpoint (or for Basic); "" = anonymous tokens
	basic      bool   // challenge with Basic instead of Bearer

	mu       sync.Mutex
	tokens   map[string]string // token -> scope
	requests atomic.Int32      // token endpoint hits
}

func (ts *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" {
		ts.issue(w, r)
		return
	}
	if ts.basic {
		if u, p, ok := r.BasicAuth(); !ok || u != ts.user || p != ts.pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="test registry"`)
			backend.WriteError(w, r, backend.Errorf(http.StatusUnauthorized, backend.CodeUnauthorized, "login"))
			return
		}
		ts.up.direct(w, r)
		return
	}
	repo := ""
	if rt, _ := backend.ParseRoute(r.Method, r.URL.Path, nil); rt != nil {
		repo = rt.Repo
	}
	want := "repository:" + repo + ":pull"
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	ts.mu.Lock()
	scope, known := ts.tokens[tok]
	ts.mu.Unlock()
	if !ok || !known || (repo != "" && scope != want) {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="test.registry",scope="%s"`, ts.up.srv.URL, want))
		backend.WriteError(w, r, backend.Errorf(http.StatusUnauthorized, backend.CodeUnauthorized, "token needed"))
		return
	}
	ts.up.direct(w, r)
}

func (ts *tokenServer) issue(w http.ResponseWriter, r *http.Request) {
	ts.requests.Add(1)
	if ts.user != "" {
		if u, p, ok := r.BasicAuth(); !ok || u != ts.user || p != ts.pass {
			http.Error(w, `{"details":"incorrect username or password"}`, http.StatusUnauthorized)
			return
		}
	}
	q := r.URL.Query()
	if q.Get("service") != "test.registry" || !strings.HasPrefix(q.Get("scope"), "repository:") {
		http.Error(w, "bad token request "+r.URL.RawQuery, http.StatusBadRequest)
		return
	}
	tok := fmt.Sprintf("tok-%d", ts.requests.Load())
	ts.mu.Lock()
	ts.tokens[tok] = q.Get("scope")
	ts.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_in": 300, "issued_at": "2026-01-01T00:00:00Z"})
}

func TestUpstreamAuth(t *testing.T) {
	for _, c := range []struct {
		name       string
		ts         *tokenServer
		user, pass string
		ok         bool
		msg        string
	}{
		{"anonymous token", &tokenServer{}, "", "", true, ""},
		{"token with credentials", &tokenServer{user: "bob", pass: "s3cret"}, "bob", "s3cret", true, ""},
		{"token, wrong password", &tokenServer{user: "bob", pass: "s3cret"}, "bob", "nope", false, "check username/password"},
		{"token, no credentials", &tokenServer{user: "bob", pass: "s3cret"}, "", "", false, "token service answered 401"},
		{"basic", &tokenServer{user: "bob", pass: "s3cret", basic: true}, "bob", "s3cret", true, ""},
		{"basic, no credentials", &tokenServer{user: "bob", pass: "s3cret", basic: true}, "", "", false, "none are configured"},
		{"basic, wrong password", &tokenServer{user: "bob", pass: "s3cret", basic: true}, "bob", "nope", false, "refused the configured credentials"},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := startUpstream(t)
			im := up.pushImage("team/app", "v1", backend.MediaTypeDockerManifest, randBytes(t, 1000), randBytes(t, 2000))
			up.pushImage("team/other", "v1", backend.MediaTypeDockerManifest, randBytes(t, 1000))
			ts := c.ts
			ts.up, ts.tokens = up, map[string]string{}
			up.wrap = ts
			ce := newCache(t, Options{Upstream: up.srv.URL, Username: c.user, Password: c.pass})
			r := ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr)
			if !c.ok {
				expect(t, r, http.StatusBadGateway, backend.CodeUnknown)
				if !strings.Contains(string(r.body), c.msg) {
					t.Fatalf("message %s, want %q", r.body, c.msg)
				}
				return
			}
			expect(t, r, http.StatusOK, "")
			if !bytes.Equal(r.body, im.manifest) {
				t.Fatal("manifest differs")
			}
			for d, want := range im.data {
				r := ce.do("GET", "/v2/team/app/blobs/"+string(d))
				expect(t, r, http.StatusOK, "")
				if !bytes.Equal(r.body, want) {
					t.Fatal("blob differs")
				}
			}
			expect(t, ce.do("GET", "/v2/team/app/tags/list"), http.StatusOK, "")
			if !c.ts.basic && ts.requests.Load() != 1 {
				t.Fatalf("%d token requests for one repository, want 1 (tokens are cached per scope)", ts.requests.Load())
			}
			expect(t, ce.do("GET", "/v2/team/other/manifests/v1", acceptAllHdr), http.StatusOK, "")
			if !c.ts.basic && ts.requests.Load() != 2 {
				t.Fatalf("%d token requests for two repositories, want 2", ts.requests.Load())
			}
		})
	}
}

// Docker Hub's official images live under library/: "alpine" is asked
// upstream as "library/alpine", and docker.io is reached as
// registry-1.docker.io.
func TestDockerHubLibraryPrefix(t *testing.T) {
	up := startUpstreamWith(t, true)
	im := up.pushImage("library/alpine", "3", backend.MediaTypeDockerManifest, randBytes(t, 1000))
	other := up.pushImage("team/app", "v1", backend.MediaTypeDockerManifest, randBytes(t, 1000))
	for _, tag := range []string{"3.1", "3.2", "3.3"} {
		up.pushManifest("library/alpine", tag, backend.MediaTypeDockerManifest, im.manifest)
	}
	pool := x509.NewCertPool()
	pool.AddCert(up.srv.Certificate())
	var hosts []string
	var mu sync.Mutex
	tr := &http.Transport{
		// every name resolves to the test upstream
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			hosts = append(hosts, addr)
			mu.Unlock()
			return (&net.Dialer{}).DialContext(ctx, network, up.srv.Listener.Addr().String())
		},
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "example.com"},
	}
	for _, upstream := range []string{"https://docker.io", "https://index.docker.io", "https://registry-1.docker.io"} {
		t.Run(upstream, func(t *testing.T) {
			up.resetCounts()
			ce := newCache(t, Options{Upstream: upstream, Transport: tr})
			r := ce.do("GET", "/v2/alpine/manifests/3", acceptAllHdr)
			expect(t, r, http.StatusOK, "")
			if !bytes.Equal(r.body, im.manifest) {
				t.Fatal("manifest differs")
			}
			r = ce.do("GET", "/v2/alpine/blobs/"+string(im.layers[0]))
			expect(t, r, http.StatusOK, "")
			expect(t, ce.do("GET", "/v2/library/alpine/manifests/3", acceptAllHdr), http.StatusOK, "")
			expect(t, ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr), http.StatusOK, "")
			if r := ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr); !bytes.Equal(r.body, other.manifest) {
				t.Fatal("two-component name was rewritten")
			}
			// tag list pagination links name the repository as the client does
			r = ce.do("GET", "/v2/alpine/tags/list?n=2")
			expect(t, r, http.StatusOK, "")
			if link := r.header.Get("Link"); !strings.HasPrefix(link, "</v2/alpine/tags/list?") {
				t.Fatalf("Link %q", link)
			}
			mu.Lock()
			for _, h := range hosts {
				if h != "registry-1.docker.io:443" {
					t.Errorf("dialled %s", h)
				}
			}
			hosts = nil
			mu.Unlock()
		})
	}
}

func TestParseChallenge(t *testing.T) {
	for _, c := range []struct {
		in     []string
		scheme string
		params map[string]string
	}{
		{[]string{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`},
			"bearer", map[string]string{"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/alpine:pull"}},
		{[]string{`Basic realm="Registry Realm"`}, "basic", map[string]string{"realm": "Registry Realm"}},
		{[]string{`Basic realm="x"`, `Bearer realm="https://ghcr.io/token", service=ghcr.io , scope="repository:a/b:pull"`},
			"bearer", map[string]string{"realm": "https://ghcr.io/token", "service": "ghcr.io", "scope": "repository:a/b:pull"}},
		{[]string{`bearer realm="a\"b"`}, "bearer", map[string]string{"realm": `a"b`}},
		{[]string{""}, "", nil},
		{[]string{`Bearer realm=`}, "bearer", map[string]string{"realm": ""}},
	} {
		ch := parseChallenge(c.in)
		if c.scheme == "" {
			if ch != nil {
				t.Errorf("%q: got %+v", c.in, ch)
			}
			continue
		}
		if ch == nil || ch.scheme != c.scheme {
			t.Errorf("%q: got %+v", c.in, ch)
			continue
		}
		for k, v := range c.params {
			if ch.params[k] != v {
				t.Errorf("%q: %s = %q, want %q", c.in, k, ch.params[k], v)
			}
		}
	}
}

// TestConfigValidate: the [site.cache] rules live in Config.Validate
// (New takes validated options); each bad section names the key.
func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		c   Config
		key string
		err string
	}{
		{Config{Upstream: "registry-1.docker.io"}, "upstream", "scheme"},
		{Config{Upstream: "ftp://x"}, "upstream", "scheme"},
		{Config{Upstream: "https://u:p@x"}, "upstream", "credentials"},
		{Config{Upstream: "https://x/some/repo"}, "upstream", "no path"},
		{Config{Upstream: "https://x?a=b"}, "upstream", "no query"},
		{Config{Upstream: "https://x", Password: "p"}, "password", "password without username"},
		{Config{Upstream: "https://x/"}, "", ""},
		{Config{Upstream: "http://127.0.0.1:5000/v2/"}, "", ""},
	} {
		ps := c.c.Validate(conf.Env{})
		if c.err == "" {
			if len(ps) != 0 {
				t.Errorf("%+v: %v", c.c, ps)
			}
			continue
		}
		if len(ps) != 1 || ps[0].Key != c.key || !strings.Contains(ps[0].Msg, c.err) {
			t.Errorf("%+v: problems %v, want one on %q with %q", c.c, ps, c.key, c.err)
		}
	}
}

// TestNewValidOptions: New opens a cache for options that Validate accepts.
func TestNewValidOptions(t *testing.T) {
	for _, up := range []string{"https://x/", "http://127.0.0.1:5000/v2/"} {
		ch, err := New(context.Background(), Options{Upstream: up, Root: t.TempDir()})
		if err != nil {
			t.Fatalf("%s: %v", up, err)
		}
		ch.Close()
	}
}

// FuzzParseChallenge: any WWW-Authenticate value parses without panic.
func FuzzParseChallenge(f *testing.F) {
	f.Add(`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`)
	f.Add(`Basic realm="x"`)
	f.Add(`Bearer realm="a\"b`)
	f.Add(`Bearer ,,=,"`)
	f.Fuzz(func(t *testing.T, v string) {
		if c := parseChallenge([]string{v}); c != nil && c.scheme == "" {
			t.Fatalf("empty scheme from %q", v)
		}
	})
}
