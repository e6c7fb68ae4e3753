package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/auth"
)

// The gateway puts the auth service and the policy in front of every site,
// the token endpoint answers under /v2/token, and the access log names
// the user.
func TestGatewayAuthWiring(t *testing.T) {
	dir := t.TempDir()
	writeHtpasswd(t, filepath.Join(dir, "htpasswd"), "alice")
	cfg, err := ParseConfig(filepath.Join(dir, "gw.toml"), []byte(`
data_dir = "data"
[listen]
http = "127.0.0.1:0"
[auth]
htpasswd = "htpasswd"
[[site]]
host = "reg.example"
backend = "registry"
tls = "off"
anonymous = "pull"
[[policy]]
repos = ["team/*"]
users = ["alice"]
allow = ["pull", "push"]
`))
	if err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	g, err := New(context.Background(), cfg, zerolog.New(&logBuf))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	defer srv.Close()
	do := func(method, path, authz string) *http.Response {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		req.Host = "reg.example"
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
	resp := do("GET", "/v2/", "")
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer realm=\"http://reg.example/v2/token\"") {
		t.Fatalf("ping without login: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if resp.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
		t.Fatal("401 without API version header")
	}
	req, _ := http.NewRequest("GET", "/v2/token?service=reg.example&scope=repository:team/app:pull,push", nil)
	req.SetBasicAuth("alice", "pw")
	resp = do("GET", req.URL.String(), req.Header.Get("Authorization"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token endpoint: %d", resp.StatusCode)
	}
	var tok struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.Token == "" {
		t.Fatalf("token body: %v", err)
	}
	if resp := do("POST", "/v2/team/app/blobs/uploads/", "Bearer "+tok.Token); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("push with alice's token: %d", resp.StatusCode)
	}
	if resp := do("POST", "/v2/other/app/blobs/uploads/", "Bearer "+tok.Token); resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
		t.Fatalf("push to a repo the token does not cover: %d", resp.StatusCode)
	}
	if !strings.Contains(logBuf.String(), `"user":"alice"`) {
		t.Fatalf("access log does not name the user:\n%s", logBuf.String())
	}
	if strings.Contains(logBuf.String(), tok.Token) {
		t.Fatal("a token appears in the log")
	}
	rec := httptest.NewRecorder()
	g.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), "wharf_auth_bcrypt_checks_total 1\n") {
		t.Fatalf("/metrics should count exactly one bcrypt check:\n%s", rec.Body.String())
	}
}

// A reload applies a new policy to a site whose backend it keeps.
func TestReloadAppliesNewPolicy(t *testing.T) {
	dir := t.TempDir()
	writeHtpasswd(t, filepath.Join(dir, "htpasswd"), "alice")
	conf := func(allow string) *Config {
		c, err := ParseConfig(filepath.Join(dir, "gw.toml"), []byte(`
data_dir = "data"
[listen]
http = "127.0.0.1:0"
[auth]
htpasswd = "htpasswd"
[[site]]
host = "reg.example"
backend = "registry"
tls = "off"
[[policy]]
users = ["alice"]
allow = [`+allow+`]
`))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	g, err := New(context.Background(), conf(`"pull", "push"`), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	before := g.sites.Load().byHost["reg.example"].site
	grant := func() string {
		req := httptest.NewRequest("GET", "http://reg.example/v2/token?service=reg.example&scope=repository:app:pull,push", nil)
		req.SetBasicAuth("alice", "pw")
		rec := httptest.NewRecorder()
		g.ServeHTTP(rec, req)
		var tok struct{ Token string }
		json.NewDecoder(rec.Body).Decode(&tok)
		req = httptest.NewRequest("POST", "http://reg.example/v2/app/blobs/uploads/", nil)
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		rec = httptest.NewRecorder()
		g.ServeHTTP(rec, req)
		return http.StatusText(rec.Code)
	}
	if got := grant(); got != "Accepted" {
		t.Fatalf("push before reload: %s", got)
	}
	if err := g.Reload(context.Background(), conf(`"pull"`)); err != nil {
		t.Fatal(err)
	}
	if got := grant(); got == "Accepted" {
		t.Fatal("push still allowed after a reload that took it away")
	}
	if after := g.sites.Load().byHost["reg.example"].site; after != before {
		t.Fatal("reload replaced an unchanged site's backend")
	}
}

// TestMountNeedsPullOnSource: through the wired gateway (auth, policy, the
// registry), a cross-repository mount reads its source only for a caller
// who may pull from there; anyone else gets a normal upload, and the blob
// does not appear in their repository.
func TestMountNeedsPullOnSource(t *testing.T) {
	dir := t.TempDir()
	writeHtpasswd(t, filepath.Join(dir, "htpasswd"), "alice", "bob")
	cfg, err := ParseConfig(filepath.Join(dir, "gw.toml"), []byte(`
data_dir = "data"
[listen]
http = "127.0.0.1:0"
[auth]
htpasswd = "htpasswd"
[[site]]
host = "reg.example"
backend = "registry"
tls = "off"
[[policy]]
repos = ["team/*"]
users = ["alice"]
allow = ["pull", "push"]
[[policy]]
repos = ["public/*"]
users = ["alice", "bob"]
allow = ["pull", "push"]
`))
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(t.Context(), cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	do := func(user, method, path string, body []byte) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, "http://reg.example"+path, bytes.NewReader(body))
		req.SetBasicAuth(user, "pw")
		rec := httptest.NewRecorder()
		g.ServeHTTP(rec, req)
		return rec
	}
	blob := []byte("a layer only team/* may read")
	d := digest.FromBytes(blob).String()
	if rec := do("alice", "POST", "/v2/team/app/blobs/uploads/?digest="+d, blob); rec.Code != http.StatusCreated {
		t.Fatalf("alice's push: %d %s", rec.Code, rec.Body)
	}
	for _, c := range []struct {
		user, to, from string
		status         int
	}{
		{"bob", "public/x", "&from=team/app", http.StatusAccepted}, // bob may not pull team/app: no mount
		{"alice", "public/y", "&from=team/app", http.StatusCreated},
		// without from= the registry would link the blob from wherever it
		// lies: a guarded caller gets an upload session instead
		{"bob", "public/z", "", http.StatusAccepted},
	} {
		rec := do(c.user, "POST", "/v2/"+c.to+"/blobs/uploads/?mount="+d+c.from, nil)
		if rec.Code != c.status {
			t.Fatalf("%s mounts into %s: %d %s, want %d", c.user, c.to, rec.Code, rec.Body, c.status)
		}
		head := do(c.user, "HEAD", "/v2/"+c.to+"/blobs/"+d, nil)
		if (head.Code == http.StatusOK) != (c.status == http.StatusCreated) {
			t.Fatalf("%s: HEAD of the blob in %s answers %d after the mount answered %d", c.user, c.to, head.Code, rec.Code)
		}
	}
}

// writeHtpasswd writes an htpasswd file at path in which every one of
// users has the password "pw".
func writeHtpasswd(t *testing.T, path string, users ...string) {
	t.Helper()
	var b strings.Builder
	for _, u := range users {
		line, err := auth.PasswdLine(u, []byte("pw"))
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(line + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}
