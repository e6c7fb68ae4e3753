package tlsout

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/acme/acmetest"
)

// testCert makes a self-signed certificate for 127.0.0.1 (acmetest's)
// and writes it to dir/cert.pem for clients.
func testCert(t *testing.T, dir string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	certFile, keyFile, leaf := acmetest.SelfSigned(t, dir, "", "127.0.0.1", "localhost")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return cert, pool
}

// server is an http.Server on a tlsout.Listener that answers
//
//	/file        the test file, through ReadFrom (readv)
//	/range       bytes 1000..(size-1000) of it, as net/http sends a range
//	/stream      the file through a reader that is not a file
//	/write       the file through Write in 100,000-byte pieces
//	/small       "hello"
//	/kind        the connection type the handler ran on
//	/upload      sha256 of the request body
type server struct {
	url   string
	file  string
	sum   string
	size  int64
	kinds atomic.Value
	conn  atomic.Pointer[Conn] // the last tlsout connection
	pool  *x509.CertPool
	dir   string
}

func startServer(t *testing.T, cfg *tls.Config, size int64) *server {
	t.Helper()
	return startServerPlain(t, cfg, size, false)
}

func startServerPlain(t *testing.T, cfg *tls.Config, size int64, plain bool) *server {
	t.Helper()
	dir := t.TempDir()
	cert, pool := testCert(t, dir)
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg.Certificates = []tls.Certificate{cert}
	if cfg.NextProtos == nil {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	s := &server{file: filepath.Join(dir, "blob"), size: size, pool: pool, dir: dir}
	data := make([]byte, size)
	_, _ = rand.Read(data)
	if err := os.WriteFile(s.file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	s.sum = hex.EncodeToString(sum[:])
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := NewListener(ln, Config{TLS: cfg, HandshakeTimeout: 5 * time.Second, Plain: plain})
	mux := http.NewServeMux()
	open := func(t *testing.T) *os.File {
		f, err := os.Open(s.file)
		if err != nil {
			t.Error(err)
		}
		return f
	}
	mux.HandleFunc("/file", func(w http.ResponseWriter, r *http.Request) {
		f := open(t)
		defer f.Close()
		w.Header().Set("Content-Length", fmt.Sprint(size))
		_, _ = io.Copy(w, f)
	})
	mux.HandleFunc("/range", func(w http.ResponseWriter, r *http.Request) {
		f := open(t)
		defer f.Close()
		_, _ = f.Seek(1000, io.SeekStart)
		w.Header().Set("Content-Length", fmt.Sprint(size-2000))
		_, _ = io.CopyN(w, f, size-2000)
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		f := open(t)
		defer f.Close()
		_, _ = io.Copy(w, struct{ io.Reader }{f})
	})
	mux.HandleFunc("/write", func(w http.ResponseWriter, r *http.Request) {
		for off := 0; off < len(data); off += 100000 {
			_, _ = w.Write(data[off:min(off+100000, len(data))])
		}
	})
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello") })
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		_, _ = io.Copy(h, r.Body)
		_, _ = io.WriteString(w, hex.EncodeToString(h.Sum(nil)))
	})
	srv := &http.Server{Handler: mux, ConnContext: func(ctx context.Context, c net.Conn) context.Context {
		s.kinds.Store(fmt.Sprintf("%T", c))
		if tc, ok := c.(*Conn); ok {
			s.conn.Store(tc)
		}
		return ctx
	}}
	go func() { _ = srv.Serve(tl) }()
	t.Cleanup(func() { _ = srv.Close(); _ = tl.Close() })
	s.url = "https://" + ln.Addr().String()
	return s
}

// readvs is the number of vectored file reads of the last tlsout.Conn.
func (s *server) readvs() int64 {
	var n int64
	s.lastConn(func(c *Conn) { n = c.readvs })
	return n
}

// lastConn runs f on the last tlsout.Conn, its write lock held.
func (s *server) lastConn(f func(c *Conn)) {
	c := s.conn.Load()
	if c == nil {
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	f(c)
}

func (s *server) client(h2 bool, maxVersion uint16) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: s.pool, MaxVersion: maxVersion},
		ForceAttemptHTTP2: h2,
	}
	return &http.Client{Transport: tr, Timeout: time.Minute}
}

func get(t *testing.T, c *http.Client, url string) []byte {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read: %v", url, err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return b
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestGoClients(t *testing.T) {
	const size = 5<<20 + 12345 // not a multiple of a record or a batch
	s := startServer(t, nil, size)
	data, _ := os.ReadFile(s.file)
	for _, tc := range []struct {
		name     string
		h2       bool
		max      uint16
		wantKind string
	}{
		{"http1.1 over TLS 1.3", false, 0, "*tlsout.Conn"},
		{"http2 over TLS 1.3", true, 0, "*tls.Conn"},
		{"http1.1 over TLS 1.2", false, tls.VersionTLS12, "*tls.Conn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := s.client(tc.h2, tc.max)
			// Several requests on one connection: the sequence numbers
			// must carry on from one answer to the next.
			for i := 0; i < 2; i++ {
				if got := string(get(t, c, s.url+"/small")); got != "hello" {
					t.Fatalf("/small = %q", got)
				}
				if kind := s.kinds.Load(); kind != tc.wantKind {
					t.Fatalf("connection type %v, want %s", kind, tc.wantKind)
				}
				if got := sum(get(t, c, s.url+"/file")); got != s.sum {
					t.Fatalf("/file sha256 %s, want %s", got, s.sum)
				}
				if tc.wantKind == "*tlsout.Conn" {
					// io.Copy hands net/http the file wrapped by
					// os.File.WriteTo; it must still be read with readv.
					if n := s.readvs(); n < size/(batchRecords*maxPlaintext) {
						t.Fatalf("%d readv calls for /file, want at least %d", n, size/(batchRecords*maxPlaintext))
					}
				}
				if got := get(t, c, s.url+"/range"); !bytes.Equal(got, data[1000:size-1000]) {
					t.Fatalf("/range: %d bytes, not the middle of the file", len(got))
				}
				if got := sum(get(t, c, s.url+"/stream")); got != s.sum {
					t.Fatalf("/stream sha256 %s", got)
				}
				if got := sum(get(t, c, s.url+"/write")); got != s.sum {
					t.Fatalf("/write sha256 %s", got)
				}
				resp, err := c.Post(s.url+"/upload", "application/octet-stream", bytes.NewReader(data))
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != s.sum {
					t.Fatalf("/upload answered %q, want %s", b, s.sum)
				}
			}
		})
	}
}

// Without session tickets crypto/tls sends no record under the
// application key during the handshake, with them one: both counts must
// come out right, or the client could not decrypt a single answer.
func TestSequenceAfterHandshake(t *testing.T) {
	for _, noTickets := range []bool{false, true} {
		t.Run(fmt.Sprintf("SessionTicketsDisabled=%v", noTickets), func(t *testing.T) {
			s := startServer(t, &tls.Config{SessionTicketsDisabled: noTickets}, 100<<10)
			// Go's client offers to take tickets (psk_dhe_ke) only when it
			// has a session cache.
			c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
				RootCAs: s.pool, ClientSessionCache: tls.NewLRUClientSessionCache(1)}}}
			if got := sum(get(t, c, s.url+"/file")); got != s.sum {
				t.Fatalf("sha256 %s", got)
			}
			if kind := s.kinds.Load(); kind != "*tlsout.Conn" {
				t.Fatalf("connection type %v", kind)
			}
			// The server's one ticket is the one record under the
			// application key before Conn takes over.
			want := uint64(1)
			if noTickets {
				want = 0
			}
			var first uint64
			s.lastConn(func(c *Conn) { first = c.firstSeq })
			if first != want {
				t.Fatalf("take-over started at sequence number %d, want %d", first, want)
			}
		})
	}
}

// A resumed session (a ticket from an earlier connection) takes over too.
func TestResumedSession(t *testing.T) {
	s := startServer(t, nil, 100<<10)
	cache := tls.NewLRUClientSessionCache(4)
	for i := 0; i < 3; i++ {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.pool, ClientSessionCache: cache}, DisableKeepAlives: true}
		c := &http.Client{Transport: tr}
		resp, err := c.Get(s.url + "/file")
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || sum(b) != s.sum {
			t.Fatalf("connection %d: %d bytes, sha256 %s, %v", i, len(b), sum(b), err)
		}
		// The per-connection configuration must not lose the session
		// ticket keys of the listener's configuration.
		if resumed := resp.TLS.DidResume; resumed != (i > 0) {
			t.Fatalf("connection %d: DidResume = %v", i, resumed)
		}
		if kind := s.kinds.Load(); kind != "*tlsout.Conn" {
			t.Fatalf("connection %d: type %v", i, kind)
		}
		tr.CloseIdleConnections()
	}
}

// Past rekeyAfter records the server sends a KeyUpdate and carries on
// under the next key; the client follows.
func TestKeyUpdate(t *testing.T) {
	old := rekeyAfter
	rekeyAfter = batchRecords + 3
	t.Cleanup(func() { rekeyAfter = old })
	s := startServer(t, nil, 3<<20)
	c := s.client(false, 0)
	for _, p := range []string{"/file", "/write", "/stream"} {
		if got := sum(get(t, c, s.url+p)); got != s.sum {
			t.Fatalf("%s after key updates: sha256 %s", p, got)
		}
	}
	var updates int64
	s.lastConn(func(c *Conn) { updates = c.updates })
	if min := int64(3 << 20 * 3 / maxPlaintext / (batchRecords + 3)); updates < min {
		t.Fatalf("%d KeyUpdates sent for 9 MiB, want at least %d", updates, min)
	}
}

// curl (OpenSSL) checks the records with another TLS stack, and lets the
// test pick each TLS 1.3 cipher suite.
func TestCurlCipherSuites(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("curl is missing and CI is set")
		}
		t.Skip("SKIPPING: curl not installed")
	}
	s := startServer(t, nil, 3<<20+7)
	for _, suite := range []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"} {
		t.Run(suite, func(t *testing.T) {
			out, err := exec.Command(curl, "-sS", "--fail", "--http1.1", "--tlsv1.3", "--tls13-ciphers", suite,
				"--cacert", filepath.Join(s.dir, "cert.pem"),
				"-o", filepath.Join(s.dir, "out"), s.url+"/file",
				"-o", filepath.Join(s.dir, "out2"), s.url+"/range").CombinedOutput()
			if err != nil {
				t.Fatalf("curl: %v: %s", err, out)
			}
			got, _ := os.ReadFile(filepath.Join(s.dir, "out"))
			if sum(got) != s.sum {
				t.Fatalf("curl got %d bytes, sha256 %s", len(got), sum(got))
			}
			if kind := s.kinds.Load(); kind != "*tlsout.Conn" {
				t.Fatalf("connection type %v", kind)
			}
			mid, _ := os.ReadFile(filepath.Join(s.dir, "out2"))
			if int64(len(mid)) != s.size-2000 {
				t.Fatalf("range: %d bytes", len(mid))
			}
		})
	}
}

// Plain HTTP on the TLS port gets net/http's short 400, as before.
func TestPlainHTTPToTLSPort(t *testing.T) {
	s := startServer(t, nil, 10)
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "https://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(conn)
	if !strings.HasPrefix(string(b), "HTTP/1.0 400 Bad Request") {
		t.Fatalf("answer %q", b)
	}
}

// A client that connects and never sends a ClientHello is cut after
// HandshakeTimeout, and does not hold up other clients meanwhile.
func TestSilentClientDoesNotBlockAccept(t *testing.T) {
	s := startServer(t, nil, 10)
	addr := strings.TrimPrefix(s.url, "https://")
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if got := string(get(t, s.client(false, 0), s.url+"/small")); got != "hello" {
		t.Fatalf("/small = %q while a silent client is connected", got)
	}
	_ = silent.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Fatal("silent client got data")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("silent client was not cut by the handshake timeout")
	}
}

// With Plain (the stock_tls setting) every connection stays a *tls.Conn.
func TestPlainKeepsCryptoTLS(t *testing.T) {
	s := startServerPlain(t, nil, 1<<20, true)
	if got := sum(get(t, s.client(false, 0), s.url+"/file")); got != s.sum {
		t.Fatalf("sha256 %s", got)
	}
	if kind := s.kinds.Load(); kind != "*tls.Conn" {
		t.Fatalf("connection type %v with Plain, want *tls.Conn", kind)
	}
}
