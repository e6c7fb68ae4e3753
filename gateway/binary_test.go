package gateway_test

// Tests of the wharf binary as users run it: signals, `wharf check`, and a
// 2 GiB layer through the proxy site with the process's peak RSS measured.
// (To move into e2e/ on top of its harness once that is on main.)

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/acme/acmetest"
	"github.com/wharf-dev/wharf/backend/proxy/proxytest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func wharfBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("WHARF_BIN"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wharf-gw-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "wharf")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/wharf").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// wharfProc is a running `wharf serve`.
type wharfProc struct {
	cmd  *exec.Cmd
	log  *bytes.Buffer
	mu   *sync.Mutex
	done chan error
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func startWharf(t *testing.T, cfgFile, waitAddr string) *wharfProc {
	t.Helper()
	p := &wharfProc{log: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan error, 1)}
	p.cmd = exec.Command(wharfBinary(t), "serve", "-config", cfgFile)
	p.cmd.Stdout = lockedWriter{p.mu, p.log}
	p.cmd.Stderr = lockedWriter{p.mu, p.log}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("wharf log:\n%s", p.output())
		}
	})
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", waitAddr)
		if err == nil {
			c.Close()
			return p
		}
		if i > 300 {
			t.Fatalf("wharf did not listen on %s:\n%s", waitAddr, p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *wharfProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func (p *wharfProc) status(t *testing.T, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if name, rest, ok := strings.Cut(line, ":"); ok && name == field {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no %s in status", field)
	return 0
}

// cpu returns user+system CPU time used so far.
func (p *wharfProc) cpu(t *testing.T) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * time.Second / 100
}

type tlsFixture struct {
	dir, cfgFile        string
	httpAddr, httpsAddr string
	roots               *x509.CertPool
	upstream            string
}

const binaryTOML = `
data_dir = "data"
[listen]
http  = "%[2]s"
https = "%[3]s"
progress_timeout = "3s"
[log]
level = "warn"
[[site]]
host    = "registry.test"
backend = "proxy"
tls     = "manual"
cert    = "registry.test-cert.pem"
key     = "registry.test-key.pem"
[site.proxy]
upstream = "%[4]s"
`

func newTLSFixture(t *testing.T) *tlsFixture {
	t.Helper()
	f := &tlsFixture{dir: t.TempDir(), roots: x509.NewCertPool()}
	for _, h := range []string{"registry.test", "legacy.test"} {
		_, _, c := acmetest.SelfSigned(t, f.dir, h+"-", h)
		f.roots.AddCert(c)
	}
	f.httpAddr = fmt.Sprintf("127.0.0.1:%d", acmetest.FreePort(t))
	f.httpsAddr = fmt.Sprintf("127.0.0.1:%d", acmetest.FreePort(t))
	f.upstream = proxytest.StartDockerRegistry(t)
	f.cfgFile = filepath.Join(f.dir, "gateway.toml")
	f.write(t, "")
	return f
}

func (f *tlsFixture) write(t *testing.T, extra string) {
	t.Helper()
	text := fmt.Sprintf(binaryTOML, f.dir, f.httpAddr, f.httpsAddr, f.upstream) + extra
	if err := os.WriteFile(f.cfgFile, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *tlsFixture) client() *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:    &tls.Config{RootCAs: f.roots},
		DisableCompression: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, f.httpsAddr)
		},
	}}
}

func (f *tlsFixture) url(host, path string) string {
	_, port, _ := net.SplitHostPort(f.httpsAddr)
	return "https://" + host + ":" + port + path
}

// pattern is an endless, cheap, non-repeating-per-MiB byte stream.
type pattern struct {
	block []byte
	off   int
	n     int64
}

func newPattern(n int64) *pattern {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return &pattern{block: b, n: n}
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.n == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	n := copy(b, p.block[p.off:])
	p.off = (p.off + n) % len(p.block)
	p.block[p.off] ^= byte(p.n) // vary the blocks
	p.n -= int64(n)
	return n, nil
}

// pushBlob uploads a blob as one PATCH and a PUT with the digest, the way
// docker does, and returns the digest.
func pushBlob(t *testing.T, c *http.Client, base, repo string, body io.Reader) string {
	t.Helper()
	d, err := pushBlobE(c, base, repo, body)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// pushBlobE is pushBlob returning its error (for goroutines).
func pushBlobE(c *http.Client, base, repo string, body io.Reader) (string, error) {
	resp, err := c.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		return "", fmt.Errorf("start upload: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("start upload: %d", resp.StatusCode)
	}
	loc, err := resolve(base, resp.Header.Get("Location"))
	if err != nil {
		return "", err
	}
	h := sha256.New()
	req, _ := http.NewRequest(http.MethodPatch, loc.String(), io.TeeReader(body, h))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = c.Do(req)
	if err != nil {
		return "", fmt.Errorf("PATCH: %w", err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("PATCH: %d %s", resp.StatusCode, msg)
	}
	digest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	u, err := resolve(base, resp.Header.Get("Location"))
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set("digest", digest)
	u.RawQuery = q.Encode()
	req, _ = http.NewRequest(http.MethodPut, u.String(), nil)
	resp, err = c.Do(req)
	if err != nil {
		return "", fmt.Errorf("PUT: %w", err)
	}
	msg, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("PUT: %d %s", resp.StatusCode, msg)
	}
	return digest, nil
}

// resolve resolves a Location against the gateway's base URL; an absolute
// one must point at the gateway as the client sees it.
func resolve(base, loc string) (*url.URL, error) {
	b, _ := url.Parse(base)
	l, err := url.Parse(loc)
	if err != nil || loc == "" {
		return nil, fmt.Errorf("Location %q: %v", loc, err)
	}
	if l.Host != "" && (l.Host != b.Host || l.Scheme != b.Scheme) {
		return nil, fmt.Errorf("Location %q does not point at the gateway %s", loc, base)
	}
	return b.ResolveReference(l), nil
}

// A 2 GiB layer goes up and comes back down through the proxy site over
// TLS, intact, with wharf's peak RSS under 64 MiB.
func TestBinaryProxyBigLayer(t *testing.T) {
	if testing.Short() {
		t.Skip("2 GiB transfer")
	}
	size := int64(2 << 30)
	if s := os.Getenv("WHARF_BIG_LAYER_MIB"); s != "" {
		n, _ := strconv.ParseInt(s, 10, 64)
		size = n << 20
	}
	f := newTLSFixture(t)
	p := startWharf(t, f.cfgFile, f.httpsAddr)
	c := f.client()
	base := f.url("registry.test", "")

	cpu0, t0 := p.cpu(t), time.Now()
	digest := pushBlob(t, c, base, "big/layer", newPattern(size))
	cpuPush, tPush := p.cpu(t)-cpu0, time.Since(t0)

	cpu0, t0 = p.cpu(t), time.Now()
	resp, err := c.Get(base + "/v2/big/layer/blobs/" + digest)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, resp.Body, make([]byte, 256<<10))
	resp.Body.Close()
	if err != nil || n != size {
		t.Fatalf("pull: %d bytes, %v", n, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		t.Fatalf("pulled %s, pushed %s", got, digest)
	}
	cpuPull, tPull := p.cpu(t)-cpu0, time.Since(t0)
	rss := p.status(t, "VmHWM")
	gib := float64(size) / (1 << 30)
	t.Logf("%.1f GiB through the proxy site over TLS: push %.0f MB/s (%.2f CPU s/GiB), pull %.0f MB/s (%.2f CPU s/GiB), wharf peak RSS %.1f MiB",
		gib, float64(size)/tPush.Seconds()/1e6, cpuPush.Seconds()/gib, float64(size)/tPull.Seconds()/1e6, cpuPull.Seconds()/gib, float64(rss)/(1<<20))
	if rss >= 64<<20 {
		t.Fatalf("wharf peak RSS %.1f MiB, want < 64 MiB", float64(rss)/(1<<20))
	}
}

// SIGHUP adds a site (and rejects a broken file, keeping the old config);
// SIGTERM lets an upload in flight finish, then wharf exits 0.
func TestBinarySignals(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	f := newTLSFixture(t)
	p := startWharf(t, f.cfgFile, f.httpsAddr)
	c := f.client()

	// an upload request that takes a few seconds, in flight across
	// everything below (SIGTERM drains requests in flight; later ones are
	// refused, so this is one PATCH)
	base := f.url("registry.test", "")
	resp, err := c.Post(base+"/v2/slow/layer/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resolve(base, resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %d %v", resp.StatusCode, err)
	}
	const slowSize = 8 << 20
	slow := make(chan error, 1)
	go func() {
		body := &throttled{r: newPattern(slowSize), every: 20 * time.Millisecond, chunk: 256 << 10}
		req, _ := http.NewRequest(http.MethodPatch, loc.String(), body)
		resp, err := c.Do(req)
		if err != nil {
			slow <- err
			return
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != fmt.Sprintf("0-%d", slowSize-1) {
			err = fmt.Errorf("PATCH: %d, Range %q", resp.StatusCode, resp.Header.Get("Range"))
		}
		slow <- err
	}()
	time.Sleep(300 * time.Millisecond)

	get := func(host string) (int, error) {
		resp, err := c.Get(f.url(host, "/v2/"))
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if _, err := get("legacy.test"); err == nil {
		t.Fatal("legacy.test served before it is configured")
	}
	f.write(t, `
[[site]]
host    = "legacy.test"
backend = "proxy"
tls     = "manual"
cert    = "legacy.test-cert.pem"
key     = "legacy.test-key.pem"
[site.proxy]
upstream = "`+f.upstream+`"
`)
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	for i := 0; ; i++ {
		if st, err := get("legacy.test"); err == nil && st == http.StatusOK {
			break
		}
		if i > 200 {
			t.Fatalf("SIGHUP did not add legacy.test:\n%s", p.output())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// a broken file: rejected, logged, the old config keeps serving
	if err := os.WriteFile(f.cfgFile, []byte("[listen\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	for i := 0; !strings.Contains(p.output(), "reload rejected"); i++ {
		if i > 200 {
			t.Fatalf("no rejection logged:\n%s", p.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(p.output(), "gateway.toml:") {
		t.Fatalf("rejection does not say file:line:\n%s", p.output())
	}
	if st, err := get("legacy.test"); err != nil || st != http.StatusOK {
		t.Fatalf("after a rejected reload: %d %v", st, err)
	}

	// SIGTERM: the upload finishes, then the process exits 0
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-slow; err != nil {
		t.Fatalf("upload in flight during SIGHUP and SIGTERM: %v", err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("wharf exit: %v\n%s", err, p.output())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("wharf did not exit after SIGTERM")
	}
}

// throttled hands out chunk bytes every interval.
type throttled struct {
	r     io.Reader
	every time.Duration
	chunk int
}

func (s *throttled) Read(p []byte) (int, error) {
	time.Sleep(s.every)
	if len(p) > s.chunk {
		p = p[:s.chunk]
	}
	return s.r.Read(p)
}

// `wharf check` exits 1 with file:line for TLS mistakes and 0 for a good file.
func TestBinaryCheck(t *testing.T) {
	dir := t.TempDir()
	cert, key, _ := acmetest.SelfSigned(t, dir, "", "registry.test")
	for _, tc := range []struct {
		name, toml, want string
		code             int
	}{
		{"good", fmt.Sprintf("[listen]\nhttps = \":8443\"\n[[site]]\nhost = \"registry.test\"\nbackend = \"proxy\"\ntls = \"manual\"\ncert = %q\nkey = %q\n[site.proxy]\nupstream = \"http://127.0.0.1:5000\"\n", cert, key), "ok", 0},
		{"unreadable key", fmt.Sprintf("[listen]\nhttps = \":8443\"\n[[site]]\nhost = \"registry.test\"\nbackend = \"proxy\"\ntls = \"manual\"\ncert = %q\nkey = %q\n[site.proxy]\nupstream = \"http://127.0.0.1:5000\"\n", cert, filepath.Join(dir, "nope.pem")), "gw.toml:8: cannot read key", 1},
		{"bad duration", "[listen]\nhttp = \":80\"\nidle_timeout = \"2 minutes\"\n[[site]]\nhost = \"registry.test\"\nbackend = \"proxy\"\ntls = \"off\"\n[site.proxy]\nupstream = \"http://127.0.0.1:5000\"\n", "invalid duration", 1},
		{"bad port", "[listen]\nhttp = \"localhost\"\n[[site]]\nhost = \"registry.test\"\nbackend = \"proxy\"\ntls = \"off\"\n[site.proxy]\nupstream = \"http://127.0.0.1:5000\"\n", "gw.toml:2: invalid listen address", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, "gw.toml")
			if err := os.WriteFile(file, []byte(tc.toml), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(wharfBinary(t), "check", "-config", file)
			out, _ := cmd.CombinedOutput()
			if cmd.ProcessState.ExitCode() != tc.code || !strings.Contains(string(out), tc.want) {
				t.Fatalf("exit %d, output %q; want %d and %q", cmd.ProcessState.ExitCode(), out, tc.code, tc.want)
			}
		})
	}
}
