package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/cache"
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

// TestGCCache runs `wharf gc` on a config with a cache site (max_age 24h)
// whose cache holds two images pulled through a real cache from a real
// upstream: both are two days old, one was pulled again since. -dry-run
// lists the unused image and removes nothing; a real run removes it and
// keeps the other. A cache site without max_age is left alone, and a
// cache root that is a registry's root is refused.
func TestGCCache(t *testing.T) {
	dir := t.TempDir()
	upReg, err := registry.New(context.Background(), registry.Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(upReg)
	defer func() { up.Close(); upReg.Close() }()
	put := func(method, path, ctype string, body []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, up.URL+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		res, err := http.DefaultClient.Do(req)
		if err != nil || res.StatusCode != http.StatusCreated {
			t.Fatalf("%s %s: %v %v", method, path, res, err)
		}
		res.Body.Close()
	}
	type img struct {
		manifest digest.Digest
		blobs    []digest.Digest
		bytes    int
	}
	pushImage := func(repo, seed string) img {
		var im img
		var descs []string
		for i, data := range []string{`{"architecture":"amd64","os":"linux","seed":"` + seed + `"}`, "layer of " + seed} {
			d := digest.FromString(data)
			put("POST", "/v2/"+repo+"/blobs/uploads/?digest="+string(d), "application/octet-stream", []byte(data))
			im.blobs = append(im.blobs, d)
			im.bytes += len(data)
			mt := "application/vnd.oci.image.layer.v1.tar"
			if i == 0 {
				mt = "application/vnd.oci.image.config.v1+json"
			}
			descs = append(descs, fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d}`, mt, d, len(data)))
		}
		m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}`, descs[0], descs[1])
		put("PUT", "/v2/"+repo+"/manifests/v1", "application/vnd.oci.image.manifest.v1+json", []byte(m))
		im.manifest = digest.FromString(m)
		im.bytes += len(m)
		return im
	}
	unused, used := pushImage("team/unused", "a"), pushImage("team/used", "b")

	cfg := filepath.Join(dir, "gateway.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir = \"data\"\n[listen]\nhttp = \":8080\"\n[[site]]\nhost = \"m.example\"\nbackend = \"cache\"\ntls = \"off\"\n[site.cache]\nupstream = %q\nmax_age = \"24h\"\n[[site]]\nhost = \"n.example\"\nbackend = \"cache\"\ntls = \"off\"\n[site.cache]\nupstream = %q\n", up.URL, up.URL)), 0o644)
	root := filepath.Join(dir, "data", "cache", "m.example")
	c, err := cache.New(context.Background(), cache.Options{Upstream: up.URL, Root: root, MaxAge: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	mirror := httptest.NewServer(c)
	defer func() { mirror.Close(); c.Close() }()
	pull := func(repo string, im img) {
		t.Helper()
		for _, p := range append([]string{"/v2/" + repo + "/manifests/v1"}, "/v2/"+repo+"/blobs/"+string(im.blobs[0]), "/v2/"+repo+"/blobs/"+string(im.blobs[1])) {
			req, _ := http.NewRequest("GET", mirror.URL+p, nil)
			req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json")
			res, err := http.DefaultClient.Do(req)
			if err != nil || res.StatusCode != http.StatusOK {
				t.Fatalf("pull %s: %v %v", p, res, err)
			}
			res.Body.Close()
		}
	}
	pull("team/unused", unused)
	pull("team/used", used)
	past := time.Now().Add(-48 * time.Hour)
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			os.Chtimes(p, past, past)
		}
		return err
	})
	pull("team/used", used)
	blobFile := func(d digest.Digest) string {
		return filepath.Join(root, "blobs", "sha256", d.Encoded()[:2], d.Encoded())
	}
	all := append(append([]digest.Digest{unused.manifest, used.manifest}, unused.blobs...), used.blobs...)

	var out, errOut bytes.Buffer
	if code := run([]string{"gc", "-config", cfg, "-dry-run"}, nil, &out, &errOut); code != 0 {
		t.Fatalf("gc -dry-run: exit %d: %s", code, errOut.String())
	}
	summary := fmt.Sprintf("1 tags, 1 manifests, 3 blobs (%d bytes), 2 repository links not used for 24h0m0s; 3 blobs (%d bytes) kept", unused.bytes, used.bytes)
	for _, want := range []string{
		"would remove tag team/unused:v1 (last used ",
		"would remove manifest team/unused@" + string(unused.manifest),
		"would remove blob " + string(unused.blobs[1]) + " (" + fmt.Sprint(len("layer of a")) + " bytes, last used " + past.UTC().Format(time.RFC3339) + ")",
		"site m.example (" + root + "): would remove " + summary,
		"site n.example (" + filepath.Join(dir, "data", "cache", "n.example") + "): cache without max_age or max_size; nothing evicted",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "team/used") {
		t.Errorf("dry run lists the image in use:\n%s", out.String())
	}
	for _, d := range all {
		if _, err := os.Stat(blobFile(d)); err != nil {
			t.Fatalf("dry run removed %s: %v", d, err)
		}
	}

	out.Reset()
	if code := run([]string{"gc", "-config", cfg}, nil, &out, &errOut); code != 0 {
		t.Fatalf("gc: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "site m.example ("+root+"): removed "+summary) || !strings.Contains(out.String(), "removed blob "+string(unused.blobs[0])) {
		t.Errorf("gc output:\n%s", out.String())
	}
	for _, d := range all {
		_, err := os.Stat(blobFile(d))
		if gone := os.IsNotExist(err); gone != (d == unused.manifest || d == unused.blobs[0] || d == unused.blobs[1]) {
			t.Errorf("blob %s: gone %v (%v)", d, gone, err)
		}
	}
	if ents, err := os.ReadDir(filepath.Join(root, "repositories", "team", "unused")); err != nil || len(ents) != 0 {
		t.Errorf("the unused repository's records are still there: %v %v", ents, err)
	}

	onlyUnset := filepath.Join(dir, "unset.toml")
	os.WriteFile(onlyUnset, []byte(fmt.Sprintf("[listen]\nhttp = \":8080\"\n[[site]]\nhost = \"m.example\"\nbackend = \"cache\"\ntls = \"off\"\n[site.cache]\nupstream = %q\n", up.URL)), 0o644)
	clash := filepath.Join(dir, "clash.toml")
	os.WriteFile(clash, []byte(fmt.Sprintf("data_dir = \"data\"\n[listen]\nhttp = \":8080\"\n[[site]]\nhost = \"r.example\"\nbackend = \"registry\"\ntls = \"off\"\n[site.registry]\nroot = \"shared\"\n[[site]]\nhost = \"m.example\"\nbackend = \"cache\"\ntls = \"off\"\n[site.cache]\nupstream = %q\nroot = \"shared\"\nmax_age = \"1h\"\n", up.URL)), 0o644)
	for _, tt := range []struct {
		cfg, errOut string
	}{
		{onlyUnset, "no site with backend = \"registry\" and no cache site with max_age"},
		{clash, "clash.toml:16: storage root " + filepath.Join(dir, "data", "shared") + " is also the root of registry site r.example (line 4)"},
	} {
		var out, errOut bytes.Buffer
		if code := run([]string{"gc", "-config", tt.cfg}, nil, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), tt.errOut) {
			t.Errorf("wharf gc -config %s: exit %d, stderr %q; want 1, %q", tt.cfg, code, errOut.String(), tt.errOut)
		}
	}
}
