package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
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
	"github.com/wharf-dev/wharf/cleanup"
)

// TestGCRetention: `wharf gc -dry-run` lists, per rule, the tags and
// manifests it would remove and why, and removes nothing; `wharf gc`
// removes exactly those and gc frees their blobs in the same run; while
// another clean-up holds the data directory's lock, `wharf gc` refuses.
func TestGCRetention(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gateway.toml")
	os.WriteFile(cfg, []byte(`data_dir = "data"
[listen]
http = ":8080"
[[site]]
host = "r.example"
backend = "registry"
tls = "off"
[[retention]]
repos = ["ci/*"]
keep_last = 1
untagged_after = "1h"
`), 0o644)
	root := filepath.Join(dir, "data", "registry", "r.example")
	reg, err := registry.New(context.Background(), registry.Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg)
	defer func() { srv.Close(); reg.Close() }()
	do := func(method, path, ctype string, body []byte) {
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		res, err := http.DefaultClient.Do(req)
		if err != nil || res.StatusCode != http.StatusCreated {
			t.Fatalf("%s %s: %v %v", method, path, res, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	manifests := map[string]digest.Digest{}
	for _, repo := range []string{"ci/app", "keep/app"} {
		for i := 0; i < 3; i++ {
			layer := []byte(fmt.Sprintf("layer %s %d", repo, i))
			do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+digest.FromBytes(layer).String(), "application/octet-stream", layer)
			m, _ := json.Marshal(map[string]any{
				"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
				"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest.FromBytes(layer), "size": len(layer)},
				"layers": []any{},
			})
			manifests[fmt.Sprintf("%s:t%d", repo, i)] = digest.FromBytes(m)
			do("PUT", fmt.Sprintf("/v2/%s/manifests/t%d", repo, i), "application/vnd.oci.image.manifest.v1+json", m)
		}
	}
	past := time.Now().Add(-72 * time.Hour)
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			os.Chtimes(p, past, past)
		}
		return err
	})
	for i := 0; i < 3; i++ { // t2 newest
		at := past.Add(time.Duration(i) * time.Hour)
		os.Chtimes(filepath.Join(root, "repositories", "ci", "app", "_tags", fmt.Sprintf("t%d", i)), at, at)
	}

	var out, errOut bytes.Buffer
	if code := run([]string{"gc", "-config", cfg, "-dry-run"}, nil, &out, &errOut); code != 0 {
		t.Fatalf("gc -dry-run: exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{
		"would remove: rule 1 (repos ci/*): tag ci/app:t0 not in newest 1, pushed 3d ago",
		"would remove: rule 1 (repos ci/*): tag ci/app:t1 not in newest 1, pushed 2d ago",
		"would remove: rule 1 (repos ci/*): manifest ci/app@" + string(manifests["ci/app:t0"]) + " no kept tag reaches it, pushed 3d ago (untagged_after 1h0m0s)",
		"site r.example (" + root + "): retention would remove 2 tags, 2 manifests in 1 repositories with a rule; 0 repositories refused",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "keep/app") {
		t.Errorf("dry run touches a repository no rule matches:\n%s", out.String())
	}
	tags, _ := os.ReadDir(filepath.Join(root, "repositories", "ci", "app", "_tags"))
	if len(tags) != 3 {
		t.Fatalf("dry run removed tags: %d left", len(tags))
	}

	unlock, err := cleanup.Lock(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errOut.Reset()
	if code := run([]string{"gc", "-config", cfg}, nil, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "another gc is running") {
		t.Errorf("gc while locked: exit %d, stderr %s", code, errOut.String())
	}
	unlock()

	out.Reset()
	if code := run([]string{"gc", "-config", cfg}, nil, &out, &errOut); code != 0 {
		t.Fatalf("gc: exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{
		"removed: rule 1 (repos ci/*): tag ci/app:t0 not in newest 1",
		"retention removed 2 tags, 2 manifests",
		"removed 0 manifests, 4 blobs", // t0's and t1's manifest and config
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("gc output lacks %q:\n%s", want, out.String())
		}
	}
	tags, _ = os.ReadDir(filepath.Join(root, "repositories", "ci", "app", "_tags"))
	if len(tags) != 1 || tags[0].Name() != "t2" {
		t.Errorf("tags left: %v", tags)
	}
	if tags, _ := os.ReadDir(filepath.Join(root, "repositories", "keep", "app", "_tags")); len(tags) != 3 {
		t.Errorf("keep/app lost tags: %v", tags)
	}
}
