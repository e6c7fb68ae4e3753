package gateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/auth"
)

// The web UI answers every path outside /v2/ on registry and cache sites,
// /v2/ stays the API, ui = false turns it off, proxy sites never have it,
// and its session key is kept 0600 under data_dir/auth.
func TestGatewayUIWiring(t *testing.T) {
	dir := t.TempDir()
	line, err := auth.PasswdLine("alice", []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
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
[[site]]
host = "noui.example"
backend = "registry"
tls = "off"
ui = false
[[site]]
host = "mirror.example"
backend = "cache"
tls = "off"
[site.cache]
upstream = "http://127.0.0.1:9"
[[site]]
host = "proxy.example"
backend = "proxy"
tls = "off"
[site.proxy]
upstream = "http://127.0.0.1:9"
`))
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(context.Background(), cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	defer srv.Close()
	get := func(host, path string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, tc := range []struct {
		host, path string
		status     int
		html       bool
	}{
		{"reg.example", "/", 200, true},
		{"reg.example", "/login", 200, true},
		{"reg.example", "/-/static/style.css", 200, false},
		{"reg.example", "/v2/", 401, false}, // the API, with its token challenge
		{"mirror.example", "/", 200, true},  // no anonymous pull: the UI answers with an empty list
		{"noui.example", "/", 404, false},
		{"noui.example", "/login", 404, false},
	} {
		resp, body := get(tc.host, tc.path)
		isHTML := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html")
		if resp.StatusCode != tc.status || isHTML != tc.html {
			t.Errorf("%s%s: %d html=%v, want %d html=%v\n%s", tc.host, tc.path, resp.StatusCode, isHTML, tc.status, tc.html, body)
		}
		if tc.html && resp.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("%s%s: no CSP", tc.host, tc.path)
		}
		if strings.HasPrefix(tc.path, "/v2/") && resp.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
			t.Errorf("%s%s: no API version header", tc.host, tc.path)
		}
	}
	// a proxy site passes / to its upstream (here: nothing listens, 502)
	if resp, _ := get("proxy.example", "/"); strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("proxy site serves the UI")
	}
	st, err := os.Stat(cfg.DataPath(uiKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("session key mode %v, want 0600", st.Mode().Perm())
	}
}

func TestUIConfig(t *testing.T) {
	on, off := true, false
	for _, tc := range []struct {
		site Site
		want bool
	}{
		{Site{Backend: "registry"}, true},
		{Site{Backend: "cache"}, true},
		{Site{Backend: "proxy"}, false},
		{Site{Backend: "registry", UI: &off}, false},
		{Site{Backend: "cache", UI: &on}, true},
		{Site{Backend: "proxy", UI: &on}, false},
	} {
		if got := tc.site.UIEnabled(); got != tc.want {
			t.Errorf("%+v: UIEnabled %v, want %v", tc.site, got, tc.want)
		}
	}
	_, err := ParseConfig("gw.toml", []byte(`
[listen]
http = "127.0.0.1:0"
[[site]]
host = "p.example"
backend = "proxy"
tls = "off"
ui = true
[site.proxy]
upstream = "http://127.0.0.1:9"
`))
	if err == nil || !strings.Contains(err.Error(), "gw.toml:8: ui = true: a proxy site has no web UI") {
		t.Fatalf("ui = true on a proxy site: %v", err)
	}
}
