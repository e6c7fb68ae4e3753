// Package acmetest runs the real parts ACME tests need: Pebble (the ACME
// test CA, started from its binary) with a loopback DNS server, and
// self-signed certificates for manual-TLS tests.
package acmetest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/wharf-dev/wharf/internal/testpeer"
)

// Pebble is a running Pebble ACME server for one test.
type Pebble struct {
	DirURL  string // ACME directory
	MgmtURL string // management API (roots, ...)
	CAFile  string // PEM of the certificate Pebble's own HTTPS listeners use

	mu  sync.Mutex
	out bytes.Buffer
}

// Write collects Pebble's output (it is the process's stdout and stderr).
func (p *Pebble) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// Log returns what Pebble printed so far.
func (p *Pebble) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Orders counts the orders Pebble has accepted.
func (p *Pebble) Orders() int { return strings.Count(p.Log(), "Added order") }

// PebbleBinary finds the pebble binary or skips the test.
func PebbleBinary(t *testing.T) string {
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
	testpeer.Missing(t, "pebble not installed (go install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.1)")
	return ""
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// LoopbackDNS answers every A query with 127.0.0.1 (and AAAA with
// nothing), so Pebble validates any name against our loopback listeners
// without /etc/hosts entries.
func LoopbackDNS(t *testing.T) string {
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

// StartPebble runs Pebble validating HTTP-01 on httpPort and TLS-ALPN-01
// on tlsPort of 127.0.0.1.
func StartPebble(t *testing.T, httpPort, tlsPort int) *Pebble {
	t.Helper()
	bin := PebbleBinary(t)
	dir := t.TempDir()
	certFile, keyFile, _ := SelfSigned(t, dir, "pebble-", "localhost", "127.0.0.1")
	acmePort, mgmtPort := FreePort(t), FreePort(t)
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
	p := &Pebble{
		DirURL:  fmt.Sprintf("https://127.0.0.1:%d/dir", acmePort),
		MgmtURL: fmt.Sprintf("https://127.0.0.1:%d", mgmtPort),
		CAFile:  certFile,
	}
	cmd := exec.Command(bin, "-config", cfgFile, "-dnsserver", LoopbackDNS(t))
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
	client := p.Client(t)
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

// Client is an HTTP client trusting Pebble's own HTTPS listeners.
func (p *Pebble) Client(t *testing.T) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(p.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// RootPEM returns Pebble's issuing root (management /roots/0) as PEM:
// what clients must trust to verify the certificates Pebble issues.
func (p *Pebble) RootPEM(t *testing.T) []byte {
	t.Helper()
	resp, err := p.Client(t).Get(p.MgmtURL + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble /roots/0: %d %v", resp.StatusCode, err)
	}
	return b
}

// Roots returns a pool holding Pebble's issuing root.
func (p *Pebble) Roots(t *testing.T) *x509.CertPool {
	t.Helper()
	b := p.RootPEM(t)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble /roots/0: no certificate in %q", b)
	}
	return pool
}
