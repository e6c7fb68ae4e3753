package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend/registry"
	"github.com/wharf-dev/wharf/cleanup"
	"github.com/wharf-dev/wharf/internal/testlog"
)

const cleanupBase = "[listen]\nhttp = \":80\"\n[[site]]\nhost = \"r.example\"\nbackend = \"registry\"\ntls = \"off\"\n"

func TestCleanupConfigErrors(t *testing.T) {
	for _, tc := range []struct{ name, toml, want string }{
		{"keeps nothing", cleanupBase + "[[retention]]\nrepos = [\"ci/*\"]\n", "gw.toml:7: this rule keeps no tag at all"},
		{"negative keep_last", cleanupBase + "[[retention]]\nkeep_last = -2\nkeep_tags = [\"v*\"]\n", "gw.toml:8: keep_last must not be negative"},
		{"bad duration", cleanupBase + "[[retention]]\nkeep_last = 1\nkeep_within = \"30 days\"\n", "invalid duration"},
		{"unknown key", cleanupBase + "[[retention]]\nkeep_last = 1\nkeep_newest = 3\n", "gw.toml:9: unknown key \"retention.keep_newest\""},
		{"host of no registry", cleanupBase + "[[retention]]\nhosts = [\"other.example\"]\nkeep_last = 1\n", "gw.toml:8: [[retention]] host \"other.example\" matches no site"},
		{"every too short", cleanupBase + "[gc]\nevery = \"1ms\"\n", "gw.toml:8: every = \"1ms\" is too short"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("gw.toml", []byte(tc.toml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	c, err := ParseConfig("gw.toml", []byte(cleanupBase+"[gc]\nevery = \"24h\"\n[[retention]]\nhosts = [\"r.example\"]\nrepos = [\"ci/*\"]\nkeep_last = 10\nkeep_within = \"720h\"\nkeep_tags = [\"latest\", \"v*\"]\nuntagged_after = \"24h\"\n[[retention]]\nallow_empty = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.GC.Every.Std().Hours() != 24 || len(c.Retention) != 2 || c.Retention[0].KeepLast != 10 || c.Retention[0].UntaggedAfter == nil || !c.Retention[1].AllowEmpty {
		t.Errorf("parsed %+v %+v", c.GC, c.Retention)
	}
}

// TestCleanupJob: each root once; a cache root shared with a registry
// is never evicted; cache roots take the longest max_age.
func TestCleanupJob(t *testing.T) {
	c, err := ParseConfig("/etc/wharf/gw.toml", []byte(`data_dir = "/d"
[listen]
http = ":80"
[[site]]
host = "a.example"
backend = "registry"
tls = "off"
[site.registry]
root = "shared"
[[site]]
host = "b.example"
backend = "registry"
tls = "off"
[site.registry]
root = "shared"
[[site]]
host = "m1.example"
backend = "cache"
tls = "off"
[site.cache]
upstream = "https://u.example"
root = "c"
max_age = "24h"
[[site]]
host = "m2.example"
backend = "cache"
tls = "off"
[site.cache]
upstream = "https://u.example"
root = "c"
max_age = "48h"
`))
	if err != nil {
		t.Fatal(err)
	}
	job := c.CleanupJob()
	want := []cleanup.Site{
		{Host: "a.example", Registry: true, Root: "/d/shared"},
		{Host: "m1.example", Root: "/d/c", MaxAge: 48 * 3600e9},
	}
	same := func(a, b cleanup.Site) bool {
		return a.Host == b.Host && a.Registry == b.Registry && a.Root == b.Root && a.MaxAge == b.MaxAge && a.Open != nil
	}
	if len(job.Sites) != 2 || !same(job.Sites[0], want[0]) || !same(job.Sites[1], want[1]) || job.DataDir != "/d" {
		t.Errorf("job %+v, want sites %+v", job, want)
	}
}

// TestGCReport: GET /gc/report on the admin handler is a dry run of the
// rules, in JSON and as text.
func TestGCReport(t *testing.T) {
	dir := t.TempDir()
	c, err := ParseConfig(filepath.Join(dir, "gw.toml"), []byte(`data_dir = "data"
[listen]
http = ":80"
[[site]]
host = "r.example"
backend = "registry"
tls = "off"
[[retention]]
keep_tags = ["v*"]
`))
	if err != nil {
		t.Fatal(err)
	}
	// two tags in repository x: a goes (no v*), v1 stays
	reg, err := registry.New(t.Context(), registry.Options{Root: filepath.Join(dir, "data", "registry", "r.example")})
	if err != nil {
		t.Fatal(err)
	}
	rs := httptest.NewServer(reg)
	for _, tag := range []string{"a", "v1"} {
		cfg := `{"tag":"` + tag + `"}`
		d := "sha256:" + sha256hex(cfg)
		if res, err := http.Post(rs.URL+"/v2/x/blobs/uploads/?digest="+d, "", strings.NewReader(cfg)); err != nil || res.StatusCode != 201 {
			t.Fatalf("blob: %v %v", res, err)
		}
		m := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + d + `","size":` + itoa(len(cfg)) + `},"layers":[]}`
		req, _ := http.NewRequest("PUT", rs.URL+"/v2/x/manifests/"+tag, strings.NewReader(m))
		req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 201 {
			t.Fatalf("manifest: %v %v", res, err)
		}
	}
	rs.Close()
	reg.Close()
	g, err := New(t.Context(), c, testlog.New(t, zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.AdminHandler())
	defer srv.Close()
	res, err := http.Get(srv.URL + "/gc/report")
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Rules int
		Sites []struct {
			Host  string
			Items []json.RawMessage
		}
	}
	if err := json.NewDecoder(res.Body).Decode(&rep); err != nil || res.StatusCode != 200 {
		t.Fatalf("report: %d %v", res.StatusCode, err)
	}
	res.Body.Close()
	if rep.Rules != 1 || len(rep.Sites) != 1 || rep.Sites[0].Host != "r.example" || len(rep.Sites[0].Items) != 1 {
		t.Errorf("report %+v", rep)
	}
	res, err = http.Get(srv.URL + "/gc/report?format=text")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(b), "would remove: rule 1 (every repository): tag x:a matches no keep_tags, pushed 0s ago\n") || !strings.Contains(string(b), "site r.example") || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("text report: %s", b)
	}
}

func sha256hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestExampleCleanupBlocks: the commented [[retention]] and [[webhook]]
// blocks of gateway.toml.example are valid once uncommented.
func TestExampleCleanupBlocks(t *testing.T) {
	data, err := os.ReadFile("../gateway.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "htpasswd"), nil, 0o600)
	os.WriteFile(filepath.Join(dir, "webhook.secret"), []byte("s\n"), 0o600)
	text := strings.NewReplacer("/etc/wharf/htpasswd", filepath.Join(dir, "htpasswd"), "/etc/wharf/webhook.secret", filepath.Join(dir, "webhook.secret")).Replace(string(data))
	i := strings.Index(text, "# [[retention]]")
	if i < 0 {
		t.Fatal("no [[retention]] block in the example")
	}
	lines := strings.Split(text[i:], "\n")
	for j, l := range lines {
		lines[j] = strings.TrimPrefix(l, "# ")
	}
	c, err := ParseConfig(filepath.Join(dir, "gateway.toml"), []byte(text[:i]+strings.Join(lines, "\n")))
	if err != nil {
		t.Fatalf("example with retention and webhook: %v", err)
	}
	if len(c.Retention) != 1 || len(c.Webhooks) != 1 || c.GC.Every.Std() != 24*time.Hour || c.Retention[0].KeepLast != 10 || c.Webhooks[0].Queue != 1000 {
		t.Errorf("parsed %+v %+v %+v", c.GC, c.Retention, c.Webhooks)
	}
}
