package gateway

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wharf-dev/wharf/acme/acmetest"
)

// `wharf check` catches the TLS, listener and proxy mistakes with file:line.
func TestCheckTLSConfig(t *testing.T) {
	dir := t.TempDir()
	cert, key, _ := acmetest.SelfSigned(t, dir, "a-", "a.example")
	otherCert, _, _ := acmetest.SelfSigned(t, dir, "b-", "a.example")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	site := func(extra string) string {
		return "[listen]\nhttp = \":80\"\nhttps = \":443\"\n[[site]]\nhost = \"a.example\"\nbackend = \"registry\"\n" + extra
	}
	for _, tc := range []struct {
		name, toml, want string
	}{
		{"ok manual", site(fmt.Sprintf("tls = \"manual\"\ncert = %q\nkey = %q\n", cert, key)), ""},
		{"ok acme", site(""), ""},
		{"cert and key mismatch", site(fmt.Sprintf("tls = \"manual\"\ncert = %q\nkey = %q\n", otherCert, key)), "gw.toml:8: host \"a.example\": loading cert"},
		{"cert not PEM", site(fmt.Sprintf("tls = \"manual\"\ncert = %q\nkey = %q\n", garbage, key)), "gw.toml:8:"},
		{"cert missing", site(fmt.Sprintf("tls = \"manual\"\ncert = %q\nkey = %q\n", filepath.Join(dir, "nope.pem"), key)), "gw.toml:8: cannot read cert"},
		{"acme for an IP", strings.Replace(site(""), "a.example", "192.0.2.7", 1), "an IP address cannot get an ACME certificate"},
		{"acme without https", "[listen]\nhttp = \":80\"\n[[site]]\nhost = \"a.example\"\nbackend = \"registry\"\n", "needs [listen] https"},
		{"unknown challenge", "[acme]\nchallenges = [\"dns-01\"]\n" + site(""), "gw.toml:2: invalid ACME challenge \"dns-01\": want \"http-01\" or \"tls-alpn-01\""},
		{"no challenge", "[acme]\nchallenges = []\n" + site(""), "gw.toml:2: no ACME challenge left"},
		{"http-01 without http", "[acme]\nchallenges = [\"http-01\"]\n[listen]\nhttps = \":443\"\n[[site]]\nhost = \"a.example\"\nbackend = \"registry\"\n", "http-01 needs [listen] http"},
		{"same address", "[listen]\nhttp = \":8080\"\nhttps = \":8080\"\n[[site]]\nhost = \"a.example\"\nbackend = \"registry\"\n", "listen on the same address"},
		{"negative max_conns", "[listen]\nhttp = \":80\"\nmax_conns = -1\n[[site]]\nhost = \"a.example\"\nbackend = \"registry\"\ntls = \"off\"\n", "gw.toml:3: must be positive"},
		{"bad progress timeout", "[listen]\nhttp = \":80\"\nprogress_timeout = \"soon\"\n[[site]]\nhost = \"a.example\"\nbackend = \"registry\"\ntls = \"off\"\n", "invalid duration"},
		{"proxy upstream with path", "[listen]\nhttp = \":80\"\n[[site]]\nhost = \"a.example\"\nbackend = \"proxy\"\ntls = \"off\"\n[site.proxy]\nupstream = \"http://127.0.0.1:5000/v2/\"\n", "gw.toml:8: invalid upstream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("gw.toml", []byte(tc.toml))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("no error, want %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// The shipped example passes `wharf check` apart from files that only
// exist on a real server.
func TestExampleConfigKeys(t *testing.T) {
	data, err := os.ReadFile("../gateway.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	_, err = ParseConfig("gateway.toml.example", data)
	if err == nil {
		return
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		if strings.Contains(line, "unknown key") || strings.Contains(line, "invalid") {
			t.Errorf("example config: %s", line)
		}
	}
}
