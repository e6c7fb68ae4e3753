package acme

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// pebble is a running Pebble ACME server for one test.
type pebble struct {
	DirURL  string // ACME directory
	MgmtURL string // management API (roots, ...)
	CAFile  string // PEM of the certificate Pebble's own HTTPS listeners use

	mu  sync.Mutex
	out bytes.Buffer
}

func (p *pebble) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// Log returns what Pebble printed so far.
func (p *pebble) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Orders counts the orders Pebble has accepted.
func (p *pebble) Orders() int { return strings.Count(p.Log(), "Added order") }

func pebbleBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("pebble"); err == nil {
		return p
	}
	for _, dir := range []string{os.Getenv("GOBIN"), filepath.Join(os.Getenv("HOME"), "go", "bin"), "/root/go/bin"} {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, "pebble")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("pebble not installed (go install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.1)")
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// loopbackDNS answers every A query with 127.0.0.1 (and AAAA with
// nothing), so Pebble validates any name against our loopback listeners
// without /etc/hosts entries.
func loopbackDNS(t *testing.T) string {
	t.Helper()
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		for _, qq := range q.Question {
			if qq.Qtype == dns.TypeA {
				r.Answer = append(r.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		_ = w.WriteMsg(r)
	})
	// Pebble asks over TCP; serve UDP on the same port as well.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcp := &dns.Server{Listener: ln, Handler: handler}
	go func() { _ = tcp.ActivateAndServe() }()
	t.Cleanup(func() { _ = tcp.Shutdown() })
	if pc, err := net.ListenPacket("udp", ln.Addr().String()); err == nil {
		udp := &dns.Server{PacketConn: pc, Handler: handler}
		go func() { _ = udp.ActivateAndServe() }()
		t.Cleanup(func() { _ = udp.Shutdown() })
	}
	return ln.Addr().String()
}

// startPebble runs Pebble validating HTTP-01 on httpPort and TLS-ALPN-01
// on tlsPort of 127.0.0.1.
func startPebble(t *testing.T, httpPort, tlsPort int) *pebble {
	t.Helper()
	bin := pebbleBinary(t)
	dir := t.TempDir()
	certFile, keyFile, _ := writeCert(t, dir, "pebble-", "localhost", "127.0.0.1")
	acmePort, mgmtPort := freePort(t), freePort(t)
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  fmt.Sprintf("127.0.0.1:%d", acmePort),
		"managementListenAddress":        fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate":                    certFile,
		"privateKey":                     keyFile,
		"httpPort":                       httpPort,
		"tlsPort":                        tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
	}}
	b, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	p := &pebble{
		DirURL:  fmt.Sprintf("https://127.0.0.1:%d/dir", acmePort),
		MgmtURL: fmt.Sprintf("https://127.0.0.1:%d", mgmtPort),
		CAFile:  certFile,
	}
	cmd := exec.Command(bin, "-config", cfgFile, "-dnsserver", loopbackDNS(t))
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	cmd.Stdout, cmd.Stderr = p, p
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("pebble log:\n%s", p.Log())
		}
	})
	// Wait until the directory answers.
	client := p.client(t)
	for i := 0; ; i++ {
		resp, err := client.Get(p.DirURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if i > 200 {
			t.Fatalf("pebble did not come up: %v\n%s", err, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

func (p *pebble) client(t *testing.T) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(p.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// Roots returns the pool of Pebble's issuing root (management /roots/0).
func (p *pebble) Roots(t *testing.T) *x509.CertPool {
	t.Helper()
	resp, err := p.client(t).Get(p.MgmtURL + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble /roots/0: no certificate in %q", b)
	}
	return pool
}

func listenPair(t *testing.T) (httpLn, tlsLn net.Listener) {
	t.Helper()
	var err error
	if httpLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if tlsLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	return httpLn, tlsLn
}

// serveManagers starts the two listeners a gateway has: plain HTTP (HTTP-01
// via HTTPChallengeHandler) and TLS (TLS-ALPN-01 and certificates via
// TLSConfig), both using whichever Manager cur holds at the time, so a
// restarted Manager can take over the same ports.
func serveManagers(t *testing.T, cur *atomic.Pointer[Manager], httpLn, tlsLn net.Listener) {
	t.Helper()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok "+r.Host) })
	h := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cur.Load().HTTPChallengeHandler(http.NotFoundHandler()).ServeHTTP(w, r)
	})}
	tc := cur.Load().TLSConfig()
	tc.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		return cur.Load().GetCertificate(hello)
	}
	s := &http.Server{Handler: ok, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = h.Serve(httpLn) }()
	go func() { _ = s.Serve(tls.NewListener(tlsLn, tc)) }()
	t.Cleanup(func() { _ = h.Close(); _ = s.Close() })
}

// waitCert waits until m holds a certificate for host or the test context
// runs out (Pebble plus certmagic take a few seconds).
func waitCert(t *testing.T, m *Manager, hosts ...string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for _, h := range hosts {
		for !m.HasCertificate(h) {
			if time.Now().After(deadline) {
				t.Fatalf("no certificate for %s", h)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// getTLS does an HTTPS GET through addr with SNI host, verifying the
// certificate against roots, and returns the body.
func getTLS(t *testing.T, addr, host string, roots *x509.CertPool) (string, error) {
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get("https://" + host + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestPebbleIssues(t *testing.T) {
	if testing.Short() {
		t.Skip("real ACME server test")
	}
	for _, tc := range []struct {
		name              string
		noHTTP, noTLSALPN bool
		wantChallenge     string
	}{
		{"http-01", false, true, "http-01"},
		{"tls-alpn-01", true, false, "tls-alpn-01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			httpLn, tlsLn := listenPair(t)
			p := startPebble(t, httpLn.Addr().(*net.TCPAddr).Port, tlsLn.Addr().(*net.TCPAddr).Port)
			dataDir := t.TempDir()
			cfg := Config{
				DataDir: dataDir, CA: p.DirURL, CARoot: p.CAFile, Email: "ops@wharf.test",
				HTTPAddr: httpLn.Addr().String(), HTTPSAddr: tlsLn.Addr().String(),
				DisableHTTP01: tc.noHTTP, DisableTLSALPN01: tc.noTLSALPN,
				Sites: []Site{{Host: "registry.test"}, {Host: "Mirror.Test"}},
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			m, err := New(ctx, cfg, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			var cur atomic.Pointer[Manager]
			cur.Store(m)
			serveManagers(t, &cur, httpLn, tlsLn)
			m.Start()
			waitCert(t, m, "registry.test", "mirror.test")

			roots := p.Roots(t)
			addr := tlsLn.Addr().String()
			for _, host := range []string{"registry.test", "mirror.test"} {
				body, err := getTLS(t, addr, host, roots)
				if err != nil || body != "ok "+host {
					t.Fatalf("GET https://%s/: %q, %v", host, body, err)
				}
			}
			if err := rawHandshake(addr, "stranger.test"); err == nil {
				t.Fatal("handshake for an unknown name succeeded")
			}
			if got := strings.Count(p.Log(), "Issued certificate"); got != 2 {
				t.Fatalf("pebble issued %d certificates, want 2", got)
			}
			// Pebble validated with the one challenge type left enabled.
			if gotHTTP := strings.Contains(p.Log(), "Attempting to validate w/ HTTP"); gotHTTP != (tc.wantChallenge == "http-01") {
				t.Fatalf("challenge type: HTTP-01 validation seen = %v, want %s", gotHTTP, tc.wantChallenge)
			}
			orders := p.Orders()
			m.Stop()

			// A restart on the same data_dir serves the stored certificates
			// without a new order.
			m2, err := New(ctx, cfg, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			defer m2.Stop()
			cur.Store(m2)
			m2.Start()
			waitCert(t, m2, "registry.test", "mirror.test")
			if body, err := getTLS(t, addr, "registry.test", roots); err != nil || body != "ok registry.test" {
				t.Fatalf("after restart: %q, %v", body, err)
			}
			if got := p.Orders(); got != orders {
				t.Fatalf("restart placed %d new orders", got-orders)
			}

			// A reload adding a site obtains its certificate; one removed
			// is no longer served.
			if err := m2.Update([]Site{{Host: "registry.test"}, {Host: "added.test"}}); err != nil {
				t.Fatal(err)
			}
			waitCert(t, m2, "added.test")
			if body, err := getTLS(t, addr, "added.test", roots); err != nil || body != "ok added.test" {
				t.Fatalf("added site: %q, %v", body, err)
			}
			if got := p.Orders(); got != orders+1 {
				t.Fatalf("reload placed %d orders, want 1", got-orders)
			}
			if err := rawHandshake(addr, "mirror.test"); err == nil {
				t.Fatal("removed site still served")
			}
		})
	}
}
