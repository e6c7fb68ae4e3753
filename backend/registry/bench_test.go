package registry

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	digest "github.com/opencontainers/go-digest"
)

// Benchmarks for the figures of issue #2, on a real loopback TCP server:
//
//	go test ./backend/registry -run '^$' -bench . -benchtime 1x -count 5
//
// WHARF_BENCH_SIZE sets the blob size in bytes (default 1 GiB). The
// baselines (one core's sha256, a plain file served with sendfile) run in
// the same process so the ratios mean something on any machine.

func benchSize() int64 {
	if s := os.Getenv("WHARF_BENCH_SIZE"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 {
			return n
		}
	}
	return 1 << 30
}

// patternReader yields size bytes of a repeated random 1 MiB block whose
// first 8 bytes carry seed, so every seed gives a different digest.
type patternReader struct {
	block []byte
	left  int64
	pos   int
}

func newPattern(size int64, seed uint64) *patternReader {
	b := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	for i := 0; i < 8; i++ {
		b[i] = byte(seed >> (8 * i))
	}
	return &patternReader{block: b, left: size}
}

func (p *patternReader) Read(buf []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	n := copy(buf, p.block[p.pos:])
	if int64(n) > p.left {
		n = int(p.left)
	}
	p.pos = (p.pos + n) % len(p.block)
	p.left -= int64(n)
	return n, nil
}

func patternDigest(size int64, seed uint64) digest.Digest {
	h := sha256.New()
	_, _ = io.Copy(h, newPattern(size, seed))
	return digest.NewDigest(digest.SHA256, h)
}

func benchServer(b *testing.B, o Options) (*Registry, *httptest.Server) {
	b.Helper()
	o.Root, o.Delete = b.TempDir(), true
	reg, err := New(context.Background(), o)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(reg)
	b.Cleanup(func() { srv.Close(); reg.Close() })
	return reg, srv
}

// pushBlob does what docker push does for a layer: POST, one streamed
// PATCH, PUT ?digest=.
func pushBlob(c *http.Client, base, repo string, body io.Reader, d digest.Digest) error {
	resp, err := c.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("POST: %s", resp.Status)
	}
	loc := resp.Header.Get("Location")
	req, _ := http.NewRequest(http.MethodPatch, base+loc, body)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("PATCH: %s", resp.Status)
	}
	req, _ = http.NewRequest(http.MethodPut, base+resp.Header.Get("Location")+"?digest="+string(d), nil)
	resp, err = c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT: %s", resp.Status)
	}
	return nil
}

func BenchmarkPushBlob(b *testing.B) { benchPush(b, Options{}) }

// BenchmarkPushBlobSynced is the price of Options.SyncBlobs (fsync of
// every blob before it becomes visible).
func BenchmarkPushBlobSynced(b *testing.B) { benchPush(b, Options{SyncBlobs: true}) }

// BenchmarkPushBlobDirect writes uploads with O_DIRECT.
func BenchmarkPushBlobDirect(b *testing.B) { benchPush(b, Options{DirectIO: true}) }

func benchPush(b *testing.B, o Options) {
	size := benchSize()
	_, srv := benchServer(b, o)
	c := srv.Client()
	b.SetBytes(size)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		seed := uint64(i) + 1
		d := patternDigest(size, seed)
		syscall.Sync() // start without the last push's dirty pages (the kernel throttles writers past dirty_background_ratio)
		b.StartTimer()
		if err := pushBlob(c, srv.URL, "bench/push", newPattern(size, seed), d); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPullBlob(b *testing.B) {
	size := benchSize()
	_, srv := benchServer(b, Options{})
	c := srv.Client()
	d := patternDigest(size, 7)
	if err := pushBlob(c, srv.URL, "bench/pull", newPattern(size, 7), d); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := c.Get(srv.URL + "/v2/bench/pull/blobs/" + string(d))
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n != size {
			b.Fatalf("pulled %d bytes, want %d", n, size)
		}
	}
}

// BenchmarkBaselineSendfile serves a plain file with http.ServeContent:
// the ceiling for BenchmarkPullBlob.
func BenchmarkBaselineSendfile(b *testing.B) {
	size := benchSize()
	p := filepath.Join(b.TempDir(), "plain")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(f, newPattern(size, 3)); err != nil {
		b.Fatal(err)
	}
	f.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, p)
	}))
	defer srv.Close()
	c := srv.Client()
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := c.Get(srv.URL + "/")
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// BenchmarkBaselineSHA256 is one core's sha256 speed over the same number
// of bytes as the blob benchmarks: push can at best approach it.
func BenchmarkBaselineSHA256(b *testing.B) {
	size := benchSize()
	buf := newPattern(1<<20, 1).block
	b.SetBytes(size)
	for i := 0; i < b.N; i++ {
		h := sha256.New()
		for n := int64(0); n < size; n += int64(len(buf)) {
			h.Write(buf)
		}
		h.Sum(nil)
	}
}

func BenchmarkManifestHead(b *testing.B) {
	_, srv := benchServer(b, Options{})
	c := srv.Client()
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	cd := digest.FromBytes(cfg)
	if err := pushBlob(c, srv.URL, "bench/m", bytesReader(cfg), cd); err != nil {
		b.Fatal(err)
	}
	man := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[]}`, cd, len(cfg))
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v2/bench/m/manifests/latest", bytesReader([]byte(man)))
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := c.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		b.Fatal(err, resp)
	}
	resp.Body.Close()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodHead, srv.URL+"/v2/bench/m/manifests/latest", nil)
			req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
			resp, err := c.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatal(resp.Status)
			}
		}
	})
}

func bytesReader(b []byte) io.Reader { return &patternReader{block: b, left: int64(len(b))} }
