package transport

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/wharf-dev/wharf/acme/acmetest"
)

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

// Conn's record gathering rests on what crypto/tls writes: one write per
// record, a full record at least fullRecord bytes, everything else
// shorter, and the record carrying the 9 bytes after a 16 KiB HTTP/2 DATA
// frame matching isFrameTail. This test fails if crypto/tls changes any
// of that, for every version and cipher wharf serves.
func TestGatherMatchesCryptoTLSRecords(t *testing.T) {
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
