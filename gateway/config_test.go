package gateway

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name, toml string
		want       string // substring of the error, including file:line
	}{
		{"unknown top key", "data_dir = \"/d\"\nbogus = 1\n", "gw.toml:2: unknown key \"bogus\""},
		{"unknown site key", "[listen]\nhttp = \":80\"\n[[site]]\nhost = \"a.example\"\nbackend = \"registry\"\ntls = \"off\"\n[site.registry]\nrot = \"x\"\n", "gw.toml:8: unknown key \"site.registry.rot\""},
		{"bad duration", "[listen]\nhttp = \":80\"\n[[site]]\nhost = \"m.example\"\nbackend = \"cache\"\ntls = \"off\"\n[site.cache]\nupstream = \"https://u.example\"\nttl = \"7 days\"\n", "invalid duration"},
		{"bad backend", "[listen]\nhttp = \":80\"\n[[site]]\nhost = \"a.example\"\nbackend = \"nginx\"\ntls = \"off\"\n", "gw.toml:5: invalid backend \"nginx\""},
		{"no sites", "data_dir = \"/d\"\n", "no [[site]]"},
		{"duplicate host", "[listen]\nhttp = \":80\"\n[[site]]\nhost = \"a.example\"\nbackend = \"registry\"\ntls = \"off\"\n[[site]]\nhost = \"A.example\"\nbackend = \"registry\"\ntls = \"off\"\n", "gw.toml:8: host \"a.example\" is already served by the site on line 4"},
		{"acme on IP", "[listen]\nhttp = \":80\"\nhttps = \":443\"\n[[site]]\nhost = \"127.0.0.1\"\nbackend = \"registry\"\n", "an IP address cannot get an ACME certificate"},
		{"manual without cert", "[listen]\nhttps = \":443\"\n[[site]]\nhost = \"a.example\"\nbackend = \"registry\"\ntls = \"manual\"\n", "needs cert and key"},
		{"proxy without upstream", "[listen]\nhttp = \":80\"\n[[site]]\nhost = \"a.example\"\nbackend = \"proxy\"\ntls = \"off\"\n", "needs [site.proxy] upstream"},
		{"bad upstream", "[listen]\nhttp = \":80\"\n[[site]]\nhost = \"a.example\"\nbackend = \"proxy\"\ntls = \"off\"\n[site.proxy]\nupstream = \"ftp://x\"\n", "gw.toml:8: invalid upstream"},
		{"bad host", "[listen]\nhttp = \":80\"\n[[site]]\nhost = \"a.example:443\"\nbackend = \"registry\"\ntls = \"off\"\n", "gw.toml:4: invalid host"},
		{"bad listen", "[listen]\nhttp = \"80\"\n[[site]]\nhost = \"a.example\"\nbackend = \"registry\"\ntls = \"off\"\n", "gw.toml:2: invalid listen address"},
		{"syntax", "[listen\nhttp = 1\n", "to end table name"},
		{"wrong type", "[listen]\nhttp = 80\n", "gw.toml"},
		{"mismatched table", "[listen]\nhttp = \":80\"\n[[site]]\nhost = \"a.example\"\nbackend = \"registry\"\ntls = \"off\"\n[site.proxy]\nupstream = \"http://x\"\n", "[site.proxy] given for a site with backend = \"registry\""},
		{"missing htpasswd", "[listen]\nhttp = \":80\"\n[auth]\nhtpasswd = \"/nonexistent/htpasswd\"\n[[site]]\nhost = \"a.example\"\nbackend = \"registry\"\ntls = \"off\"\n", "gw.toml:4: cannot read htpasswd file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("gw.toml", []byte(tt.toml))
			if err == nil {
				t.Fatalf("no error; want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error is %T, want *ConfigError", err)
			}
		})
	}
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig("/etc/wharf/gw.toml", []byte(`
data_dir = "data"
[listen]
http = ":8080"
[[site]]
host = "Registry.Example.com."
backend = "registry"
tls = "off"
[[site]]
host = "mirror.example.com"
backend = "cache"
tls = "off"
[site.cache]
upstream = "https://registry-1.docker.io"
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Sites[0].Host; got != "registry.example.com" {
		t.Errorf("host = %q, want lower case without dot", got)
	}
	if got := c.DataPath(c.Sites[0].Registry.Root); got != "/etc/wharf/data/registry/registry.example.com" {
		t.Errorf("registry root = %q", got)
	}
	if got := c.Sites[1].Cache.TTL.Std(); got != 168*time.Hour {
		t.Errorf("cache ttl = %v", got)
	}
	if c.Sites[0].AuthScheme != "token" || c.Log.Format != "json" || c.Listen.ProgressTimeout.Std() != DefaultProgressTimeout {
		t.Errorf("defaults not applied: %+v", c)
	}
}

// The shipped example must be valid once its files exist.
func TestExampleConfig(t *testing.T) {
	data, err := os.ReadFile("../gateway.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hp := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(hp, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(data), "/etc/wharf/htpasswd", hp, 1)
	c, err := ParseConfig(filepath.Join(dir, "gateway.toml"), []byte(text))
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if len(c.Sites) != 3 || len(c.Policies) != 1 || c.Policies[0].Line == 0 {
		t.Fatalf("example parsed wrong: %d sites, %d policies", len(c.Sites), len(c.Policies))
	}
}

// wharf check parses the htpasswd file, so a bad line shows up before the
// first login does.
func TestConfigChecksHtpasswdContent(t *testing.T) {
	dir := t.TempDir()
	hp := filepath.Join(dir, "htpasswd")
	os.WriteFile(hp, []byte("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"), 0o600)
	_, err := ParseConfig(filepath.Join(dir, "gw.toml"), []byte("[listen]\nhttp = \":80\"\n[auth]\nhtpasswd = \"htpasswd\"\n[[site]]\nhost = \"a.example\"\nbackend = \"registry\"\ntls = \"off\"\n"))
	if err == nil || !strings.Contains(err.Error(), hp+":1:") {
		t.Fatalf("want a file:line error for a SHA1 htpasswd line, got %v", err)
	}
}

// [site.cache] max_age: optional (0 = never evict), a Go duration, never
// negative; problems point at the key's line.
func TestCacheMaxAge(t *testing.T) {
	const head = "[listen]\nhttp = \":80\"\n[[site]]\nhost = \"m.example\"\nbackend = \"cache\"\ntls = \"off\"\n[site.cache]\nupstream = \"https://u.example\"\n"
	tests := []struct {
		name, line string
		want       time.Duration
		err        string // substring of the error, with file:line
	}{
		{"absent", "", 0, ""},
		{"zero", "max_age = \"0s\"\n", 0, ""},
		{"thirty days", "max_age = \"720h\"\n", 720 * time.Hour, ""},
		{"minutes", "max_age = \"90m\"\n", 90 * time.Minute, ""},
		{"negative", "max_age = \"-1h\"\n", 0, "gw.toml:9: negative duration \"-1h\""},
		{"words", "max_age = \"30 days\"\n", 0, "gw.toml:9: invalid duration \"30 days\""},
		{"number", "max_age = 3600\n", 0, "gw.toml"},
		{"misspelt", "maxage = \"1h\"\n", 0, "gw.toml:9: unknown key \"site.cache.maxage\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig("gw.toml", []byte(head+tt.line))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Sites[0].Cache.MaxAge.Std(); got != tt.want {
				t.Fatalf("max_age = %v, want %v", got, tt.want)
			}
		})
	}
	// A config built in code (not parsed) is checked by Validate too.
	c, err := ParseConfig("gw.toml", []byte(head+"max_age = \"1h\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	c.Sites[0].Cache.MaxAge = Duration(-time.Hour)
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "gw.toml:9: negative max_age") {
		t.Fatalf("Validate with a negative max_age: %v", err)
	}
}
