package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/policy"
)

const testHost = "r.test"

// The policy of most handler tests.
var testRules = []policy.Rule{
	{Repos: []string{"team-a/*"}, Users: []string{"alice", "@ci"}, Allow: []string{"pull", "push"}, Line: 1},
	{Repos: []string{"public/*"}, Users: []string{"anonymous"}, Allow: []string{"pull"}, Line: 2},
	{Repos: []string{"*"}, Users: []string{"admin"}, Allow: []string{"pull", "push", "delete"}, Line: 3},
}

var testPasswords = map[string]string{"alice": "apw", "bob": "bpw", "ci-bot": "cpw", "admin": "xpw"}

func writeHtpasswd(t testing.TB, path string, pws map[string]string) {
	t.Helper()
	var b strings.Builder
	for u, pw := range pws {
		fmt.Fprintf(&b, "%s:%s\n", u, hash(t, pw, "$2y$"))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

type fixture struct {
	s    *Service
	h    http.Handler // what srv serves
	srv  *httptest.Server
	logs *bytes.Buffer
}

// newFixture starts an httptest server: the site's Guard asked as the
// gateway asks it (asGateway) -> a stub backend that reports what it was
// handed.
func newFixture(t *testing.T, site Site, cfg Config) *fixture {
	t.Helper()
	if cfg.Htpasswd == "" {
		cfg.Htpasswd = filepath.Join(t.TempDir(), "htpasswd")
		writeHtpasswd(t, cfg.Htpasswd, testPasswords)
	}
	if cfg.Watch == 0 {
		cfg.Watch = -1
	}
	logs := &bytes.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := New(ctx, cfg, zerolog.New(&syncWriter{w: logs}))
	if err != nil {
		t.Fatal(err)
	}
	if site.Host == "" {
		site.Host = testHost
	}
	if site.Policy == nil {
		p, err := policy.New(testRules, map[string][]string{"ci": {"ci-bot"}})
		if err != nil {
			t.Fatal(err)
		}
		site.Policy = p
	}
	h := asGateway(s.Guard(site), stubBackend)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &fixture{s: s, h: h, srv: srv, logs: logs}
}

// syncWriter lets the race detector see log writes as ordered.
type syncWriter struct {
	mu chan struct{}
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	if s.mu == nil {
		s.mu = make(chan struct{}, 1)
	}
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.w.Write(p)
}

const manifest = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`

// asGateway serves g's site the way the gateway does: TokenPath through
// ServeToken; other /v2/ requests parsed once, decided by g and, when let
// through, handed to next with the route, the decision's access and the
// user; paths outside /v2/ go to next without a route.
func asGateway(g *Guard, next func(w http.ResponseWriter, r *http.Request, rt *backend.Route, a backend.Access, user string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch {
		case p == TokenPath:
			g.ServeToken(w, r)
			return
		case p != "/v2" && !strings.HasPrefix(p, "/v2/"):
			next(w, r, nil, backend.Access{}, "")
			return
		}
		rt, perr := backend.ParseRequest(r)
		if perr != nil {
			backend.WriteError(w, r, perr)
			return
		}
		d, refused := g.Decide(r, rt)
		if refused != nil {
			backend.WriteError(w, r, refused)
			return
		}
		next(w, r, rt, d.Access(), d.User)
	})
}

// stubBackend answers like a tiny registry and reports in headers what it
// was handed (route, user, whether the mount may read its source; the
// catalog filter applied to a fixed list).
func stubBackend(w http.ResponseWriter, r *http.Request, rt *backend.Route, a backend.Access, user string) {
	if rt == nil {
		w.Header().Set("X-Stub", "no-route")
		w.WriteHeader(http.StatusOK)
		return
	}
	rt = rt.ForAccess(a)
	w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
	w.Header().Set("X-Kind", rt.Kind.String())
	w.Header().Set("X-Repo", rt.Repo)
	w.Header().Set("X-Mount-From", rt.MountFrom)
	w.Header().Set("X-User", user)
	switch rt.Kind {
	case backend.KindCatalog:
		var list []string
		f := a.Catalog
		for _, repo := range []string{"public/y", "team-a/app", "team-b/x"} {
			if f == nil || f(repo) {
				list = append(list, repo)
			}
		}
		_ = json.NewEncoder(w).Encode(map[string][]string{"repositories": list})
	case backend.KindManifest:
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Docker-Content-Digest", digestOf(manifest))
		w.Header().Set("Content-Length", fmt.Sprint(len(manifest)))
		if r.Method != http.MethodHead {
			_, _ = io.WriteString(w, manifest)
		}
	default:
		w.WriteHeader(http.StatusOK)
	}
}

func digestOf(s string) string {
	d, _ := backend.ParseDigest("sha256:" + sha256hex(s))
	return d.String()
}

func basic(user, pw string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw))
}

func (f *fixture) do(t *testing.T, method, path, authz string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// token asks the token endpoint; user "" = anonymous.
func (f *fixture) token(t *testing.T, user, pw string, scopes ...string) string {
	t.Helper()
	q := url.Values{"service": {testHost}, "scope": scopes}
	authz := ""
	if user != "" {
		authz = basic(user, pw)
	}
	resp := f.do(t, "GET", TokenPath+"?"+q.Encode(), authz)
	if resp.StatusCode != 200 {
		t.Fatalf("token endpoint: %s", resp.Status)
	}
	var tr tokenResponse
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		t.Fatal(err)
	}
	if tr.Token == "" || tr.Token != tr.AccessToken || tr.ExpiresIn != 300 || tr.IssuedAt == "" {
		t.Fatalf("token response %+v", tr)
	}
	return "Bearer " + tr.Token
}

func errCode(t *testing.T, resp *http.Response) string {
	t.Helper()
	var body struct {
		Errors []backend.Error `json:"errors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || len(body.Errors) == 0 {
		return ""
	}
	return body.Errors[0].Code
}

func TestHandler(t *testing.T) {
	f := newFixture(t, Site{}, Config{})
	other := newSigner("wharf", []byte("another key, another wharf......"))
	foreign, _ := other.sign(&Claims{Issuer: "wharf", Subject: "alice", Audience: testHost, Expiry: time.Now().Add(time.Hour).Unix(),
		Access: []Access{{"repository", "team-a/app", []string{"pull"}}}})
	otherHost, _ := f.s.sig.sign(&Claims{Issuer: "wharf", Subject: "alice", Audience: "mirror.test", Expiry: time.Now().Add(time.Hour).Unix(),
		Access: []Access{{"repository", "team-a/app", []string{"pull"}}}})
	expired, _ := f.s.sig.sign(&Claims{Issuer: "wharf", Subject: "alice", Audience: testHost, Expiry: time.Now().Add(-time.Hour).Unix(),
		Access: []Access{{"repository", "team-a/app", []string{"pull"}}}})
	alicePull := f.token(t, "alice", "apw", "repository:team-a/app:pull")
	alicePush := f.token(t, "alice", "apw", "repository:team-a/app:pull,push")
	bobPush := f.token(t, "bob", "bpw", "repository:team-a/app:pull,push")
	anonPublic := f.token(t, "", "", "repository:public/x:pull,push")
	adminAll := f.token(t, "admin", "xpw", "repository:team-b/x:*")
	const m = "/v2/team-a/app/manifests/latest"
	const blob = "/blobs/sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

	tests := []struct {
		name, method, path, authz string
		status                    int
		code                      string // error code of the body
		challenge                 string // substring of WWW-Authenticate
		user                      string // X-User the backend saw
	}{
		{"ping without credentials asks for a token", "GET", "/v2/", "", 401, "UNAUTHORIZED", `Bearer realm="` + f.srv.URL + `/v2/token",service="r.test"`, ""},
		{"ping without slash", "GET", "/v2", "", 401, "UNAUTHORIZED", "Bearer", ""},
		{"ping with Basic", "GET", "/v2/", basic("alice", "apw"), 200, "", "", "alice"},
		{"ping with wrong password", "GET", "/v2/", basic("alice", "nope"), 401, "UNAUTHORIZED", "Bearer", ""},
		{"ping with unknown user", "GET", "/v2/", basic("mallory", "apw"), 401, "UNAUTHORIZED", "Bearer", ""},
		{"ping with a token", "GET", "/v2/", alicePull, 200, "", "", "alice"},
		{"ping with an anonymous token", "GET", "/v2/", anonPublic, 200, "", "", ""},
		{"HEAD ping", "HEAD", "/v2/", "", 401, "", "Bearer", ""},

		{"bad base64", "GET", "/v2/", "Basic !!!!", 401, "UNAUTHORIZED", "", ""},
		{"no colon", "GET", "/v2/", "Basic " + base64.StdEncoding.EncodeToString([]byte("alice")), 401, "UNAUTHORIZED", "", ""},
		{"empty user", "GET", "/v2/", basic("", "apw"), 401, "UNAUTHORIZED", "", ""},
		{"empty Basic", "GET", "/v2/", "Basic", 401, "UNAUTHORIZED", "", ""},
		{"huge user name", "GET", "/v2/", basic(strings.Repeat("u", 300), "x"), 401, "UNAUTHORIZED", "", ""},
		{"huge header", "GET", "/v2/", "Basic " + strings.Repeat("QUFB", 8000), 401, "UNAUTHORIZED", "invalid_request", ""},
		{"unknown scheme", "GET", "/v2/", "Digest username=alice", 401, "UNAUTHORIZED", "invalid_request", ""},
		{"bearer garbage", "GET", m, "Bearer abc.def.ghi", 401, "UNAUTHORIZED", `error="invalid_token"`, ""},
		{"bearer truncated", "GET", m, alicePull[:len(alicePull)-10], 401, "UNAUTHORIZED", "invalid_token", ""},
		{"bearer foreign-signed", "GET", m, "Bearer " + foreign, 401, "UNAUTHORIZED", "invalid_token", ""},
		{"bearer for another host", "GET", m, "Bearer " + otherHost, 401, "UNAUTHORIZED", "invalid_token", ""},
		{"bearer expired", "GET", m, "Bearer " + expired, 401, "UNAUTHORIZED", "invalid_token", ""},
		{"bearer empty", "GET", m, "Bearer ", 401, "UNAUTHORIZED", "invalid_token", ""},

		{"anonymous pull of a public repo", "GET", "/v2/public/x/manifests/latest", "", 200, "", "", ""},
		{"anonymous pull of a private repo", "GET", m, "", 401, "UNAUTHORIZED", `scope="repository:team-a/app:pull"`, ""},
		{"anonymous push", "PUT", "/v2/public/x/manifests/latest", "", 401, "UNAUTHORIZED", `scope="repository:public/x:pull,push"`, ""},
		{"Basic pull", "GET", m, basic("alice", "apw"), 200, "", "", "alice"},
		{"Basic push", "PUT", m, basic("alice", "apw"), 200, "", "", "alice"},
		{"group member push", "POST", "/v2/team-a/app/blobs/uploads/", basic("ci-bot", "cpw"), 200, "", "", "ci-bot"},
		{"Basic delete denied", "DELETE", m, basic("alice", "apw"), 403, "DENIED", "", ""},
		{"Basic other team denied", "GET", "/v2/team-b/x/manifests/latest", basic("alice", "apw"), 403, "DENIED", "", ""},
		{"Basic user without rules denied", "GET", m, basic("bob", "bpw"), 403, "DENIED", "", ""},
		{"anonymous rights are a floor", "GET", "/v2/public/x/manifests/latest", basic("bob", "bpw"), 200, "", "", "bob"},
		{"admin delete", "DELETE", "/v2/team-b/x/manifests/latest", basic("admin", "xpw"), 200, "", "", "admin"},

		{"token pull", "GET", m, alicePull, 200, "", "", "alice"},
		{"token HEAD blob", "HEAD", "/v2/team-a/app" + blob, alicePull, 200, "", "", "alice"},
		{"token push needs a wider token", "PUT", m, alicePull, 401, "UNAUTHORIZED", `scope="repository:team-a/app:pull,push",error="insufficient_scope"`, ""},
		{"token push", "PUT", m, alicePush, 200, "", "", "alice"},
		{"token for another repo", "GET", "/v2/team-a/other/manifests/latest", alicePull, 401, "UNAUTHORIZED", "insufficient_scope", ""},
		{"token of a denied user", "GET", m, bobPush, 403, "DENIED", "", ""},
		{"token of a denied user, push", "PUT", m, bobPush, 403, "DENIED", "", ""},
		{"token of a denied user, HEAD blob", "HEAD", "/v2/team-a/app" + blob, bobPush, 404, "", "", ""},
		{"token of a denied user, GET blob", "GET", "/v2/team-a/app" + blob, bobPush, 403, "DENIED", "", ""},
		{"Basic denied user, HEAD blob", "HEAD", "/v2/team-a/app" + blob, basic("bob", "bpw"), 404, "", "", ""},
		{"anonymous HEAD blob", "HEAD", "/v2/team-a/app" + blob, "", 401, "", "Bearer", ""},
		{"anonymous token pull", "GET", "/v2/public/x/manifests/latest", anonPublic, 200, "", "", ""},
		{"anonymous token push", "PUT", "/v2/public/x/manifests/latest", anonPublic, 401, "UNAUTHORIZED", "insufficient_scope", ""},
		{"star scope", "DELETE", "/v2/team-b/x/manifests/latest", adminAll, 200, "", "", "admin"},

		{"catalog anonymous", "GET", "/v2/_catalog", "", 401, "UNAUTHORIZED", `scope="registry:catalog:*"`, ""},
		{"bad name", "GET", "/v2/Team/manifests/latest", basic("alice", "apw"), 400, "NAME_INVALID", "", ""},
		{"not an API path", "GET", "/v2/x", "", 404, "UNSUPPORTED", "", ""},
		{"other paths pass", "GET", "/.well-known/acme-challenge/abc", "", 200, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := f.do(t, tt.method, tt.path, tt.authz)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (WWW-Authenticate %q)", resp.StatusCode, tt.status, resp.Header.Get("WWW-Authenticate"))
			}
			if strings.HasPrefix(tt.path, "/v2") && resp.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
				t.Error("no Docker-Distribution-Api-Version header")
			}
			if tt.challenge != "" && !strings.Contains(resp.Header.Get("WWW-Authenticate"), tt.challenge) {
				t.Errorf("WWW-Authenticate %q lacks %q", resp.Header.Get("WWW-Authenticate"), tt.challenge)
			}
			if resp.StatusCode == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without a challenge")
			}
			if tt.method != "HEAD" && tt.code != "" {
				if got := errCode(t, resp); got != tt.code {
					t.Errorf("error code %q, want %q", got, tt.code)
				}
			}
			if resp.StatusCode == 200 && strings.HasPrefix(tt.path, "/v2") && resp.Header.Get("X-User") != tt.user {
				t.Errorf("backend saw user %q, want %q", resp.Header.Get("X-User"), tt.user)
			}
		})
	}
	// Nothing secret reaches the log.
	logs := f.logs.String()
	for _, secret := range []string{"apw", "bpw", strings.TrimPrefix(alicePull, "Bearer "), base64.StdEncoding.EncodeToString([]byte("alice:apw"))} {
		if strings.Contains(logs, secret) {
			t.Errorf("log contains a secret %q", secret[:min(len(secret), 12)])
		}
	}
	if !strings.Contains(logs, "login failed") || !strings.Contains(logs, `"addr":"127.0.0.1"`) {
		t.Errorf("failed logins are not logged with the address:\n%s", logs)
	}
	if !strings.Contains(logs, "plain HTTP") {
		t.Error("no warning about auth over plain HTTP")
	}
}

func TestCatalogFilter(t *testing.T) {
	f := newFixture(t, Site{}, Config{})
	tests := []struct {
		name, authz string
		want        []string
	}{
		{"alice", basic("alice", "apw"), []string{"public/y", "team-a/app"}},
		{"bob", basic("bob", "bpw"), []string{"public/y"}},
		{"admin", basic("admin", "xpw"), []string{"public/y", "team-a/app", "team-b/x"}},
		{"anonymous token", f.token(t, "", "", "registry:catalog:*"), []string{"public/y"}},
		{"alice token", f.token(t, "alice", "apw", "registry:catalog:*"), []string{"public/y", "team-a/app"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := f.do(t, "GET", "/v2/_catalog", tt.authz)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			var body struct{ Repositories []string }
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(body.Repositories, tt.want) {
				t.Fatalf("catalog %v, want %v", body.Repositories, tt.want)
			}
		})
	}
}

func TestMountFrom(t *testing.T) {
	f := newFixture(t, Site{}, Config{})
	const d = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
	tests := []struct {
		name, from, authz, want string
	}{
		{"may pull the source", "team-a/base", basic("alice", "apw"), "team-a/base"},
		{"public source", "public/base", basic("alice", "apw"), "public/base"},
		{"may not pull the source", "team-b/secret", basic("alice", "apw"), ""},
		{"token without the source", "team-b/secret", f.token(t, "alice", "apw", "repository:team-a/app:pull,push", "repository:team-b/secret:pull"), ""},
		{"token with the source", "team-a/base", f.token(t, "alice", "apw", "repository:team-a/app:pull,push", "repository:team-a/base:pull"), "team-a/base"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := f.do(t, "POST", "/v2/team-a/app/blobs/uploads/?mount="+d+"&from="+tt.from, tt.authz)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got := resp.Header.Get("X-Mount-From"); got != tt.want {
				t.Fatalf("backend saw MountFrom %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTokenEndpoint(t *testing.T) {
	f := newFixture(t, Site{}, Config{})
	decode := func(t *testing.T, resp *http.Response) *Claims {
		t.Helper()
		var tr tokenResponse
		if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
			t.Fatal(err)
		}
		c, err := f.s.sig.verify(tr.Token, testHost, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name   string
		method string
		query  string
		form   url.Values
		authz  string
		status int
		sub    string
		access []Access
	}{
		{name: "login without scope", method: "GET", query: "service=r.test&account=alice&client_id=docker&offline_token=true", authz: basic("alice", "apw"),
			status: 200, sub: "alice", access: []Access{}},
		{name: "wrong password", method: "GET", query: "service=r.test", authz: basic("alice", "x"), status: 401},
		{name: "bad header", method: "GET", query: "service=r.test", authz: "Basic %%%", status: 401},
		{name: "bearer at the token endpoint", method: "GET", authz: "Bearer x", status: 401},
		{name: "anonymous", method: "GET", query: "service=r.test&scope=repository:public/x:pull,push&scope=repository:team-a/app:pull",
			status: 200, access: []Access{{"repository", "public/x", []string{"pull"}}, {"repository", "team-a/app", []string{}}}},
		{name: "several scopes", method: "GET", query: "scope=repository:team-a/app:push,pull&scope=repository:team-b/x:pull&scope=registry:catalog:*&scope=bogus", authz: basic("ci-bot", "cpw"),
			status: 200, sub: "ci-bot", access: []Access{{"repository", "team-a/app", []string{"pull", "push"}}, {"repository", "team-b/x", []string{}}, {"registry", "catalog", []string{"*"}}}},
		{name: "bad repository name in scope", method: "GET", query: "scope=repository:UPPER:pull", authz: basic("admin", "xpw"), status: 200, sub: "admin", access: []Access{}},
		{name: "star", method: "GET", query: "scope=repository:x:*", authz: basic("admin", "xpw"), status: 200, sub: "admin",
			access: []Access{{"repository", "x", []string{"pull", "push", "delete"}}}},
		{name: "other service", method: "GET", query: "service=mirror.test", status: 400},
		{name: "oauth password grant", method: "POST", form: url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"apw"},
			"service": {"r.test"}, "scope": {"repository:team-a/app:pull"}, "client_id": {"containerd"}},
			status: 200, sub: "alice", access: []Access{{"repository", "team-a/app", []string{"pull"}}}},
		{name: "oauth wrong password", method: "POST", form: url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"x"}}, status: 401},
		{name: "oauth no user", method: "POST", form: url.Values{"grant_type": {"password"}}, status: 400},
		{name: "oauth refresh", method: "POST", form: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}}, status: 400},
		{name: "oauth unknown grant", method: "POST", form: url.Values{"grant_type": {"magic"}}, status: 400},
		{name: "PUT", method: "PUT", status: 405},
		{name: "too many scopes", method: "GET", query: strings.Repeat("scope=repository:a:pull&", 101), status: 400},
		{name: "oauth huge user", method: "POST", form: url.Values{"grant_type": {"password"}, "username": {strings.Repeat("u", 300)}, "password": {"x"}}, status: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.form != nil {
				body = strings.NewReader(tt.form.Encode())
			}
			req, _ := http.NewRequest(tt.method, f.srv.URL+TokenPath+"?"+tt.query, body)
			if tt.form != nil {
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			if tt.authz != "" {
				req.Header.Set("Authorization", tt.authz)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status == 401 && tt.method == "GET" && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("401 from the token endpoint without a Basic challenge")
			}
			if tt.status != 200 {
				return
			}
			c := decode(t, resp)
			if c.Subject != tt.sub || !slices.EqualFunc(c.Access, tt.access, func(a, b Access) bool {
				return a.Type == b.Type && a.Name == b.Name && slices.Equal(a.Actions, b.Actions)
			}) {
				t.Fatalf("claims sub=%q access=%+v, want sub=%q access=%+v", c.Subject, c.Access, tt.sub, tt.access)
			}
			if c.Expiry-c.IssuedAt != 300 || c.Audience != testHost || c.ID == "" {
				t.Fatalf("claims %+v", c)
			}
		})
	}
}

func TestBasicSchemeSite(t *testing.T) {
	f := newFixture(t, Site{Scheme: SchemeBasic}, Config{Realm: "my registry"})
	resp := f.do(t, "GET", "/v2/", "")
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Basic realm="my registry", charset="UTF-8"` {
		t.Fatalf("ping: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if resp := f.do(t, "GET", "/v2/public/x/manifests/latest", ""); resp.StatusCode != 200 {
		t.Fatalf("anonymous public pull: %d", resp.StatusCode)
	}
	if resp := f.do(t, "PUT", "/v2/team-a/app/manifests/latest", ""); resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("anonymous push: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	before := f.s.BcryptChecks()
	for i := 0; i < 40; i++ {
		if resp := f.do(t, "HEAD", "/v2/team-a/app/manifests/latest", basic("alice", "apw")); resp.StatusCode != 200 {
			t.Fatalf("alice: %d", resp.StatusCode)
		}
	}
	if n := f.s.BcryptChecks() - before; n != 1 {
		t.Fatalf("40 Basic requests cost %d bcrypt checks, want 1", n)
	}
}

func TestAnonymousPullSite(t *testing.T) {
	p, _ := policy.New(nil, nil)
	f := newFixture(t, Site{Anonymous: "pull", Policy: p}, Config{})
	tests := []struct {
		name, method, path, authz string
		status                    int
	}{
		{"anonymous pull anywhere", "GET", "/v2/team-b/x/manifests/latest", "", 200},
		{"anonymous catalog", "GET", "/v2/_catalog", "", 200},
		{"ping still challenges", "GET", "/v2/", "", 401},
		{"anonymous push", "PUT", "/v2/team-b/x/manifests/latest", "", 401},
		{"logged-in push (no rules)", "PUT", "/v2/team-b/x/manifests/latest", basic("bob", "bpw"), 200},
		{"logged-in delete (no rules)", "DELETE", "/v2/team-b/x/manifests/latest", basic("bob", "bpw"), 200},
		{"anonymous token pull", "GET", "/v2/team-b/x/manifests/latest", f.token(t, "", "", "repository:team-b/x:pull"), 200},
		{"anonymous token push", "PUT", "/v2/team-b/x/manifests/latest", f.token(t, "", "", "repository:team-b/x:pull,push"), 401},
		{"logged-in token push", "PUT", "/v2/team-b/x/manifests/latest", f.token(t, "bob", "bpw", "repository:team-b/x:pull,push"), 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if resp := f.do(t, tt.method, tt.path, tt.authz); resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
		})
	}
}

// doFrom sends one request straight to the handler as if from addr.
func (f *fixture) doFrom(method, path, addr, authz string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, nil)
	r.RemoteAddr = addr
	if authz != "" {
		r.Header.Set("Authorization", authz)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

// The throttle decides before any credential check, cached or not; a
// blocked user name still lets in the addresses it logged in from before.
func TestThrottleMatrix(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	f := newFixture(t, Site{}, Config{Now: clock, Throttle: Throttle{UserFree: 2, AddrFree: 4, Backoff: time.Hour, MaxBackoff: 2 * time.Hour}})
	const (
		home     = "10.0.0.1:4000"   // alice's usual machine
		attacker = "10.0.0.9:5000"   // guesses alice's password
		newbox   = "10.0.0.7:6000"   // alice's new machine
		v6a      = "[2001:db8::1]:1" // one /64 ...
		v6b      = "[2001:db8::2]:2" // ... two addresses
		v6other  = "[2001:db8:0:1::1]:3"
	)
	steps := []struct {
		name      string
		addr      string
		authz     string
		advance   time.Duration
		status    int
		userBlock bool // the 429 comes from the user name, not the address
	}{
		{"alice logs in at home (now cached)", home, basic("alice", "apw"), 0, 200, false},
		{"attacker guess 1", attacker, basic("alice", "guess1"), 0, 401, false},
		{"attacker guess 2", attacker, basic("alice", "guess2"), 0, 401, false},
		{"attacker guess 3 starts the user block", attacker, basic("alice", "guess3"), 0, 401, false},
		{"cached user + wrong password while blocked", attacker, basic("alice", "guess4"), 0, 429, true},
		{"cached user + right password from the attacker", attacker, basic("alice", "apw"), 0, 429, true},
		{"cached user + right password from a new address", newbox, basic("alice", "apw"), 0, 429, true},
		{"cached user + right password from home", home, basic("alice", "apw"), 0, 200, false},
		{"home is not blocked by the user's block", home, basic("alice", "apw"), 0, 200, false},
		{"other users from the attacker's address still work", attacker, basic("bob", "bpw"), 0, 200, false},
		{"attacker address failure 4", attacker, basic("bob", "x"), 0, 401, false},
		{"attacker address failure 5 blocks the address", attacker, basic("carol", "x"), 0, 401, false},
		{"blocked address, right password", attacker, basic("bob", "bpw"), 0, 429, false},
		{"blocked address, cached password", attacker, basic("alice", "apw"), 0, 429, false},
		{"blocked address, unknown user", attacker, basic("mallory", "x"), 0, 429, false},
		{"blocked address, malformed credentials", attacker, "Basic !!!", 0, 429, false},
		{"blocked address, empty user", attacker, basic("", "x"), 0, 429, false},
		{"malformed credentials elsewhere", newbox, "Basic !!!", 0, 401, false},
		{"after the block: the new address", newbox, basic("alice", "apw"), 2 * time.Hour, 200, false},
		{"after the block: the attacker's address", attacker, basic("bob", "bpw"), 0, 200, false},
		{"v6 failure 1", v6a, basic("u1", "x"), 0, 401, false},
		{"v6 failure 2", v6b, basic("u2", "x"), 0, 401, false},
		{"v6 failure 3", v6a, basic("u3", "x"), 0, 401, false},
		{"v6 failure 4", v6b, basic("u4", "x"), 0, 401, false},
		{"v6 failure 5 blocks the /64", v6a, basic("u5", "x"), 0, 401, false},
		{"another address in the /64", v6b, basic("bob", "bpw"), 0, 429, false},
		{"another /64", v6other, basic("bob", "bpw"), 0, 200, false},
	}
	for i, st := range steps {
		mu.Lock()
		now = now.Add(st.advance)
		mu.Unlock()
		resp := f.doFrom("GET", "/v2/", st.addr, st.authz)
		if resp.Code != st.status {
			t.Fatalf("step %d (%s): status %d, want %d: %s", i, st.name, resp.Code, st.status, resp.Body)
		}
		if st.status == 429 {
			if ra := resp.Header().Get("Retry-After"); ra == "" || ra == "0" {
				t.Fatalf("step %d (%s): Retry-After %q", i, st.name, ra)
			}
			if !strings.Contains(resp.Body.String(), "TOOMANYREQUESTS") {
				t.Fatalf("step %d (%s): body %s", i, st.name, resp.Body)
			}
		}
	}
	// the token endpoint goes through the same decision
	mu.Lock()
	now = now.Add(3 * time.Hour)
	mu.Unlock()
	for i := 0; i < 3; i++ {
		if resp := f.doFrom("GET", TokenPath, "10.0.0.20:1", basic("bob", "wrong")); resp.Code != 401 {
			t.Fatalf("token endpoint, wrong password: %d", resp.Code)
		}
	}
	if resp := f.doFrom("GET", TokenPath+"?service="+testHost, newbox, basic("bob", "bpw")); resp.Code != 429 {
		t.Fatalf("token endpoint, blocked user from a new address: %d", resp.Code)
	}
	if resp := f.doFrom("GET", TokenPath+"?service="+testHost, attacker, basic("bob", "bpw")); resp.Code != 200 {
		// the attacker's address logged in as bob before (step 16)
		t.Fatalf("token endpoint, blocked user from an address it used before: %d", resp.Code)
	}
	if resp := f.doFrom("POST", TokenPath, newbox, ""); resp.Code == 200 {
		t.Fatal("empty POST form accepted")
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "login throttled") || !strings.Contains(logs, `"unknown_user":true`) {
		t.Fatalf("throttling or unknown users not logged:\n%s", logs)
	}
	for _, typed := range []string{"mallory", "u1", "guess1", "apw"} {
		if strings.Contains(logs, `"`+typed+`"`) {
			t.Fatalf("the log shows %q, text a client typed:\n%s", typed, logs)
		}
	}
}

func TestAddrKey(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.1:5000", "192.0.2.1"},
		{"192.0.2.1", "192.0.2.1"},
		{"[::ffff:192.0.2.1]:80", "192.0.2.1"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"2001:db8:1:2::9", "2001:db8:1:2::/64"},
		{"[fe80::1%eth0]:1", "fe80::/64"},
		{"not an address", "not an address"},
	} {
		if got := AddrKey(tc.in); got != tc.want {
			t.Errorf("AddrKey(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "htpasswd")
	writeHtpasswd(t, path, map[string]string{"alice": "apw"})
	f := newFixture(t, Site{}, Config{Htpasswd: path, Watch: 10 * time.Millisecond})
	if resp := f.do(t, "GET", "/v2/", basic("alice", "apw")); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	aliceTok := f.token(t, "alice", "apw")
	if resp := f.do(t, "GET", "/v2/", aliceTok); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	// A changed file takes effect without a restart: alice out, carol in.
	tmp := filepath.Join(dir, "new")
	writeHtpasswd(t, tmp, map[string]string{"carol": "cpw"})
	if err := os.Rename(tmp, path); err != nil { // what editors and `mv` do
		t.Fatal(err)
	}
	waitFor(t, func() bool { return f.s.UserCount() == 1 && f.s.v.verify("carol", []byte("cpw")) })
	if resp := f.do(t, "GET", "/v2/", basic("alice", "apw")); resp.StatusCode != 401 {
		t.Fatalf("removed user still logs in: %d", resp.StatusCode)
	}
	if resp := f.do(t, "GET", "/v2/", aliceTok); resp.StatusCode != 401 {
		t.Fatalf("removed user's token still works: %d", resp.StatusCode)
	}
	// A broken file keeps the old users and says why.
	if err := os.WriteFile(path, []byte("carol:$apr1$x$y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := f.s.Reload()
	if err == nil || !strings.Contains(err.Error(), path+":1:") {
		t.Fatalf("Reload of a broken file: %v", err)
	}
	if resp := f.do(t, "GET", "/v2/", basic("carol", "cpw")); resp.StatusCode != 200 {
		t.Fatalf("old users lost after a bad reload: %d", resp.StatusCode)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Reload(); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Reload of a missing file: %v", err)
	}
	if !strings.Contains(f.logs.String(), "keeping the previous users") {
		t.Fatal("bad reload not logged")
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := New(context.Background(), Config{Htpasswd: filepath.Join(dir, "none")}, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "wharf passwd USER >>") {
		t.Fatalf("missing htpasswd at start: %v", err)
	}
	s, err := New(context.Background(), Config{}, zerolog.Nop())
	if err != nil || s.UserCount() != 0 || s.Reload() != nil {
		t.Fatalf("no htpasswd: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func discardLogger() zerolog.Logger { return zerolog.Nop() }

func mustPolicy(t testing.TB) *policy.Policy {
	p, err := policy.New(testRules, map[string][]string{"ci": {"ci-bot"}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestWildcardSite: on the catch-all site ("*") the host the client asked
// for is the service name, for the policy and for token audiences.
func TestWildcardSite(t *testing.T) {
	p, err := policy.New([]policy.Rule{{Hosts: []string{"r.test"}, Users: []string{"alice"}, Allow: []string{"pull", "push"}, Line: 1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, Site{Host: "*", Policy: p}, Config{})
	req := func(host, method, path, authz string) *http.Response {
		r, _ := http.NewRequest(method, f.srv.URL+path, nil)
		r.Host = host
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	resp := req("r.test:5000", "GET", "/v2/", "")
	if got := resp.Header.Get("WWW-Authenticate"); got != `Bearer realm="http://r.test:5000/v2/token",service="r.test"` {
		t.Fatalf("challenge %q", got)
	}
	if resp := req("r.test:5000", "PUT", "/v2/a/manifests/v1", basic("alice", "apw")); resp.StatusCode != 200 {
		t.Fatalf("alice on r.test: %d", resp.StatusCode)
	}
	if resp := req("other.test", "PUT", "/v2/a/manifests/v1", basic("alice", "apw")); resp.StatusCode != 403 {
		t.Fatalf("alice on other.test: %d", resp.StatusCode)
	}
	tr := req("r.test", "GET", TokenPath+"?service=r.test&scope=repository:a:pull", basic("alice", "apw"))
	var body tokenResponse
	if err := json.NewDecoder(tr.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp := req("r.test", "GET", "/v2/a/manifests/v1", "Bearer "+body.Token); resp.StatusCode != 200 {
		t.Fatalf("token on its host: %d", resp.StatusCode)
	}
	if resp := req("other.test", "GET", "/v2/a/manifests/v1", "Bearer "+body.Token); resp.StatusCode != 401 {
		t.Fatalf("token on another host: %d", resp.StatusCode)
	}
}

// TestUser: the user the gateway's access log gets (Decide's Decision,
// ServeToken's return value) names who logged in on API requests and
// token requests, and stays empty for failures and anonymous callers.
func TestUser(t *testing.T) {
	f := newFixture(t, Site{}, Config{})
	g := f.s.Guard(Site{Host: testHost, Policy: mustPolicy(t)})
	tests := []struct {
		path, authz, want string
	}{
		{"/v2/", basic("alice", "apw"), "alice"},
		{TokenPath + "?scope=repository:team-a/app:pull", basic("ci-bot", "cpw"), "ci-bot"},
		{TokenPath, "", ""},
		{TokenPath, basic("alice", "wrong"), ""},
		{"/v2/", basic("alice", "wrong"), ""},
		{"/v2/public/x/manifests/latest", "", ""},
		{"/v2/secret/x/manifests/latest", basic("bob", "bpw"), "bob"}, // refused, but logged in
	}
	for _, tt := range tests {
		req := httptest.NewRequest("GET", tt.path, nil)
		if tt.authz != "" {
			req.Header.Set("Authorization", tt.authz)
		}
		var user string
		if req.URL.Path == TokenPath {
			user = g.ServeToken(httptest.NewRecorder(), req)
		} else {
			rt, perr := backend.ParseRequest(req)
			if perr != nil {
				t.Fatal(perr)
			}
			d, _ := g.Decide(req, rt)
			user = d.User
		}
		if user != tt.want {
			t.Errorf("%s with %q: user %q, want %q", tt.path, tt.authz, user, tt.want)
		}
	}
}
