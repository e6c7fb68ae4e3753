package cache

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/registry"
)

// BenchmarkBlobHit: GET of a cached 4 KiB blob over loopback HTTP, the
// path that records the last use (two stats per hit, a write at most
// once per touch interval).
func BenchmarkBlobHit(b *testing.B) {
	reg, err := registry.New(context.Background(), registry.Options{Root: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	up := httptest.NewServer(reg)
	defer func() { up.Close(); reg.Close() }()
	data := bytes.Repeat([]byte("wharf"), 820)
	d := digest.FromBytes(data)
	res, err := http.Post(up.URL+"/v2/bench/blobs/uploads/?digest="+string(d), "application/octet-stream", bytes.NewReader(data))
	if err != nil || res.StatusCode != http.StatusCreated {
		b.Fatalf("push: %v %v", res, err)
	}
	res.Body.Close()
	c, err := New(context.Background(), Options{Upstream: up.URL, Root: b.TempDir(), MaxAge: 720 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(c)
	defer func() { srv.Close(); c.Close() }()
	url := srv.URL + "/v2/bench/blobs/" + string(d)
	get := func() {
		res, err := srv.Client().Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || n != int64(len(data)) {
			b.Fatalf("GET: %d, %d bytes", res.StatusCode, n)
		}
	}
	get() // the miss
	b.ResetTimer()
	for b.Loop() {
		get()
	}
}
