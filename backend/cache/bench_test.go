package cache

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
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

// BenchmarkColdPulls: 10 clients GET the same 200 MiB blob from an empty
// cache at once (one upstream GET, nine followers), over loopback HTTP;
// the upstream is wharf's registry. MB/s is the aggregate.
func BenchmarkColdPulls(b *testing.B) {
	const size, clients = 200 << 20, 10
	reg, err := registry.New(context.Background(), registry.Options{Root: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	up := httptest.NewServer(reg)
	defer func() { up.Close(); reg.Close() }()
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>13)
	}
	d := digest.FromBytes(data)
	res, err := http.Post(up.URL+"/v2/bench/blobs/uploads/?digest="+string(d), "application/octet-stream", bytes.NewReader(data))
	if err != nil || res.StatusCode != http.StatusCreated {
		b.Fatalf("push: %v %v", res, err)
	}
	res.Body.Close()
	data = nil
	b.SetBytes(size * clients)
	cpu0 := cpuTime()
	defer func() { b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N), "cpu-s/op") }()
	for b.Loop() {
		b.StopTimer()
		c, err := New(context.Background(), Options{Upstream: up.URL, Root: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		srv := httptest.NewServer(c)
		url := srv.URL + "/v2/bench/blobs/" + string(d)
		b.StartTimer()
		errs := make(chan error, clients)
		for i := 0; i < clients; i++ {
			go func() {
				res, err := srv.Client().Get(url)
				if err != nil {
					errs <- err
					return
				}
				// a big buffer, so the figure is the server's, not 8 KiB reads
				n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, res.Body, make([]byte, 1<<20))
				res.Body.Close()
				if err == nil && (res.StatusCode != http.StatusOK || n != size) {
					err = fmt.Errorf("GET: %d, %d bytes", res.StatusCode, n)
				}
				errs <- err
			}()
		}
		for i := 0; i < clients; i++ {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		srv.Close()
		c.Close()
		b.StartTimer()
	}
}

// cpuTime is the process's user+system time: on a loaded machine it
// says more about a change than the wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
