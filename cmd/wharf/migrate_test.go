package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMigrateStorageUsage: wrong use of `wharf migrate-storage` ends with
// exit 2 (flags) or 1 (the config cannot be migrated) and a message
// saying what to do, before any storage is opened or created.
func TestMigrateStorageUsage(t *testing.T) {
	dir := t.TempDir()
	const head = "data_dir = \"DATA\"\n[listen]\nhttp = \"127.0.0.1:0\"\n[[site]]\nhost = \"r.example\"\nbackend = \"registry\"\ntls = \"off\"\n[site.registry]\n"
	withS3 := head + "[site.registry.s3]\nbucket = \"wharf\"\nendpoint = \"http://127.0.0.1:9\"\npath_style = true\n"
	tests := []struct {
		name, config string
		args         []string
		code         int
		msg          string
	}{
		{"no -to", withS3, []string{"-site", "r.example"}, 2, "-site and -to (s3 or filesystem) are required"},
		{"bad -to", withS3, []string{"-site", "r.example", "-to", "gcs"}, 2, "-site and -to"},
		{"no -site", withS3, []string{"-to", "s3"}, 2, "-site and -to"},
		{"bad -workers", withS3, []string{"-site", "r.example", "-to", "s3", "-workers", "0"}, 2, "-workers must be at least 1"},
		{"unknown site", withS3, []string{"-site", "other.example", "-to", "s3"}, 1, `no site with host = "other.example" and backend = "registry" (registry sites: [r.example])`},
		{"no s3 table", head, []string{"-site", "r.example", "-to", "s3"}, 1, "has no [site.registry.s3] table"},
		{"no root to copy", withS3, []string{"-site", "r.example", "-to", "s3"}, 1, "is not a wharf registry root (no blobs folder): nothing to copy"},
		{"root of another site", head + "storage = \"s3\"\n" + strings.TrimPrefix(withS3, head) + "[[site]]\nhost = \"m.example\"\nbackend = \"cache\"\ntls = \"off\"\n[site.cache]\nupstream = \"https://r.example\"\nroot = \"registry/r.example/c\"\n",
			[]string{"-site", "r.example", "-to", "filesystem"}, 1, "overlaps the root DATA/registry/r.example/c of site m.example: give the site its own root"},
		{"broken config", withS3 + "storage = 5\n", []string{"-site", "r.example", "-to", "s3"}, 1, "gw.toml:"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := filepath.Join(dir, "data", tt.name)
			path := filepath.Join(dir, "gw.toml")
			if err := os.WriteFile(path, []byte(strings.ReplaceAll(tt.config, "DATA", data)), 0o644); err != nil {
				t.Fatal(err)
			}
			var out, errOut bytes.Buffer
			code := run(append([]string{"migrate-storage", "-config", path}, tt.args...), nil, &out, &errOut)
			if msg := strings.ReplaceAll(tt.msg, "DATA", data); code != tt.code || !strings.Contains(errOut.String(), msg) {
				t.Fatalf("case %d: exit %d, stderr %q; want exit %d with %q", i, code, errOut.String(), tt.code, tt.msg)
			}
			if _, err := os.Stat(data); err == nil {
				t.Fatalf("a failed migrate-storage created %s", data)
			}
		})
	}
}
