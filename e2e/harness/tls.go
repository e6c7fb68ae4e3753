package harness

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"
)

// WaitCertificate polls a TLS handshake with addr for serverName until the
// certificate verifies against roots (an ACME server may take a few
// seconds to issue it). It returns the verified leaf certificate.
func WaitCertificate(t testing.TB, addr, serverName string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	deadline := time.Now().Add(2 * readyTimeout)
	for {
		d := &net.Dialer{Timeout: 2 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: serverName, RootCAs: roots, MinVersion: tls.VersionTLS12})
		if err == nil {
			leaf := c.ConnectionState().PeerCertificates[0]
			_ = c.Close()
			return leaf
		}
		if time.Now().After(deadline) {
			t.Fatalf("no valid certificate for %s on %s: %v", serverName, addr, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
