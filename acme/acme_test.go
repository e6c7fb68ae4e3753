package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/acme/acmetest"
	"github.com/wharf-dev/wharf/internal/testlog"
)

func writeCert(t *testing.T, dir, prefix string, names ...string) (certFile, keyFile string, cert *x509.Certificate) {
	return acmetest.SelfSigned(t, dir, prefix, names...)
}

func testLogger(t *testing.T) zerolog.Logger { return testlog.New(t, zerolog.InfoLevel) }

// waitJobsDone waits (up to 10 s) until no certmagic lock file has been
// under dataDir for 300 ms: a job that Stop cancelled may still take and
// release its lock, and t.TempDir's removal fails if a lock file appears
// while it runs. Registered after t.TempDir, it runs before the removal.
func waitJobsDone(t *testing.T, dataDir string) {
	t.Cleanup(func() {
		locks := filepath.Join(dataDir, "acme", "locks")
		deadline := time.Now().Add(10 * time.Second)
		quietSince := time.Now()
		for time.Now().Before(deadline) {
			if ents, _ := os.ReadDir(locks); len(ents) > 0 {
				quietSince = time.Now()
			} else if time.Since(quietSince) >= 300*time.Millisecond {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("certmagic still holds a lock under %s after 10 s", locks)
	})
}

// tlsServer serves "ok" over TLS with m's configuration on a loopback port.
// (httptest.Server is not used: it adds a certificate of its own, which
// would answer handshakes without SNI.)
func tlsServer(t *testing.T, m *Manager) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("ok " + r.Host))
		}),
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() { _ = srv.Serve(tls.NewListener(ln, m.TLSConfig())) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// handshake dials addr with SNI name, trusting roots, and returns the
// leaf certificate the server presented.
func handshake(addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: name, RootCAs: roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// rawHandshake sends a ClientHello with exactly serverName as SNI (the Go
// client refuses to put an IP address or nothing there) and reports the
// handshake error.
func rawHandshake(addr, serverName string) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	cfg := &tls.Config{InsecureSkipVerify: true}
	if serverName != "" {
		cfg.ServerName = serverName
	}
	tc := tls.Client(c, cfg)
	return tc.Handshake()
}

func TestManualCertificatesBySNI(t *testing.T) {
	dir := t.TempDir()
	certA, keyA, leafA := writeCert(t, dir, "a-", "registry.example.com")
	certB, keyB, leafB := writeCert(t, dir, "b-", "mirror.example.com")
	m, err := New(context.Background(), Config{
		DataDir: dir,
		CA:      "https://127.0.0.1:1/dir", // never contacted: no acme site
		Sites: []Site{
			{Host: "Registry.Example.com", TLS: ModeManual, CertFile: certA, KeyFile: keyA},
			{Host: "mirror.example.com.", TLS: ModeManual, CertFile: certB, KeyFile: keyB},
			{Host: "plain.example.com", TLS: ModeOff},
		},
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	m.Start()
	addr := tlsServer(t, m)

	roots := x509.NewCertPool()
	roots.AddCert(leafA)
	roots.AddCert(leafB)
	for _, tc := range []struct {
		sni  string
		want *x509.Certificate
	}{
		{"registry.example.com", leafA},
		{"REGISTRY.example.COM", leafA},
		{"mirror.example.com", leafB},
	} {
		got, err := handshake(addr, tc.sni, roots)
		if err != nil {
			t.Errorf("SNI %q: %v", tc.sni, err)
			continue
		}
		if !got.Equal(tc.want) {
			t.Errorf("SNI %q: got certificate for %v, want %v", tc.sni, got.DNSNames, tc.want.DNSNames)
		}
	}
	if !m.HasCertificate("registry.example.com") || m.HasCertificate("plain.example.com") {
		t.Errorf("HasCertificate wrong: manual site must have one, tls=off site none")
	}
}

func TestRefusedServerNames(t *testing.T) {
	dir := t.TempDir()
	cert, key, _ := writeCert(t, dir, "", "registry.example.com")
	m, err := New(context.Background(), Config{
		DataDir: dir,
		Sites:   []Site{{Host: "registry.example.com", TLS: ModeManual, CertFile: cert, KeyFile: key}},
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	addr := tlsServer(t, m)

	for _, sni := range []string{"", "unknown.example.com", "127.0.0.1", "plain.example.com"} {
		err := rawHandshake(addr, sni)
		if err == nil {
			t.Errorf("SNI %q: handshake succeeded, want refusal", sni)
			continue
		}
		// The server answers with a TLS alert (internal error for a
		// GetCertificate failure), not a dropped connection.
		if !strings.Contains(err.Error(), "remote error: tls") {
			t.Errorf("SNI %q: want a TLS alert, got %v", sni, err)
		}
	}
	// and the direct calls say why
	for _, tc := range []struct {
		sni  string
		want error
	}{
		{"", ErrNoSNI},
		{"10.0.0.1", ErrIPSNI},
		{"::1", ErrIPSNI},
		{"other.example.com", ErrUnknownHost},
	} {
		_, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: tc.sni})
		if !errors.Is(err, tc.want) {
			t.Errorf("GetCertificate(%q) = %v, want %v", tc.sni, err, tc.want)
		}
	}
}

func TestCheckSite(t *testing.T) {
	dir := t.TempDir()
	cert, key, _ := writeCert(t, dir, "", "registry.example.com")
	otherCert, _, _ := writeCert(t, dir, "other-", "registry.example.com")
	unreadable := filepath.Join(dir, "unreadable.pem")
	if err := os.WriteFile(unreadable, []byte("x"), 0o000); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		site    Site
		wantErr string
	}{
		{"acme default", Site{Host: "registry.example.com"}, ""},
		{"acme explicit", Site{Host: "registry.example.com", TLS: ModeACME}, ""},
		{"acme ip", Site{Host: "192.0.2.1", TLS: ModeACME}, "IP address"},
		{"acme single label", Site{Host: "localhost"}, "fully qualified"},
		{"acme empty", Site{Host: ""}, "host is empty"},
		{"manual ok", Site{Host: "r.example.com", TLS: ModeManual, CertFile: cert, KeyFile: key}, ""},
		{"manual missing key", Site{Host: "r.example.com", TLS: ModeManual, CertFile: cert}, "needs cert and key"},
		{"manual no such file", Site{Host: "r.example.com", TLS: ModeManual, CertFile: filepath.Join(dir, "nope.pem"), KeyFile: key}, "no such file"},
		{"manual key mismatch", Site{Host: "r.example.com", TLS: ModeManual, CertFile: otherCert, KeyFile: key}, "does not match"},
		{"manual garbage", Site{Host: "r.example.com", TLS: ModeManual, CertFile: unreadable, KeyFile: key}, "loading cert"},
		{"off", Site{Host: "10.1.2.3", TLS: ModeOff}, ""},
		{"bad mode", Site{Host: "r.example.com", TLS: "auto"}, "unknown tls mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckSite(tc.site)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no data dir", Config{}, "data_dir"},
		{"missing cert", Config{DataDir: dir, Sites: []Site{{Host: "a.example.com", TLS: ModeManual, CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"}}}, "/nonexistent/c.pem"},
		{"missing ca_root", Config{DataDir: dir, CARoot: filepath.Join(dir, "nope.pem")}, "ca_root"},
		{"both challenges off", Config{DataDir: dir, DisableTLSALPN01: true}, "both challenges"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(context.Background(), tc.cfg, testLogger(t))
			if err == nil {
				m.Stop()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q does not mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestUpdateReloadsManualCertsAndKeepsOldOnError(t *testing.T) {
	dir := t.TempDir()
	cert, key, leaf1 := writeCert(t, dir, "", "registry.example.com")
	site := Site{Host: "registry.example.com", TLS: ModeManual, CertFile: cert, KeyFile: key}
	m, err := New(context.Background(), Config{DataDir: dir, Sites: []Site{site}}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	m.Start()
	addr := tlsServer(t, m)

	// Replace the files on disk (as certbot or an operator would) and reload.
	_, _, leaf2 := writeCert(t, dir, "", "registry.example.com")
	roots := x509.NewCertPool()
	roots.AddCert(leaf1)
	roots.AddCert(leaf2)
	if got, _ := handshake(addr, "registry.example.com", roots); got == nil || !got.Equal(leaf1) {
		t.Fatal("before reload: want the first certificate")
	}
	if err := m.Update([]Site{site}); err != nil {
		t.Fatal(err)
	}
	if got, _ := handshake(addr, "registry.example.com", roots); got == nil || !got.Equal(leaf2) {
		t.Fatal("after reload: want the new certificate")
	}

	// A reload with a broken site changes nothing.
	bad := Site{Host: "new.example.com", TLS: ModeManual, CertFile: filepath.Join(dir, "missing.pem"), KeyFile: key}
	if err := m.Update([]Site{site, bad}); err == nil {
		t.Fatal("Update with a missing cert file succeeded")
	}
	if got, err := handshake(addr, "registry.example.com", roots); err != nil || !got.Equal(leaf2) {
		t.Fatalf("after failed reload: old site must still be served: %v", err)
	}

	// Removing the site stops serving it.
	if err := m.Update(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(addr, "registry.example.com", roots); err == nil {
		t.Fatal("removed site still served")
	}
}

// A CA that cannot be reached must not stop wharf: manual sites are served
// and the acme site simply has no certificate yet.
func TestCADownDoesNotBreakServing(t *testing.T) {
	dir := t.TempDir()
	waitJobsDone(t, dir)
	cert, key, leaf := writeCert(t, dir, "", "manual.example.com")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadCA := "https://" + ln.Addr().String() + "/dir"
	ln.Close() // nothing listens there any more

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, err := New(ctx, Config{
		DataDir: dir, CA: deadCA, HTTPAddr: "127.0.0.1:1", HTTPSAddr: "127.0.0.1:2",
		Sites: []Site{
			{Host: "acme.example.com"},
			{Host: "manual.example.com", TLS: ModeManual, CertFile: cert, KeyFile: key},
		},
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	m.Start()
	addr := tlsServer(t, m)

	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	if _, err := handshake(addr, "manual.example.com", roots); err != nil {
		t.Fatalf("manual site not served while the CA is down: %v", err)
	}
	if m.HasCertificate("acme.example.com") {
		t.Fatal("acme site has a certificate from a CA that is down")
	}
	if err := rawHandshake(addr, "acme.example.com"); err == nil {
		t.Fatal("handshake for an acme site without certificate succeeded")
	}
}

func TestNormalizeHost(t *testing.T) {
	for in, want := range map[string]string{
		"registry.example.com":   "registry.example.com",
		"Registry.Example.COM":   "registry.example.com",
		"registry.example.com.":  "registry.example.com",
		" registry.example.com ": "registry.example.com",
		"":                       "",
	} {
		if got := NormalizeHost(in); got != want {
			t.Errorf("NormalizeHost(%q) = %q, want %q", in, got, want)
		}
	}
}

// A client that connects by IP address sends no SNI: a manual site named by
// that address answers; without one the handshake fails.
func TestManualSiteByIPWithoutSNI(t *testing.T) {
	dir := t.TempDir()
	cert, key, leaf := writeCert(t, dir, "", "127.0.0.1")
	m, err := New(context.Background(), Config{
		DataDir: dir,
		Sites:   []Site{{Host: "127.0.0.1", TLS: ModeManual, CertFile: cert, KeyFile: key}},
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	addr := tlsServer(t, m)
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	got, err := handshake(addr, "127.0.0.1", roots) // Go sends no SNI for an IP
	if err != nil || !got.Equal(leaf) {
		t.Fatalf("connection by IP: %v", err)
	}
	if err := m.Update(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(addr, "127.0.0.1", roots); err == nil {
		t.Fatal("no site for the address, yet the handshake succeeded")
	}
}
