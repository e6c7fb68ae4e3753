package gateway

import (
	"strings"
	"testing"
)

// TestRegistryS3Config: [site.registry] storage = "s3" with its table is
// parsed, defaulted and checked offline; problems name the key's line.
func TestRegistryS3Config(t *testing.T) {
	const head = "[listen]\nhttp = \":80\"\n[[site]]\nhost = \"r.example\"\nbackend = \"registry\"\ntls = \"off\"\n[site.registry]\n"
	tests := []struct {
		name, body string
		err        string // substring of the error, with file:line; "" = valid
		local      bool   // valid, still served from the file system (a migrate-storage target)
	}{
		{"s3", "storage = \"s3\"\n[site.registry.s3]\nbucket = \"wharf\"\nendpoint = \"http://127.0.0.1:7070\"\npath_style = true\n", "", false},
		{"no bucket", "storage = \"s3\"\n[site.registry.s3]\nregion = \"eu-west-1\"\n", "gw.toml:9: storage = \"s3\" needs [site.registry.s3] bucket", false},
		{"no table", "storage = \"s3\"\n", "needs [site.registry.s3] bucket", false},
		{"bad storage", "storage = \"gcs\"\n", "gw.toml:8: invalid storage \"gcs\"", false},
		{"table without storage: a migration target", "[site.registry.s3]\nbucket = \"wharf\"\n", "", true},
		{"migration target checked too", "storage = \"filesystem\"\n[site.registry.s3]\nbucket = \"Bad_Bucket\"\n", "gw.toml:10: invalid bucket name", false},
		{"bad endpoint", "storage = \"s3\"\n[site.registry.s3]\nbucket = \"wharf\"\nendpoint = \"s3.example\"\n", "gw.toml:11: invalid endpoint", false},
		{"key file missing", "storage = \"s3\"\n[site.registry.s3]\nbucket = \"wharf\"\naccess_key_file = \"/nonexistent/a\"\nsecret_key_file = \"/nonexistent/s\"\n", "gw.toml:11:", false},
		{"sse-kms and redirect", "storage = \"s3\"\n[site.registry.s3]\nbucket = \"wharf\"\nsse = \"aws:kms\"\nsse_kms_key_id = \"alias/wharf\"\nredirect = true\nredirect_expiry = \"5m\"\n", "", false},
		{"bad redirect_expiry", "storage = \"s3\"\n[site.registry.s3]\nbucket = \"wharf\"\nredirect_expiry = \"10ms\"\n", "gw.toml:11: redirect_expiry 10ms out of range", false},
		{"misspelt", "storage = \"s3\"\n[site.registry.s3]\nbucket = \"wharf\"\npathstyle = true\n", "unknown key \"site.registry.s3.pathstyle\"", false},
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
			s3 := c.Sites[0].Registry.S3
			if s3.Prefix != "r.example" || s3.Region != "us-east-1" {
				t.Fatalf("defaults not applied: %+v", s3)
			}
			p := c.Plan()[0]
			if tt.local {
				if p.Root == "" || p.Location() != p.Root {
					t.Fatalf("a file system site with a bucket: root %q location %q", p.Root, p.Location())
				}
				return
			}
			if p.Root != "" || p.Location() != "s3://wharf/r.example" {
				t.Fatalf("plan: root %q location %q", p.Root, p.Location())
			}
		})
	}
}

// TestClusterSharedDir: the token key and ACME storage move to
// [cluster] shared_dir when it is set.
func TestClusterSharedDir(t *testing.T) {
	const site = "[listen]\nhttp = \":80\"\n[[site]]\nhost = \"r.example\"\nbackend = \"registry\"\ntls = \"off\"\n"
	c, err := ParseConfig("/etc/wharf/gw.toml", []byte("data_dir = \"/var/lib/wharf\"\n"+site))
	if err != nil {
		t.Fatal(err)
	}
	if got := authConfig(c).KeyFile; got != "/var/lib/wharf/auth/token.key" {
		t.Fatalf("token key without shared_dir: %s", got)
	}
	c, err = ParseConfig("/etc/wharf/gw.toml", []byte("data_dir = \"/var/lib/wharf\"\n[cluster]\nshared_dir = \"/mnt/shared\"\n"+site))
	if err != nil {
		t.Fatal(err)
	}
	if got := authConfig(c).KeyFile; got != "/mnt/shared/auth/token.key" {
		t.Fatalf("token key with shared_dir: %s", got)
	}
	if got := c.acmeConfig(":80", ":443").DataDir; got != "/mnt/shared" {
		t.Fatalf("acme data dir with shared_dir: %s", got)
	}
}

// TestCacheS3Config: [site.cache] storage = "s3" takes the registry's s3
// table; the plan has no root, names the bucket prefix as the location,
// and the cleanup job evicts it there once, as a remote site, with the
// limits of every site on that prefix (no max_age if one has none).
func TestCacheS3Config(t *testing.T) {
	const cfg = "[listen]\nhttp = \":80\"\n[[site]]\nhost = \"m.example\"\nbackend = \"cache\"\ntls = \"off\"\n[site.cache]\nupstream = \"https://r.example\"\nmax_age = \"720h\"\nstorage = \"s3\"\n[site.cache.s3]\nbucket = \"wharf\"\nendpoint = \"http://127.0.0.1:7070\"\n" +
		"[[site]]\nhost = \"m2.example\"\nbackend = \"cache\"\ntls = \"off\"\n[site.cache]\nupstream = \"https://r.example\"\nmax_size = \"1GiB\"\nstorage = \"s3\"\n[site.cache.s3]\nbucket = \"wharf\"\nprefix = \"m.example\"\nendpoint = \"http://127.0.0.1:7070\"\n"
	c, err := ParseConfig("gw.toml", []byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if s3 := c.Sites[0].Cache.S3; s3.Prefix != "m.example" || s3.Region != "us-east-1" {
		t.Fatalf("defaults not applied: %+v", s3)
	}
	p := c.Plan()[0]
	if p.Root != "" || p.Location() != "s3://wharf/m.example" {
		t.Fatalf("plan: root %q location %q", p.Root, p.Location())
	}
	job := c.CleanupJob()
	if len(job.Sites) != 1 {
		t.Fatalf("two cache sites on one prefix are one cleanup site, got %+v", job.Sites)
	}
	s := job.Sites[0]
	if s.Registry || !s.Remote || s.Root != "s3://wharf/m.example" || s.MaxAge != 0 || s.MaxSize != 1<<30 {
		t.Fatalf("cleanup site %+v", s)
	}
}
