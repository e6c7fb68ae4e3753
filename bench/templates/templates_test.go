package templates

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wharf-dev/wharf/bench/internal/tlsca"

	"github.com/wharf-dev/wharf/internal/testpeer"
)

// TestNginxConfigsAreValid renders both nginx configs and has the real
// nginx check them (nginx -t), certificates and htpasswd included.
func TestNginxConfigsAreValid(t *testing.T) {
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		testpeer.Missing(t, "nginx not installed")
	}
	dir := t.TempDir()
	ca, err := tlsca.New(dir, []string{"nginx.bench.test"})
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("u:$2y$05$abcdefghijklmnopqrstuuK6Fz7bO5lB3C3U0bXlJb1U0bXlJb1U0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		tmpl string
		data Nginx
	}{
		{"static plain", "nginx-static.conf.tmpl", Nginx{Listen: "127.0.0.1:1", Root: dir}},
		{"static tls", "nginx-static.conf.tmpl", Nginx{Listen: "127.0.0.1:1", TLS: true, Cert: ca.Cert, Key: ca.Key, Root: dir}},
		{"registry", "nginx-registry.conf.tmpl", Nginx{Listen: "127.0.0.1:1", TLS: true, Cert: ca.Cert, Key: ca.Key, Htpasswd: htpasswd, Upstream: "127.0.0.1:2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := t.TempDir()
			tt.data.Dir = d
			conf := filepath.Join(d, "nginx.conf")
			if err := Write(conf, tt.tmpl, tt.data); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(nginx, "-t", "-p", d, "-c", conf).CombinedOutput()
			if err != nil {
				t.Fatalf("nginx -t: %v\n%s", err, out)
			}
		})
	}
}

// TestRegistryConfigs checks the rendered YAML carries what the suite
// relies on (root, address, TLS and htpasswd for registry:3).
func TestRegistryConfigs(t *testing.T) {
	tests := []struct {
		tmpl string
		data any
		want []string
	}{
		{"docker-registry.yml.tmpl", DockerRegistry{Root: "/r", Addr: "127.0.0.1:5"},
			[]string{"rootdirectory: /r", "addr: 127.0.0.1:5", "disabled: true"}},
		{"docker-registry.yml.tmpl", DockerRegistry{Root: "/r", Addr: "127.0.0.1:5", AccessLog: true},
			[]string{"disabled: false"}},
		{"registry3-proxy.yml.tmpl", Registry3Proxy{Root: "/r", Addr: "127.0.0.1:5", Remote: "http://127.0.0.1:6"},
			[]string{"rootdirectory: /r", "addr: 127.0.0.1:5", "remoteurl: http://127.0.0.1:6"}},
		{"registry3.yml.tmpl", Registry3{Root: "/r", Addr: "127.0.0.1:5", Cert: "/c", Key: "/k", Htpasswd: "/h"},
			[]string{"rootdirectory: /r", "certificate: /c", "key: /k", "path: /h"}},
		{"zot.json.tmpl", Zot{Root: `/r"x`, Port: 5, Cert: "/c", Key: "/k", Htpasswd: "/h"},
			[]string{`"rootDirectory": "/r\"x"`, `"port": "5"`, `"compat": ["docker2s2"]`, `"cert": "/c"`, `"key": "/k"`, `"path": "/h"`}},
	}
	for _, tt := range tests {
		b, err := Render(tt.tmpl, tt.data)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range tt.want {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s: missing %q in\n%s", tt.tmpl, w, b)
			}
		}
	}
}

// TestWharfConfig checks the gateway.toml contract keys for each shape the
// suite starts.
func TestWharfConfig(t *testing.T) {
	tests := []struct {
		name string
		data Wharf
		want []string
		not  []string
	}{
		{"plain registry", Wharf{DataDir: "/d", HTTP: "127.0.0.1:1", HTTPS: "127.0.0.1:2", Admin: "127.0.0.1:3",
			Sites: []WharfSite{{Host: "127.0.0.1", Backend: "registry", TLS: "off"}}},
			[]string{`data_dir = "/d"`, `tls     = "off"`, "[site.registry]", `host    = "127.0.0.1"`},
			[]string{"[auth]", "cert", "[site.proxy]"}},
		{"tls proxy with auth", Wharf{DataDir: "/d", Htpasswd: "/h",
			Sites: []WharfSite{{Host: "p", Backend: "proxy", TLS: "manual", Cert: "/c", Key: "/k", Upstream: "http://127.0.0.1:9"}}},
			[]string{"[auth]", `htpasswd = "/h"`, `tls     = "manual"`, `cert    = "/c"`, `upstream = "http://127.0.0.1:9"`},
			[]string{"[site.registry]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Render("wharf.toml.tmpl", tt.data)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(b), w) {
					t.Errorf("missing %q in\n%s", w, b)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(string(b), w) {
					t.Errorf("unexpected %q in\n%s", w, b)
				}
			}
		})
	}
}

// TestZotConfigIsJSON checks zot's config parses as JSON whatever the paths
// hold (zot refuses a malformed file at start).
func TestZotConfigIsJSON(t *testing.T) {
	b, err := Render("zot.json.tmpl", Zot{Root: `/tmp/a "b"\c`, Port: 443, Cert: "/c", Key: "/k", Htpasswd: "/h"})
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Storage struct{ RootDirectory string }
		HTTP    struct{ Port string }
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b)
	}
	if v.Storage.RootDirectory != `/tmp/a "b"\c` || v.HTTP.Port != "443" {
		t.Fatalf("parsed %+v from\n%s", v, b)
	}
}
