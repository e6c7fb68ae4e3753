package gateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestHostRouting(t *testing.T) {
	cfg, err := ParseConfig("gw.toml", []byte(`
data_dir = "`+t.TempDir()+`"
[listen]
http = "127.0.0.1:0"
[[site]]
host = "registry.example.com"
backend = "registry"
tls = "off"
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
	tests := []struct {
		host       string
		wantStatus int // 0 = anything routed to the site (not 404 for unknown host)
		wantBody   string
	}{
		{"registry.example.com", 0, ""},
		{"Registry.Example.com:443", 0, ""},
		{"registry.example.com.", 0, ""},
		{"other.example.com", http.StatusNotFound, `no site for host \"other.example.com\"`},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest("GET", srv.URL+"/v2/", nil)
		req.Host = tt.host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
			t.Errorf("%s: no API version header", tt.host)
		}
		if tt.wantStatus != 0 && resp.StatusCode != tt.wantStatus {
			t.Errorf("%s: status %d, want %d", tt.host, resp.StatusCode, tt.wantStatus)
		}
		if tt.wantStatus == 0 && strings.Contains(string(body), "no site for host") {
			t.Errorf("%s: not routed: %s", tt.host, body)
		}
		if !strings.Contains(string(body), tt.wantBody) {
			t.Errorf("%s: body %q lacks %q", tt.host, body, tt.wantBody)
		}
	}
}

func TestAdminHandler(t *testing.T) {
	cfg := DevConfig()
	cfg.DataDir = t.TempDir()
	g, err := New(context.Background(), cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	g.ServeHTTP(rec, httptest.NewRequest("BREW", "http://any.host/v2/", nil))
	admin := g.AdminHandler()
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		admin.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before Run = %d, want 503", code)
	}
	g.ready.Store(true)
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz when serving = %d", code)
	}
	if code, body := get("/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(body, "goroutine profile:") {
		t.Errorf("/debug/pprof/goroutine = %d %.80q", code, body)
	}
	_, body := get("/metrics")
	if !strings.Contains(body, `wharf_http_requests_total{code=`) || !strings.Contains(body, `method="OTHER",site="*"`) {
		t.Errorf("/metrics lacks the request counter with a bounded method label:\n%s", body)
	}
}

// A transfer a backend aborts on purpose still gets its access-log line.
func TestAccessLogOnAbort(t *testing.T) {
	var buf strings.Builder
	log := zerolog.New(&buf)
	h := accessLog(&log, nil, "s")(func(w http.ResponseWriter, r *http.Request, _ *exchange) {
		w.WriteHeader(http.StatusOK)
		w.Write([]byte("part"))
		panic(http.ErrAbortHandler)
	})
	func() {
		defer func() {
			if p := recover(); p != http.ErrAbortHandler {
				t.Errorf("panic %v was not passed on", p)
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v2/x/blobs/sha256:00", nil))
	}()
	if !strings.Contains(buf.String(), `"aborted":true`) || !strings.Contains(buf.String(), `"bytes":4`) {
		t.Fatalf("no access-log line for the aborted transfer: %q", buf.String())
	}
}
