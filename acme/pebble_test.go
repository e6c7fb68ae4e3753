package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/acme/acmetest"
)

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
			p := acmetest.StartPebble(t, httpLn.Addr().(*net.TCPAddr).Port, tlsLn.Addr().(*net.TCPAddr).Port)
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
