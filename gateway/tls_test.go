package gateway

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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
