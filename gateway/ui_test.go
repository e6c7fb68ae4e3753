package gateway

import (
	"bytes"
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend/registry"
)

// The web UI answers every path outside /v2/ on registry and cache sites,
// /v2/ stays the API, ui = false turns it off, proxy sites never have it,
// and its session key is kept 0600 under data_dir/auth.
func TestGatewayUIWiring(t *testing.T) {
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
	var logBuf syncBuffer
	g, err := New(context.Background(), cfg, zerolog.New(&logBuf))
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
		checkUIAnswer(t, tc.host+tc.path, resp, body, tc.status, tc.html)
	}
	// a proxy site passes / to its upstream (here: nothing listens, 502)
	if resp, _ := get("proxy.example", "/"); strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("proxy site serves the UI")
	}
	// a login through the form; the access log names the UI's user
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("POST", srv.URL+"/login", strings.NewReader("username=alice&password=pw"))
	req.Host = "reg.example"
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("login: %d %v", resp.StatusCode, resp.Cookies())
	}
	req, _ = http.NewRequest("GET", srv.URL+"/?q=logged-in", nil)
	req.Host = "reg.example"
	req.AddCookie(resp.Cookies()[0])
	if resp, err = client.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.Contains(logBuf.String(), `"user":"alice"`) {
		t.Errorf("access log does not name the UI's user:\n%s", logBuf.String())
	}
	// over TLS the same login sets a Secure cookie
	tlsSrv := httptest.NewTLSServer(g)
	defer tlsSrv.Close()
	tc := tlsSrv.Client()
	tc.CheckRedirect = client.CheckRedirect
	req, _ = http.NewRequest("POST", tlsSrv.URL+"/login", strings.NewReader("username=alice&password=pw"))
	req.Host = "reg.example"
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, err = tc.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if sc := resp.Header.Get("Set-Cookie"); resp.StatusCode != http.StatusSeeOther || !strings.Contains(sc, "; Secure") ||
		!strings.Contains(sc, "; HttpOnly") || !strings.Contains(sc, "; SameSite=Strict") {
		t.Errorf("login over TLS: %d, Set-Cookie %q", resp.StatusCode, sc)
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

// A cache site's UI shows what a pull through it stored, in the cache's own
// record format: the tag, its digest and platform, the upstream, the times.
func TestGatewayUICacheSite(t *testing.T) {
	ctx := context.Background()
	up, err := registry.New(ctx, registry.Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	upSrv := httptest.NewServer(up)
	defer upSrv.Close()
	put := func(method, path, ct string, body []byte) {
		req, _ := http.NewRequest(method, upSrv.URL+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d", method, path, resp.StatusCode)
		}
	}
	cfgBlob := []byte(`{"architecture":"arm64","os":"linux","created":"2026-03-04T05:06:07Z","config":{"Labels":{"team":"infra"}}}`)
	layer := bytes.Repeat([]byte("x"), 3000)
	for _, b := range [][]byte{cfgBlob, layer} {
		put("POST", "/v2/library/tool/blobs/uploads/?digest="+digest.FromBytes(b).String(), "application/octet-stream", b)
	}
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":%q,"size":%d}]}`,
		digest.FromBytes(cfgBlob), len(cfgBlob), digest.FromBytes(layer), len(layer))
	put("PUT", "/v2/library/tool/manifests/1.0", "application/vnd.oci.image.manifest.v1+json", []byte(manifest))

	dir := t.TempDir()
	cfg, err := ParseConfig(filepath.Join(dir, "gw.toml"), []byte(fmt.Sprintf(`
data_dir = "data"
[listen]
http = "127.0.0.1:0"
[[site]]
host = "mirror.example"
backend = "cache"
tls = "off"
[site.cache]
upstream = %q
max_age = "720h"
`, upSrv.URL)))
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(ctx, cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	defer srv.Close()
	get := func(path string) (int, string) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Host = "mirror.example"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, html.UnescapeString(string(b))
	}
	if st, _ := get("/v2/library/tool/manifests/1.0"); st != 200 {
		t.Fatalf("pull through the cache: %d", st)
	}
	// the manifest alone: the page works, without the config's facts
	if st, body := get("/r/library/tool"); st != 200 || strings.Contains(body, "infra") {
		t.Fatalf("cache tags page before the config was pulled: %d\n%s", st, body)
	}
	if st, _ := get("/v2/library/tool/blobs/" + digest.FromBytes(cfgBlob).String()); st != 200 {
		t.Fatalf("config through the cache: %d", st)
	}
	st, body := get("/r/library/tool")
	if st != 200 {
		t.Fatalf("cache tags page: %d\n%s", st, body)
	}
	for _, want := range []string{"cache of " + upSrv.URL, "1.0", digest.FromString(manifest).Encoded()[:12], "linux/arm64",
		"team", "infra", "2026-03-04 05:06 UTC", "Last pulled", "Evicted after", "max_age 30 days"} {
		if !strings.Contains(body, want) {
			t.Errorf("cache tags page lacks %q", want)
		}
	}
	if st, body := get("/"); st != 200 || !strings.Contains(body, "library/tool") {
		t.Errorf("cache repositories page: %d\n%s", st, body)
	}
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// checkUIAnswer: status and kind of an answer, a CSP on every page, the
// API version header on /v2/.
func checkUIAnswer(t *testing.T, where string, resp *http.Response, body string, status int, html bool) {
	t.Helper()
	isHTML := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html")
	if resp.StatusCode != status || isHTML != html {
		t.Errorf("%s: %d html=%v, want %d html=%v\n%s", where, resp.StatusCode, isHTML, status, html, body)
	}
	if html && resp.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("%s: no CSP", where)
	}
	if strings.Contains(where, "/v2/") && resp.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
		t.Errorf("%s: no API version header", where)
	}
}
