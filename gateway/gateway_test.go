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
