package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wharf-dev/wharf/bench/internal/procstat"
	"github.com/wharf-dev/wharf/bench/internal/regclient"
)

const (
	mb  = 1e6     // MB/s figures are decimal, as Go's benchmarks print them
	gib = 1 << 30 // CPU cost is per binary GiB
	mib = 1 << 20
)

// Blob is the cached random test blob.
type Blob struct {
	Path   string
	Size   int64
	Digest string
}

// ensureBlob returns the cached blob of size bytes under dir, generating
// it (pseudo-random bytes, so no compression or dedup helps anyone) when
// it is missing or of the wrong size.
func ensureBlob(dir string, size int64) (*Blob, error) {
	bdir := filepath.Join(dir, "blob")
	if err := os.MkdirAll(bdir, 0o755); err != nil {
		return nil, fmt.Errorf("blob dir: %w", err)
	}
	path := filepath.Join(bdir, fmt.Sprintf("blob-%dMiB.bin", size/mib))
	sumPath := path + ".sha256"
	if fi, err := os.Stat(path); err == nil && fi.Size() == size {
		if d, err := os.ReadFile(sumPath); err == nil && strings.HasPrefix(string(d), "sha256:") {
			return &Blob{path, size, strings.TrimSpace(string(d))}, nil
		}
	}
	fmt.Fprintf(os.Stderr, "generating %d MiB random blob in %s (cached for later runs)\n", size/mib, path)
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return nil, fmt.Errorf("create blob: %w", err)
	}
	defer os.Remove(tmp)
	rng := rand.NewChaCha8([32]byte{'w', 'h', 'a', 'r', 'f'})
	h := sha256.New()
	buf := make([]byte, 4*mib)
	for left := size; left > 0; {
		n := min(int64(len(buf)), left)
		_, _ = rng.Read(buf[:n])
		h.Write(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return nil, fmt.Errorf("write blob: %w", err)
		}
		left -= n
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write blob: %w", err)
	}
	d := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("store blob: %w", err)
	}
	if err := os.WriteFile(sumPath, []byte(d+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("store blob digest: %w", err)
	}
	return &Blob{path, size, d}, nil
}

// open returns a reader over the blob.
func (b *Blob) open() (io.ReadCloser, error) { return os.Open(b.Path) }

// sha256Speed hashes total bytes from memory on one goroutine; MB/s.
func sha256Speed(total int64) float64 {
	buf := make([]byte, 16*mib)
	rng := rand.NewChaCha8([32]byte{1})
	_, _ = rng.Read(buf)
	h := sha256.New()
	start := time.Now()
	for n := int64(0); n < total; n += int64(len(buf)) {
		h.Write(buf)
	}
	_ = h.Sum(nil)
	return float64(total) / mb / time.Since(start).Seconds()
}

// pageCacheWriteSpeed writes size bytes into a new file under dir with
// 1 MiB writes, as a registry writes an upload, and removes it; MB/s of
// the writes alone (dirty pages are flushed before, not after). On a VM
// whose host takes freed guest memory back (free page reporting), the
// first write to a page the kernel had freed costs a fault in the host:
// this figure is then the ceiling of every push in the run, since each
// server writes every pushed byte into the page cache once.
func pageCacheWriteSpeed(dir string, size int64) (float64, error) {
	syscall.Sync()
	f, err := os.CreateTemp(dir, "pagecache-")
	if err != nil {
		return 0, fmt.Errorf("page cache write: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, mib)
	start := time.Now()
	for n := int64(0); n < size; n += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			return 0, fmt.Errorf("page cache write: %w", err)
		}
	}
	return float64(size) / mb / time.Since(start).Seconds(), nil
}

// Transfer is the outcome of one timed transfer.
type Transfer struct {
	MBs       float64 // client-side throughput
	CPUperGiB float64 // server CPU seconds per GiB moved
	// ClientCPUperGiB is this process's CPU (the client's TLS, HTTP
	// and reads) per GiB moved: a single stream, read by one goroutine,
	// cannot go faster than 1 GiB per this many seconds, whatever the
	// server does.
	ClientCPUperGiB float64
	Seconds         float64
	// CoresBusy is how many of the machine's CPUs were busy on average
	// during the transfer (every process: servers, client, S3 server):
	// near the core count, the machine, not the server, sets the pace.
	CoresBusy float64
}

// selfCPUSeconds is the user+system CPU time this process has used.
func selfCPUSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// timed runs fn, which moves bytes, and measures wall time and the CPU
// the group spent meanwhile. It first flushes the page cache's dirty pages
// (sync): the kernel throttles writers once dirty data passes
// dirty_background_ratio, so without it a push would pay for the bytes the
// previous measurement (often another server's) left unwritten.
func timed(g procstat.Group, bytes int64, fn func() error) (Transfer, error) {
	syscall.Sync()
	c0, err := g.CPUSeconds()
	if err != nil {
		return Transfer{}, err
	}
	self0 := selfCPUSeconds()
	m0, merr := procstat.ReadMachine()
	start := time.Now()
	if err := fn(); err != nil {
		return Transfer{}, err
	}
	el := time.Since(start).Seconds()
	m1, merr1 := procstat.ReadMachine()
	self1 := selfCPUSeconds()
	c1, err := g.CPUSeconds()
	if err != nil {
		return Transfer{}, err
	}
	gibs := float64(bytes) / gib
	t := Transfer{MBs: float64(bytes) / mb / el, CPUperGiB: (c1 - c0) / gibs, ClientCPUperGiB: (self1 - self0) / gibs, Seconds: el}
	if merr == nil && merr1 == nil {
		t.CoresBusy = m0.CoresBusy(m1, el)
	}
	return t, nil
}

// parallel runs fn n times at once and returns the first error.
func parallel(n int, fn func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(i)
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// transferCtx bounds one transfer so that a hung server cannot stall the
// suite.
func transferCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, 5*time.Minute)
}

// pushStreamed pushes the blob to repo the way Docker does.
func pushStreamed(ctx context.Context, c *regclient.Client, repo string, b *Blob) error {
	ctx, cancel := transferCtx(ctx)
	defer cancel()
	return c.PushStreamed(ctx, repo, b.open, b.Digest)
}

// pushMonolithic pushes the blob to repo with one PUT.
func pushMonolithic(ctx context.Context, c *regclient.Client, repo string, b *Blob) error {
	ctx, cancel := transferCtx(ctx)
	defer cancel()
	f, err := os.Open(b.Path)
	if err != nil {
		return fmt.Errorf("open blob: %w", err)
	}
	defer f.Close()
	return c.PushMonolithic(ctx, repo, f, b.Size, b.Digest)
}

// pulls pulls the blob n times in parallel.
func pulls(ctx context.Context, c *regclient.Client, repo string, b *Blob, n int) error {
	ctx, cancel := transferCtx(ctx)
	defer cancel()
	return parallel(n, func(int) error { return c.PullBlob(ctx, repo, b.Digest, b.Size) })
}

// staticPulls GETs a static URL n times in parallel.
func staticPulls(ctx context.Context, c *regclient.Client, url string, size int64, n int) error {
	ctx, cancel := transferCtx(ctx)
	defer cancel()
	return parallel(n, func(int) error { return c.GetURL(ctx, url, size) })
}

// tagBlob pushes a config and a manifest that names the blob as its only
// layer, so that manifest requests have something real to answer.
func tagBlob(ctx context.Context, c *regclient.Client, repo, tag string, b *Blob) error {
	cfg := []byte(`{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[` + strconv.Quote(b.Digest) + `]}}`)
	cd, err := c.PushBytes(ctx, repo, cfg)
	if err != nil {
		return fmt.Errorf("push config: %w", err)
	}
	m := regclient.ImageManifest(
		regclient.Descriptor{MediaType: regclient.MediaDockerConfig, Digest: cd, Size: int64(len(cfg))},
		[]regclient.Descriptor{{MediaType: regclient.MediaDockerLayer, Digest: b.Digest, Size: b.Size}})
	if _, err := c.PushManifest(ctx, repo, tag, regclient.MediaDockerManifest, m); err != nil {
		return fmt.Errorf("push manifest: %w", err)
	}
	return nil
}
