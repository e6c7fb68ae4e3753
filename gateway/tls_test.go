package gateway

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/acme/acmetest"
	"github.com/wharf-dev/wharf/internal/testpeer"
)

// lockedBuffer collects a child process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor polls until cond holds; the limit only ends a hung test.
func waitFor(t *testing.T, what string, out *lockedBuffer, cond func(string) bool) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); !cond(out.String()); {
		if time.Now().After(end) {
			t.Fatalf("never saw %s; openssl printed:\n%s", what, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A TLS 1.3 client that sends a KeyUpdate with update_requested between two
// requests of one keep-alive connection (RFC 8446 4.6.3: the server must
// answer with its own) gets both answers. openssl s_client's "K" command
// sends exactly that.
func TestTLSKeyUpdateRequested(t *testing.T) {
	openssl := testpeer.Need(t, "openssl", "apt-get install openssl")
	up := newUpstream(t)
	tg := startGateway(t, up.URL, baseTOML)
	cmd := exec.Command(openssl, "s_client", "-connect", tg.httpsAddr, "-servername", "registry.test",
		"-tls1_3", "-crlf", "-CAfile", filepath.Join(tg.certDir, "registry.test-cert.pem"), "-verify_return_error")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	req := func(path string) {
		// No line may start with K, k, R or Q: s_client takes those as commands.
		if _, err := io.WriteString(stdin, "GET "+path+" HTTP/1.1\nHost: registry.test\n\n"); err != nil {
			t.Fatal(err)
		}
	}
	answers := func(n int) func(string) bool {
		return func(s string) bool { return strings.Count(s, "HTTP/1.1 200 OK") >= n }
	}
	req("/v2/first/tags/list")
	waitFor(t, "the first answer", out, answers(1))
	if _, err := io.WriteString(stdin, "K\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "s_client's KEYUPDATE", out, func(s string) bool { return strings.Contains(s, "KEYUPDATE") })
	req("/v2/second/tags/list")
	waitFor(t, "the second answer", out, answers(2))
	if s := out.String(); !strings.Contains(s, "GET /v2/second/tags/list 0") || strings.Contains(s, "bad record mac") {
		t.Fatalf("second answer missing or connection broken:\n%s", s)
	}
	// and the connection still works after the server's own KeyUpdate
	req("/v2/third/tags/list")
	waitFor(t, "the third answer", out, answers(3))
}

// A client that sends a record that does not decrypt gets crypto/tls's
// bad_record_mac alert and a closed connection.
func TestTLSMalformedRecord(t *testing.T) {
	up := newUpstream(t)
	tg := startGateway(t, up.URL, baseTOML)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		raw, err := net.Dial("tcp", tg.httpsAddr)
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Client(raw, &tls.Config{RootCAs: tg.roots, ServerName: "registry.test",
			MinVersion: v, MaxVersion: v, NextProtos: []string{"http/1.1"}})
		if err := c.Handshake(); err != nil {
			t.Fatal(err)
		}
		_ = raw.SetDeadline(time.Now().Add(30 * time.Second))
		// application data, 64 bytes that were never sealed by the client
		rec := append([]byte{23, 3, 3, 0, 64}, bytes.Repeat([]byte{0x5a}, 64)...)
		if _, err := raw.Write(rec); err != nil {
			t.Fatal(err)
		}
		_, err = c.Read(make([]byte, 1))
		if err == nil || !strings.Contains(err.Error(), "bad record MAC") {
			t.Fatalf("TLS %x: read after a malformed record: %v, want the server's bad_record_mac alert", v, err)
		}
		// after the alert the server closes: the socket reads EOF
		if _, err := io.ReadAll(raw); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Fatalf("TLS %x: connection not closed cleanly after the alert: %v", v, err)
		}
		_ = c.Close()
	}
}

// recordingConn notes the size of every write crypto/tls makes.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes []int
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, len(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *recordingConn) take() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.writes
	c.writes = nil
	return w
}

// coalesceConn's heuristic rests on what crypto/tls writes: one write per
// record, a full record at least fullRecord bytes, everything else
// shorter, and the record carrying the 9 bytes after a 16 KiB HTTP/2 DATA
// frame matching isFrameTail. This test fails if crypto/tls changes any
// of that, for every version and cipher wharf serves.
func TestCoalesceMatchesCryptoTLSRecords(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, cert := acmetest.SelfSigned(t, dir, "rec-", "registry.test")
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		ver    uint16
		suites []uint16 // TLS 1.2 client offer
	}{
		{"tls13", tls.VersionTLS13, nil},
		{"tls12-aes-gcm", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}},
		{"tls12-chacha", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sc, cc := net.Pipe()
			rec := &recordingConn{Conn: sc}
			srv := tls.Server(rec, &tls.Config{Certificates: []tls.Certificate{pair}})
			roots := x509.NewCertPool()
			roots.AddCert(cert)
			cli := tls.Client(cc, &tls.Config{RootCAs: roots, ServerName: "registry.test",
				MinVersion: tc.ver, MaxVersion: tc.ver, CipherSuites: tc.suites})
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(cli)
				got <- b
			}()
			if err := srv.Handshake(); err != nil {
				t.Fatal(err)
			}
			// past crypto/tls's slow start (small records for the first
			// 128 KiB), as a blob transfer is
			if _, err := srv.Write(make([]byte, 256<<10)); err != nil {
				t.Fatal(err)
			}
			rec.take()
			const n = 64
			if _, err := srv.Write(make([]byte, n*16<<10)); err != nil {
				t.Fatal(err)
			}
			w := rec.take()
			if len(w) != n {
				t.Fatalf("%d KiB in %d writes, want one write per 16 KiB record", n*16, len(w))
			}
			for _, s := range w {
				if s < fullRecord {
					t.Fatalf("a full record is %d bytes, below fullRecord (%d)", s, fullRecord)
				}
			}
			// an HTTP/2 DATA frame: 9-byte header and 16 KiB of data
			if _, err := srv.Write(make([]byte, 9+16<<10)); err != nil {
				t.Fatal(err)
			}
			w = rec.take()
			if len(w) != 2 || w[0] < fullRecord || !isFrameTail(w[1]) {
				t.Fatalf("an HTTP/2 frame of 16 KiB was written as %v; want a full record and one isFrameTail accepts", w)
			}
			// a short answer is one short record
			if _, err := srv.Write([]byte("HTTP/1.1 200 OK\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			if w = rec.take(); len(w) != 1 || w[0] >= fullRecord || isFrameTail(w[0]) {
				t.Fatalf("a short answer was written as %v", w)
			}
			_ = srv.Close()
			<-got
		})
	}
}
