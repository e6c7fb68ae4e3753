package tlsca

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestServeAndVerify serves HTTPS with the generated certificate and checks
// that a client trusting only the generated CA accepts it for each name.
func TestServeAndVerify(t *testing.T) {
	names := []string{"registry.bench.test", "127.0.0.1"}
	f, err := New(t.TempDir(), names)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	for _, name := range names {
		c, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", port), &tls.Config{RootCAs: f.Pool, ServerName: name})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c.Close()
	}
	if c, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", port), &tls.Config{RootCAs: f.Pool, ServerName: "other.test"}); err == nil {
		c.Close()
		t.Fatal("certificate accepted for a name it does not carry")
	}
}
