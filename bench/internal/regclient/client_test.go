package regclient

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/wharf-dev/wharf/backend/proxy/proxytest"
)

// TestRoundTripDockerRegistry pushes a blob both ways (streamed PATCH and
// monolithic PUT) and an image to a real registry 2.8, then pulls them
// back and checks what the registry stored.
func TestRoundTripDockerRegistry(t *testing.T) {
	base := proxytest.StartDockerRegistry(t)
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
