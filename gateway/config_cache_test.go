package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/cache"
)

// [site.cache] max_size, upstreams and credentials parse into the cache's
// own types and are checked by its validation, with file:line.
func TestCacheFleetKeys(t *testing.T) {
	const head = "[listen]\nhttp = \":80\"\n[[site]]\nhost = \"m.example\"\nbackend = \"cache\"\ntls = \"off\"\n[site.cache]\n"
	tests := []struct {
		name, body string
		err        string
	}{
		{"full", "upstream = \"https://registry-1.docker.io\"\nmax_size = \"200GiB\"\n[site.cache.upstreams]\n\"docker.io\" = \"https://registry-1.docker.io\"\n\"ghcr.io\" = \"https://ghcr.io\"\n[site.cache.credentials.\"ghcr.io\"]\nusername = \"me\"\npassword = \"pat\"\n", ""},
		{"table only", "[site.cache.upstreams]\n\"quay.io\" = \"https://quay.io\"\n", ""},
		{"bytes", "upstream = \"https://u.example\"\nmax_size = 1073741824\n", ""},
		{"bad size", "upstream = \"https://u.example\"\nmax_size = \"lots\"\n", "gw.toml:9: invalid size \"lots\""},
		{"no upstream", "ttl = \"1h\"\n", "needs [site.cache] upstream"},
		{"bad name", "upstream = \"https://u.example\"\n[site.cache.upstreams]\n\"Quay\" = \"https://quay.io\"\n", "registry name \"Quay\""},
		{"bad url", "[site.cache.upstreams]\n\"quay.io\" = \"quay.io\"\n", "scheme must be http or https"},
		{"creds for unknown", "upstream = \"https://u.example\"\n[site.cache.credentials.\"ghcr.io\"]\nusername = \"me\"\npassword = \"x\"\n", "not in [site.cache.upstreams]"},
		{"creds key typo", "[site.cache.upstreams]\n\"ghcr.io\" = \"https://ghcr.io\"\n[site.cache.credentials.\"ghcr.io\"]\nuser = \"me\"\n", "unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig("gw.toml", []byte(head+tt.body))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.name == "full" {
				cs := c.Sites[0].Cache
				if cs.MaxSize != 200<<30 || cs.Upstreams["ghcr.io"] != "https://ghcr.io" || cs.Credentials["ghcr.io"] != (cache.Credential{Username: "me", Password: "pat"}) {
					t.Fatalf("parsed %+v", cs)
				}
			}
		})
	}
}

// A password_file is read relative to the config file, by check as by
// serve; a missing one is refused with its name.
func TestCachePasswordFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "gh.pw"), []byte("pat\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	body := "data_dir = \"data\"\n[listen]\nhttp = \"127.0.0.1:0\"\n[[site]]\nhost = \"m.example\"\nbackend = \"cache\"\ntls = \"off\"\n[site.cache.upstreams]\n\"ghcr.io\" = \"https://ghcr.io\"\n[site.cache.credentials.\"ghcr.io\"]\nusername = \"me\"\npassword_file = \"%s\"\n"
	cfg, err := ParseConfig(filepath.Join(dir, "gw.toml"), []byte(strings.Replace(body, "%s", "gh.pw", 1)))
	if err != nil {
		t.Fatal(err)
	}
	ups, err := cfg.Sites[0].Cache.UpstreamTable(cfg.Env())
	if err != nil || ups["ghcr.io"].Password != "pat" || ups["ghcr.io"].Username != "me" {
		t.Fatalf("upstream table %+v, %v", ups, err)
	}
	g, err := New(t.Context(), cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	g.sites.Load().close()
	_, err = ParseConfig(filepath.Join(dir, "gw.toml"), []byte(strings.Replace(body, "%s", "missing.pw", 1)))
	if err == nil || !strings.Contains(err.Error(), "missing.pw") {
		t.Fatalf("missing password_file: %v", err)
	}
}

// The policy sees the name qualified by ?ns= (the gateway resolves it
// before auth): a rule for ghcr.io/* admits ns=ghcr.io and not the same
// path for docker.io, and the token challenge asks for the qualified
// scope, which is what containerd then requests.
func TestCacheNamespacePolicy(t *testing.T) {
	dir := t.TempDir()
	writeHtpasswd(t, filepath.Join(dir, "htpasswd"), "alice")
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		backend.WriteError(w, r, backend.Errorf(http.StatusNotFound, backend.CodeManifestUnknown, "nothing here (test upstream)"))
	}))
	defer up.Close()
	cfg, err := ParseConfig(filepath.Join(dir, "gw.toml"), []byte(`
data_dir = "data"
[listen]
http = "127.0.0.1:0"
[auth]
htpasswd = "htpasswd"
[[site]]
host = "mirror.example"
backend = "cache"
tls = "off"
[site.cache.upstreams]
"docker.io" = "`+up.URL+`"
"ghcr.io"   = "`+up.URL+`"
[[policy]]
repos = ["ghcr.io/*"]
users = ["alice"]
allow = ["pull"]
[[policy]]
users = ["*"]
allow = []
`))
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(context.Background(), cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer g.sites.Load().close()
	srv := httptest.NewServer(g)
	defer srv.Close()
	for _, c := range []struct {
		path, user string
		status     int
		challenge  string
	}{
		{"/v2/owner/app/manifests/1?ns=ghcr.io", "alice", http.StatusNotFound, ""},
		{"/v2/ghcr.io/owner/app/manifests/1", "alice", http.StatusNotFound, ""},
		{"/v2/owner/app/manifests/1?ns=docker.io", "alice", http.StatusForbidden, ""},
		{"/v2/owner/app/manifests/1?ns=ghcr.io", "", http.StatusUnauthorized, "repository:ghcr.io/owner/app:pull"},
		{"/v2/owner/app/manifests/1?ns=quay.io", "alice", http.StatusNotFound, ""},
	} {
		req, _ := http.NewRequest("GET", srv.URL+c.path, nil)
		req.Host = "mirror.example"
		if c.user != "" {
			req.SetBasicAuth(c.user, "pw")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Fatalf("%s as %q: %d, want %d", c.path, c.user, resp.StatusCode, c.status)
		}
		if c.challenge != "" && !strings.Contains(resp.Header.Get("WWW-Authenticate"), c.challenge) {
			t.Fatalf("%s: challenge %q lacks %s", c.path, resp.Header.Get("WWW-Authenticate"), c.challenge)
		}
	}
}
