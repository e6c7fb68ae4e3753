package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/acme/acmetest"
	"github.com/wharf-dev/wharf/internal/testlog"
)

// bigBlob is a blob the fake upstream sends forever.
const bigBlob = "/v2/big/blobs/sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// upstream is a fake registry behind the proxy backend: it answers by
// path and tells the test what it received.
type upstream struct {
	*httptest.Server
	mu       sync.Mutex
	methods  []string
	bodies   []int64
	writeErr chan error
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{writeErr: make(chan error, 1)}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		u.mu.Lock()
		u.methods = append(u.methods, r.Method+" "+r.URL.RequestURI())
		u.bodies = append(u.bodies, n)
		u.mu.Unlock()
		if err != nil {
			http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
			return
		}
		switch r.URL.Path {
		case "/v2/auth/tags/list":
			w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
			w.WriteHeader(http.StatusUnauthorized)
		case "/v2/err/tags/list":
			w.WriteHeader(http.StatusInternalServerError)
		case bigBlob:
			buf := make([]byte, 64<<10)
			for {
				if _, err := w.Write(buf); err != nil {
					u.writeErr <- err
					return
				}
			}
		default:
			fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, n)
		}
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) last() (string, int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.methods) == 0 {
		return "", 0
	}
	return u.methods[len(u.methods)-1], u.bodies[len(u.bodies)-1]
}

// testGateway is a gateway serving on loopback ports.
type testGateway struct {
	g                   *Gateway
	httpAddr, httpsAddr string
	roots               *x509.CertPool
	cfgFile             string
	cancel              context.CancelFunc
	done                chan error
	certDir             string
}

// startGateway writes tomlText (with %[1]s = cert folder, %[2]s = upstream
// URL) to a file, loads it and serves it on fresh loopback ports.
func startGateway(t testing.TB, upstreamURL, tomlText string) *testGateway {
	t.Helper()
	dir := t.TempDir()
	tg := &testGateway{certDir: dir, roots: x509.NewCertPool()}
	for _, h := range []string{"registry.test", "legacy.test", "added.test"} {
		_, _, c := acmetest.SelfSigned(t, dir, h+"-", h)
		tg.roots.AddCert(c)
	}
	tg.cfgFile = filepath.Join(dir, "gateway.toml")
	if err := os.WriteFile(tg.cfgFile, []byte(fmt.Sprintf(tomlText, dir, upstreamURL)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(tg.cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(context.Background(), cfg, testlog.New(t, zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	tg.g = g
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg.httpAddr, tg.httpsAddr = httpLn.Addr().String(), httpsLn.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	tg.cancel, tg.done = cancel, make(chan error, 1)
	go func() { tg.done <- g.Serve(ctx, httpLn, httpsLn, nil) }()
	t.Cleanup(func() {
		cancel()
		<-tg.done
	})
	// ready when the https port answers
	for i := 0; !g.ready.Load(); i++ {
		if i > 500 {
			t.Fatal("gateway did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return tg
}

// client returns an HTTP client that reaches any host name on the
// gateway's ports and trusts the test certificates. h2 picks HTTP/2.
func (tg *testGateway) client(h2 bool) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: tg.roots},
		ForceAttemptHTTP2: h2,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, _ := net.SplitHostPort(addr)
			return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:"+port)
		},
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

func (tg *testGateway) httpsURL(host, path string) string {
	_, port, _ := net.SplitHostPort(tg.httpsAddr)
	return "https://" + host + ":" + port + path
}

func (tg *testGateway) httpURL(host, path string) string {
	_, port, _ := net.SplitHostPort(tg.httpAddr)
	return "http://" + host + ":" + port + path
}

const baseTOML = `
data_dir = "%[1]s/data"
[listen]
http  = "127.0.0.1:0"
https = "127.0.0.1:0"
progress_timeout = "2s"
read_header_timeout = "1s"
max_header_bytes = 8192

[[site]]
host    = "registry.test"
backend = "proxy"
tls     = "manual"
cert    = "%[1]s/registry.test-cert.pem"
key     = "%[1]s/registry.test-key.pem"
[site.proxy]
upstream = "%[2]s"

[[site]]
host    = "plain.test"
backend = "proxy"
tls     = "off"
[site.proxy]
upstream = "%[2]s"
`

// TestListeners drives both listeners of a gateway with a manual-TLS and a
// tls = "off" proxy site: routing, SNI, redirects and header limits.
func TestListeners(t *testing.T) {
	up := newUpstream(t)
	tg := startGateway(t, up.URL, baseTOML)
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("routes h2=%v", h2), func(t *testing.T) { listenRoutes(t, tg, h2) })
	}
	for _, tc := range []struct {
		name string
		run  func(*testing.T, *testGateway)
	}{
		{"unknown SNI refused", listenUnknownSNI},
		{"host not matching SNI gets 421", listenHostNotSNI},
		{"plain HTTP to the https port", listenPlainHTTPOnTLS},
		{"http redirects with 308 and a PUT stays a PUT", listenRedirect},
		{"http serves tls=off sites and refuses unknown hosts", listenHTTPSites},
		{"absurdly long headers get 431", listenLongHeaders},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, tg) })
	}
}

// listenRoutes: a Host with port and in upper case routes, HTTP/2 is
// negotiated when asked for, and the API version header is on upstream
// errors and 401s.
func listenRoutes(t *testing.T, tg *testGateway, h2 bool) {
	c := tg.client(h2)
	req, _ := http.NewRequest(http.MethodGet, tg.httpsURL("registry.test", "/v2/"), nil)
	req.Host = "Registry.TEST:443"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "GET /v2/ 0" {
		t.Fatalf("h2=%v: %d %q", h2, resp.StatusCode, body)
	}
	if want := map[bool]int{false: 1, true: 2}[h2]; resp.ProtoMajor != want {
		t.Fatalf("h2=%v: got %s", h2, resp.Proto)
	}
	if resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("TLS version %x", resp.TLS.Version)
	}
	// Docker-Distribution-Api-Version on upstream errors and 401s.
	for _, p := range []string{"/v2/auth/tags/list", "/v2/err/tags/list", "/v2/x/manifests/missing"} {
		resp, err := c.Get(tg.httpsURL("registry.test", p))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
			t.Errorf("%s (%d): no API version header", p, resp.StatusCode)
		}
		if want := map[string]int{"/v2/auth/tags/list": 401, "/v2/err/tags/list": 500}[p]; want != 0 && resp.StatusCode != want {
			t.Errorf("%s: status %d, want the upstream's %d", p, resp.StatusCode, want)
		}
	}
}

// listenUnknownSNI: unknown SNI refused.
func listenUnknownSNI(t *testing.T, tg *testGateway) {
	for _, sni := range []string{"stranger.test", "plain.test"} {
		conn, err := tls.Dial("tcp", tg.httpsAddr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err == nil {
			conn.Close()
			t.Fatalf("%s: handshake succeeded", sni)
		}
		if !strings.Contains(err.Error(), "remote error: tls") {
			t.Fatalf("%s: want a TLS alert, got %v", sni, err)
		}
	}
	// no SNI at all (an IP address as server name sends none)
	conn, err := tls.Dial("tcp", tg.httpsAddr, &tls.Config{InsecureSkipVerify: true})
	if err == nil {
		conn.Close()
		t.Fatal("handshake without SNI succeeded")
	}

}

// listenHostNotSNI: host not matching SNI gets 421.
func listenHostNotSNI(t *testing.T, tg *testGateway) {
	req, _ := http.NewRequest(http.MethodGet, tg.httpsURL("registry.test", "/v2/"), nil)
	req.Host = "plain.test"
	resp, err := tg.client(false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("status %d, want 421", resp.StatusCode)
	}

}

// listenPlainHTTPOnTLS: plain HTTP to the https port.
func listenPlainHTTPOnTLS(t *testing.T, tg *testGateway) {
	conn, err := net.Dial("tcp", tg.httpsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /v2/ HTTP/1.1\r\nHost: registry.test\r\n\r\n")
	b, _ := io.ReadAll(conn)
	if !strings.HasPrefix(string(b), "HTTP/1.0 400") || !strings.Contains(string(b), "HTTPS server") {
		t.Fatalf("answer %q", b)
	}

}

// listenRedirect: http redirects with 308 and a PUT stays a PUT.
func listenRedirect(t *testing.T, tg *testGateway) {
	c := tg.client(false)
	data := bytes.Repeat([]byte("x"), 1000)
	req, _ := http.NewRequest(http.MethodPut, tg.httpURL("Registry.test", "/v2/a/blobs/uploads/1?digest=sha256:00&x=%2F"), bytes.NewReader(data))
	var locs []string
	c.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		locs = append(locs, r.URL.String())
		return nil
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := tg.httpsURL("registry.test", "/v2/a/blobs/uploads/1?digest=sha256:00&x=%2F"); len(locs) != 1 || locs[0] != want {
		t.Fatalf("redirects %v, want [%s]", locs, want)
	}
	if string(body) != "PUT /v2/a/blobs/uploads/1 1000" {
		t.Fatalf("after redirect: %q", body)
	}
	// the redirect itself
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err = c.Get(tg.httpURL("registry.test", "/v2/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
		t.Fatalf("redirect: %d, API header %q", resp.StatusCode, resp.Header.Get("Docker-Distribution-Api-Version"))
	}

}

// listenHTTPSites: http serves tls=off sites and refuses unknown hosts.
func listenHTTPSites(t *testing.T, tg *testGateway) {
	c := tg.client(false)
	resp, err := c.Get(tg.httpURL("plain.test", "/v2/"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "GET /v2/ 0" {
		t.Fatalf("tls=off site: %d %q", resp.StatusCode, body)
	}
	resp, err = c.Get(tg.httpURL("stranger.test", "/v2/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
		t.Fatalf("unknown host: %d", resp.StatusCode)
	}
	// HTTP/1.0 without Host
	conn, err := net.Dial("tcp", tg.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /v2/ HTTP/1.0\r\n\r\n")
	st, _ := bufio.NewReader(conn).ReadString('\n')
	if !strings.Contains(st, " 400 ") {
		t.Fatalf("missing Host: %q", st)
	}

}

// listenLongHeaders: absurdly long headers get 431.
func listenLongHeaders(t *testing.T, tg *testGateway) {
	for _, h2 := range []bool{false, true} {
		req, _ := http.NewRequest(http.MethodGet, tg.httpsURL("registry.test", "/v2/"), nil)
		req.Header.Set("X-Junk", strings.Repeat("a", 64<<10))
		resp, err := tg.client(h2).Do(req)
		if h2 && err != nil {
			// HTTP/2: the client itself refuses to send headers over
			// the server's advertised limit.
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("h2=%v: status %d, want 431", h2, resp.StatusCode)
		}
	}

}

// slowBody yields n bytes, one every gap.
type slowBody struct {
	n   int
	gap time.Duration
}

func (s *slowBody) Read(p []byte) (int, error) {
	if s.n == 0 {
		return 0, io.EOF
	}
	time.Sleep(s.gap)
	p[0] = 'x'
	s.n--
	return 1, nil
}

func TestTimeouts(t *testing.T) {
	up := newUpstream(t)
	tg := startGateway(t, up.URL, baseTOML) // progress 2s, headers 1s

	t.Run("slowloris headers are cut", func(t *testing.T) {
		conn, err := net.Dial("tcp", tg.httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /v2/ HTTP/1.1\r\nHost: plain.test\r\n")
		cut := false
		for i := 0; i < 40 && !cut; i++ { // 40 x 250ms = 10s of trickling, 10x the limit
			time.Sleep(250 * time.Millisecond)
			if _, err := fmt.Fprintf(conn, "X-%d: y\r\n", i); err != nil {
				cut = true
			}
		}
		if !cut {
			// the write may still land in socket buffers: a read tells
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err := conn.Read(make([]byte, 1))
			var ne net.Error
			cut = err != nil && !(errors.As(err, &ne) && ne.Timeout())
		}
		if !cut {
			t.Fatal("slowloris connection still open")
		}
	})

	t.Run("stalled upload is cut, slow moving upload survives", func(t *testing.T) {
		for _, h2 := range []bool{false, true} {
			c := tg.client(h2)
			// 16 bytes over 8s: four times the progress timeout in total,
			// but never 2s without a byte.
			req, _ := http.NewRequest(http.MethodPatch, tg.httpsURL("registry.test", "/v2/a/blobs/uploads/slow"), &slowBody{n: 16, gap: 500 * time.Millisecond})
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("h2=%v: slow upload failed: %v", h2, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "PATCH /v2/a/blobs/uploads/slow 16" {
				t.Fatalf("h2=%v: slow upload: %d %q", h2, resp.StatusCode, body)
			}

			// 10 bytes, then nothing: the gateway must give up.
			pr, pw := io.Pipe()
			req, _ = http.NewRequest(http.MethodPatch, tg.httpsURL("registry.test", "/v2/a/blobs/uploads/stall"), pr)
			req.ContentLength = 1000
			go func() { _, _ = pw.Write([]byte("0123456789")) }()
			done := make(chan error, 1)
			go func() {
				resp, err := c.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode < 400 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					} else {
						err = nil // an error answer: cut
					}
				} else {
					err = nil // connection or stream reset: cut
				}
				done <- err
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("h2=%v: stalled upload was not cut: %v", h2, err)
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("h2=%v: stalled upload still open after 60s", h2)
			}
			pw.Close()
			// the upstream saw the 10 bytes and then the end
			for i := 0; ; i++ {
				m, n := up.last()
				if strings.Contains(m, "stall") {
					if n != 10 {
						t.Fatalf("h2=%v: upstream got %d bytes of the stalled upload", h2, n)
					}
					break
				}
				if i > 100 {
					t.Fatalf("h2=%v: upstream never saw the stalled upload end", h2)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	})

	t.Run("client that stops reading is cut", func(t *testing.T) {
		conn, err := tls.Dial("tcp", tg.httpsAddr, &tls.Config{ServerName: "registry.test", RootCAs: tg.roots, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: registry.test\r\n\r\n", bigBlob)
		_, _ = conn.Read(make([]byte, 1)) // start, then never read again
		select {
		case err := <-up.writeErr:
			if err == nil {
				t.Fatal("upstream write did not fail")
			}
		case <-time.After(60 * time.Second):
			t.Fatal("download to a client that stopped reading was never cut")
		}
	})
}

func TestReloadAndShutdown(t *testing.T) {
	up := newUpstream(t)
	tg := startGateway(t, up.URL, baseTOML)
	c := tg.client(true)

	// An upload in flight across reloads and the shutdown.
	type result struct {
		body string
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPatch, tg.httpsURL("registry.test", "/v2/a/blobs/uploads/long"), &slowBody{n: 12, gap: 500 * time.Millisecond})
		resp, err := c.Do(req)
		if err != nil {
			inflight <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		inflight <- result{string(b), err}
	}()
	time.Sleep(500 * time.Millisecond)

	get := func(host string) (int, error) {
		resp, err := c.Get(tg.httpsURL(host, "/v2/"))
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	// 1. add a site
	added := baseTOML + `
[[site]]
host    = "added.test"
backend = "proxy"
tls     = "manual"
cert    = "%[1]s/added.test-cert.pem"
key     = "%[1]s/added.test-key.pem"
[site.proxy]
upstream = "%[2]s"
`
	if err := os.WriteFile(tg.cfgFile, []byte(fmt.Sprintf(added, tg.certDir, up.URL)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := tg.g.ReloadFile(context.Background(), tg.cfgFile); err != nil {
		t.Fatal(err)
	}
	if st, err := get("added.test"); err != nil || st != http.StatusOK {
		t.Fatalf("added site: %d %v", st, err)
	}

	// 2. a broken config is rejected and the old one keeps serving
	for _, bad := range []string{
		"data_dir = [",
		strings.Replace(added, "added.test-key.pem", "missing-key.pem", 1),
		strings.Replace(added, `upstream = "%[2]s"`, `upstream = "ftp://x"`, 1),
	} {
		if err := os.WriteFile(tg.cfgFile, []byte(fmt.Sprintf(bad, tg.certDir, up.URL)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := tg.g.ReloadFile(context.Background(), tg.cfgFile); err == nil {
			t.Fatalf("broken config accepted:\n%s", bad)
		}
		if st, err := get("added.test"); err != nil || st != http.StatusOK {
			t.Fatalf("after rejected reload: %d %v", st, err)
		}
	}

	// 3. remove the site again: no more certificate for it
	if err := os.WriteFile(tg.cfgFile, []byte(fmt.Sprintf(baseTOML, tg.certDir, up.URL)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := tg.g.ReloadFile(context.Background(), tg.cfgFile); err != nil {
		t.Fatal(err)
	}
	if st, err := get("added.test"); err != nil || st != http.StatusNotFound {
		t.Fatalf("removed site on a kept-alive connection: %d %v, want 404", st, err)
	}
	if _, err := tg.client(true).Get(tg.httpsURL("added.test", "/v2/")); err == nil {
		t.Fatal("removed site still gets a TLS handshake")
	}

	// 4. SIGTERM (context end) drains the upload, then Serve returns.
	tg.cancel()
	res := <-inflight
	if res.err != nil || res.body != "PATCH /v2/a/blobs/uploads/long 12" {
		t.Fatalf("in-flight upload across reloads and shutdown: %q %v", res.body, res.err)
	}
	if err := <-tg.done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	tg.done <- nil // for the cleanup
	if _, err := net.DialTimeout("tcp", tg.httpsAddr, time.Second); err == nil {
		t.Fatal("https port still open after shutdown")
	}
}
