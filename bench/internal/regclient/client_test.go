package regclient

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/internal/testpeer"
)

// startDockerRegistry runs Debian's registry 2.8 on a free port, or skips.
func startDockerRegistry(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		testpeer.Missing(t, "docker-registry not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	conf := fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), addr)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", cfg)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for i := 0; i < 200; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "http://" + addr
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatal("docker-registry did not start")
	return ""
}

// TestRoundTripDockerRegistry pushes a blob both ways (streamed PATCH and
// monolithic PUT) and an image to a real registry 2.8, then pulls them
// back and checks what the registry stored.
func TestRoundTripDockerRegistry(t *testing.T) {
	base := startDockerRegistry(t)
	ctx := context.Background()
	c, err := New(Options{Base: base, Conns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if scheme, err := c.Login(ctx, "t/blob"); err != nil || scheme != "none" {
		t.Fatalf("login: %q %v", scheme, err)
	}
	data := bytes.Repeat([]byte("wharf bench "), 300_000)
	d := Digest(data)
	open := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
	if err := c.PushStreamed(ctx, "t/blob", open, d); err != nil {
		t.Fatal(err)
	}
	if err := c.PullBlob(ctx, "t/blob", d, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if err := c.VerifyBlob(ctx, "t/blob", d, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if err := c.PullBlob(ctx, "t/blob", d, int64(len(data))+1); err == nil {
		t.Fatal("pull with wrong expected size: want error")
	}
	if err := c.PushMonolithic(ctx, "t/mono", bytes.NewReader(data), int64(len(data)), d); err != nil {
		t.Fatal(err)
	}
	if err := c.PullBlob(ctx, "t/mono", d, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	// A wrong digest must be refused by the registry, and reported.
	if err := c.PushMonolithic(ctx, "t/mono", bytes.NewReader(data), int64(len(data)), Digest([]byte("x"))); err == nil {
		t.Fatal("push with wrong digest: want error")
	}

	md, descs, err := c.PushImage(ctx, "t/img", "v1", [][]byte{[]byte("layer one"), []byte("layer two")})
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.GetManifest(ctx, "t/img", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if Digest(m) != md {
		t.Fatalf("manifest digest %s, pushed %s", Digest(m), md)
	}
	for _, ds := range descs {
		if !strings.Contains(string(m), ds.Digest) {
			t.Errorf("manifest lacks %s", ds.Digest)
		}
		if err := c.PullBlob(ctx, "t/img", ds.Digest, ds.Size); err != nil {
			t.Error(err)
		}
	}
}
