package transport

import (
	"crypto/tls"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/acme/acmetest"
)

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// BenchmarkTLSPushServerCPU is the network half of a push as wharf serves
// it: curl (another process) PATCHes 256 MiB with chunked encoding over
// TLS 1.3; this process runs the listener, crypto/tls, net/http and
// Handler, and a handler that reads the body in 1 MiB io.ReadFull calls,
// as the registry's Append does, and drops it. It reports this process's
// CPU seconds per GiB received (the server's whole cost of receiving,
// without hashing and writing; see localfs's BenchmarkAppend for those).
//
//	go test ./internal/transport -run '^$' -bench TLSPush -count 6
func BenchmarkTLSPushServerCPU(b *testing.B) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		b.Skip("curl not installed")
	}
	const size = 256 << 20
	dir := b.TempDir()
	blob := filepath.Join(dir, "blob")
	src := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{9})
	_, _ = rng.Read(src)
	if err := os.WriteFile(blob, src, 0o600); err != nil {
		b.Fatal(err)
	}
	src = nil
	certFile, keyFile, _ := acmetest.SelfSigned(b, dir, "", "push.test")
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	cfg := Config{ProgressTimeout: 30 * time.Second}
	tl := Listener(ln, cfg, &tls.Config{Certificates: []tls.Certificate{pair}, NextProtos: []string{"http/1.1"}})
	got := make(chan int64, 1)
	srv := &http.Server{Handler: Handler(cfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 1<<20)
		var n int64
		for {
			k, err := io.ReadFull(r.Body, buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		got <- n
		w.WriteHeader(http.StatusAccepted)
	}))}
	go srv.Serve(tl)
	b.Cleanup(func() { srv.Close() })
	url := "https://push.test:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) + "/upload"
	b.SetBytes(size)
	var cpu float64
	for b.Loop() {
		cmd := exec.Command(curl, "-sS", "--fail", "--http1.1", "-k", "--resolve", "push.test:"+strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)+":127.0.0.1",
			"-X", "PATCH", "-H", "Transfer-Encoding: chunked", "-T", blob, "-o", "/dev/null", url)
		c0 := cpuSeconds()
		out, err := cmd.CombinedOutput()
		cpu += cpuSeconds() - c0
		if err != nil {
			b.Fatalf("curl: %v: %s", err, out)
		}
		if n := <-got; n != size {
			b.Fatalf("server read %d bytes, want %d", n, size)
		}
	}
	b.ReportMetric(cpu/float64(b.N)/(float64(size)/(1<<30)), "cpu-s/GiB")
}
