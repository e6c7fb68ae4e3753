package proxy

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend/proxy/proxytest"
	"github.com/wharf-dev/wharf/internal/testlog"
)

// crane pushes through the proxy (over TLS, verified against the test
// server's certificate) into a real docker-registry and pulls back the
// same bytes.
func TestCraneThroughProxyToDockerRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("real registry test")
	}
	crane := proxytest.CraneBinary(t)
	upstream := proxytest.StartDockerRegistry(t)
	p, err := New(Options{Upstream: upstream, Log: testlog.New(t, zerolog.TraceLevel)})
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

	layer := proxytest.RandomLayer(t, dir, 8<<20)
	proxytest.Run(t, env, crane, "append", "-f", layer, "-t", ref)
	viaProxy := proxytest.Run(t, env, crane, "digest", ref)
	direct := proxytest.Run(t, nil, crane, "digest", "--insecure", strings.TrimPrefix(upstream, "http://")+"/team/app:v1")
	if viaProxy != direct || !strings.HasPrefix(direct, "sha256:") {
		t.Fatalf("digest through proxy %q, direct %q", viaProxy, direct)
	}
	if tags := proxytest.Run(t, env, crane, "ls", host+"/team/app"); tags != "v1" {
		t.Fatalf("tags = %q", tags)
	}

	// Pull the image back through the proxy and compare the layer bytes.
	out := filepath.Join(dir, "pulled.tar")
	proxytest.Run(t, env, crane, "export", ref, out)
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
