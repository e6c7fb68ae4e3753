package proxy

import (
	"archive/tar"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// startDockerRegistry runs Debian's docker-registry (distribution 2.8) on a
// loopback port with storage in a temporary folder and returns its URL.
func startDockerRegistry(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Skip("docker-registry not installed (apt-get install docker-registry)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "data"), addr)
	cfgFile := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", cfgFile)
	logFile, _ := os.Create(filepath.Join(dir, "registry.log"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logFile.Close()
	})
	url := "http://" + addr
	for i := 0; ; i++ {
		resp, err := http.Get(url + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		if i > 200 {
			b, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
			t.Fatalf("docker-registry did not start: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func craneBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("crane"); err == nil {
		return p
	}
	for _, p := range []string{filepath.Join(os.Getenv("HOME"), "go", "bin", "crane"), "/root/go/bin/crane"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("crane not installed (go install github.com/google/go-containerregistry/cmd/crane@latest)")
	return ""
}

// randomLayer writes a tar with one file of n random bytes.
func randomLayer(t *testing.T, dir string, n int64) string {
	t.Helper()
	path := filepath.Join(dir, "layer.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	if err := tw.WriteHeader(&tar.Header{Name: "random.bin", Mode: 0o644, Size: n, ModTime: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(tw, rand.Reader, n); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// crane pushes through the proxy (over TLS, verified against the test
// server's certificate) into a real docker-registry and pulls back the
// same bytes.
func TestCraneThroughProxyToDockerRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("real registry test")
	}
	crane := craneBinary(t)
	upstream := startDockerRegistry(t)
	p, err := New(Options{Upstream: upstream, Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	front := httptest.NewTLSServer(p)
	defer front.Close()

	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: front.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"SSL_CERT_FILE=" + caFile, "HOME=" + dir}
	host := strings.TrimPrefix(front.URL, "https://")
	ref := host + "/team/app:v1"

	layer := randomLayer(t, dir, 8<<20)
	run(t, env, crane, "append", "-f", layer, "-t", ref)
	viaProxy := run(t, env, crane, "digest", ref)
	direct := run(t, nil, crane, "digest", "--insecure", strings.TrimPrefix(upstream, "http://")+"/team/app:v1")
	if viaProxy != direct || !strings.HasPrefix(direct, "sha256:") {
		t.Fatalf("digest through proxy %q, direct %q", viaProxy, direct)
	}
	if tags := run(t, env, crane, "ls", host+"/team/app"); tags != "v1" {
		t.Fatalf("tags = %q", tags)
	}

	// Pull the image back through the proxy and compare the layer bytes.
	out := filepath.Join(dir, "pulled.tar")
	run(t, env, crane, "export", ref, out)
	want := fileSum(t, filepath.Join(dir, "layer.tar"), "random.bin")
	got := fileSum(t, out, "random.bin")
	if got != want {
		t.Fatalf("pulled file sha256 %s, pushed %s", got, want)
	}

	// The credentials-free registry answers 404 for a missing manifest;
	// the API header is there.
	resp, err := front.Client().Get(front.URL + "/v2/team/app/manifests/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
		t.Fatalf("missing manifest: %d, header %q", resp.StatusCode, resp.Header.Get("Docker-Distribution-Api-Version"))
	}
}

// fileSum returns the sha256 of member name inside a tar file.
func fileSum(t *testing.T, tarPath, name string) string {
	t.Helper()
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in %s: %v", name, tarPath, err)
		}
		if h.Name == name {
			s := sha256.New()
			if _, err := io.Copy(s, tr); err != nil {
				t.Fatal(err)
			}
			return hex.EncodeToString(s.Sum(nil))
		}
	}
}
