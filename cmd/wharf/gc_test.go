package main

import (
	"bytes"
	"context"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/registry"
)

// TestGC runs `wharf gc` on a config whose registry site holds an old
// unreferenced blob and a fresh one: -dry-run lists the old one and keeps
// it, a real run removes it and prints the same line and a summary.
func TestGC(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gateway.toml")
	os.WriteFile(cfg, []byte("data_dir = \"data\"\n[listen]\nhttp = \":8080\"\n[[site]]\nhost = \"r.example\"\nbackend = \"registry\"\ntls = \"off\"\n[[site]]\nhost = \"p.example\"\nbackend = \"proxy\"\ntls = \"off\"\n[site.proxy]\nupstream = \"http://127.0.0.1:1\"\n"), 0o644)
	root := filepath.Join(dir, "data", "registry", "r.example")
	reg, err := registry.New(context.Background(), registry.Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg)
	defer func() { srv.Close(); reg.Close() }()
	push := func(data string) digest.Digest {
		d := digest.FromString(data)
		res, err := http.Post(srv.URL+"/v2/r/blobs/uploads/?digest="+string(d), "application/octet-stream", strings.NewReader(data))
		if err != nil || res.StatusCode != http.StatusCreated {
			t.Fatalf("push: %v %v", res, err)
		}
		res.Body.Close()
		return d
	}
	old := push("old garbage")
	past := time.Now().Add(-2 * time.Hour)
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			os.Chtimes(p, past, past)
		}
		return err
	})
	young := push("young garbage")
	blobFile := func(d digest.Digest) string {
		return filepath.Join(root, "blobs", "sha256", d.Encoded()[:2], d.Encoded())
	}

	var out, errOut bytes.Buffer
	if code := run([]string{"gc", "-config", cfg, "-dry-run"}, nil, &out, &errOut); code != 0 {
		t.Fatalf("gc -dry-run: exit %d: %s", code, errOut.String())
	}
	line := "would remove blob " + string(old) + " (11 bytes)"
	if !strings.Contains(out.String(), line) || strings.Contains(out.String(), string(young)) || !strings.Contains(out.String(), "would remove 0 manifests, 1 blobs (11 bytes), 1 repository links") {
		t.Errorf("dry run output:\n%s", out.String())
	}
	if _, err := os.Stat(blobFile(old)); err != nil {
		t.Fatalf("dry run removed the blob: %v", err)
	}
	out.Reset()
	if code := run([]string{"gc", "-config", cfg}, nil, &out, &errOut); code != 0 {
		t.Fatalf("gc: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "removed blob "+string(old)+" (11 bytes)") || !strings.Contains(out.String(), "site r.example") || !strings.Contains(out.String(), "removed 0 manifests, 1 blobs (11 bytes), 1 repository links; 1 blobs kept") {
		t.Errorf("gc output:\n%s", out.String())
	}
	if _, err := os.Stat(blobFile(old)); !os.IsNotExist(err) {
		t.Errorf("old blob still there: %v", err)
	}
	if _, err := os.Stat(blobFile(young)); err != nil {
		t.Errorf("young blob gone: %v", err)
	}

	noReg := filepath.Join(dir, "proxy.toml")
	os.WriteFile(noReg, []byte("[listen]\nhttp = \":8080\"\n[[site]]\nhost = \"p.example\"\nbackend = \"proxy\"\ntls = \"off\"\n[site.proxy]\nupstream = \"http://127.0.0.1:1\"\n"), 0o644)
	tests := []struct {
		args   []string
		code   int
		errOut string
	}{
		{[]string{"gc"}, 2, "-config is required"},
		{[]string{"gc", "-config", cfg, "-grace", "-1h"}, 2, "-grace must not be negative"},
		{[]string{"gc", "-config", cfg, "-grace", "soon"}, 2, "invalid value"},
		{[]string{"gc", "-config", filepath.Join(dir, "absent.toml")}, 1, "absent.toml"},
		{[]string{"gc", "-config", noReg}, 1, "no site with backend = \"registry\""},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		if code := run(tt.args, nil, &out, &errOut); code != tt.code || !strings.Contains(errOut.String(), tt.errOut) {
			t.Errorf("wharf %v: exit %d, stderr %q; want %d, %q", tt.args, code, errOut.String(), tt.code, tt.errOut)
		}
	}
}
