package localfs

import (
	"context"
	"io"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"
	"time"
)

// recordReader hands out size bytes in reads of at most 16 KiB, each
// copied out of a larger buffer, as crypto/tls hands a request body to
// Append (one record's plaintext per Read).
type recordReader struct {
	src  []byte
	left int64
	pos  int
}

func (r *recordReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	n := min(len(p), 16<<10, int(r.left), len(r.src)-r.pos)
	copy(p, r.src[r.pos:r.pos+n])
	r.pos = (r.pos + n) % len(r.src)
	r.left -= int64(n)
	return n, nil
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// BenchmarkAppend is the storage half of a push: Append of 256 MiB that
// arrives in 16 KiB reads, into a fresh upload (written, hashed). It
// reports the process's CPU seconds per GiB appended, the figure the push
// target of issue #9 is about; the network half (TLS, HTTP) is not in it.
//
//	go test ./backend/storage/localfs -run '^$' -bench Append -count 6
func BenchmarkAppend(b *testing.B) {
	const size = 256 << 20
	src := make([]byte, 4<<20)
	rng := rand.NewChaCha8([32]byte{7})
	_, _ = rng.Read(src)
	dir := b.TempDir()
	if d := os.Getenv("WHARF_BENCH_DIR"); d != "" {
		dir = d
	}
	s, err := New(Options{Root: dir, UploadTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.SetBytes(size)
	var cpu float64
	for b.Loop() {
		u, err := s.NewUpload(ctx, "bench/append")
		if err != nil {
			b.Fatal(err)
		}
		c0 := cpuSeconds()
		n, err := u.Append(ctx, &recordReader{src: src, left: size})
		cpu += cpuSeconds() - c0
		if err != nil || n != size {
			b.Fatalf("append: %d bytes, %v", n, err)
		}
		if err := u.Cancel(ctx); err != nil {
			b.Fatal(err)
		}
		u.Close()
	}
	b.ReportMetric(cpu/float64(b.N)/(float64(size)/(1<<30)), "cpu-s/GiB")
}
