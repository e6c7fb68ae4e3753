package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/acme/acmetest"
	"github.com/wharf-dev/wharf/e2e/harness"
)

// timeoutsConfig serves one registry site over TLS (manual certificate) and
// one over plain HTTP, with short header and progress timeouts. The idle
// timeout stays far above every bound the test waits for, so a cut the test
// sees comes from read_header_timeout or progress_timeout, not from it.
const timeoutsConfig = `data_dir = "{{.DataDir}}"

[listen]
http  = "{{.HTTP}}"
https = "{{.HTTPS}}"
admin = ""
read_header_timeout = "2s"
progress_timeout    = "2s"
idle_timeout        = "300s"

[log]
level  = "info"
format = "json"

[[site]]
host    = "tls.test"
backend = "registry"
tls     = "manual"
cert    = "{{.Vars.cert}}"
key     = "{{.Vars.key}}"
[site.registry]
root = "tls"

[[site]]
host    = "plain.test"
backend = "registry"
tls     = "off"
[site.registry]
root = "plain"
`

// Timeouts as configured above, and the bound after which a connection that
// should have been cut counts as never cut. The bound only turns a hang into
// a failure; it is far below idle_timeout so only the timeouts under test
// can explain a cut.
const (
	headerTimeout   = 2 * time.Second
	progressTimeout = 2 * time.Second
	hangBound       = 30 * time.Second
)

// transport is one way of reaching wharf: plain HTTP/1.1 on the http port,
// HTTP/1.1 over TLS, or HTTP/2 over TLS on the https port.
type transport struct {
	name  string
	tls   bool
	h2    bool
	host  string // site host name (Host header and SNI)
	addr  string // where to dial
	roots *x509.CertPool
	log   func() string
}

func (tr *transport) base() string {
	_, port, _ := net.SplitHostPort(tr.addr)
	if tr.tls {
		return "https://" + tr.host + ":" + port
	}
	return "http://" + tr.host + ":" + port
}

// client is a fresh HTTP client (own connections) that dials tr.addr for
// every name and speaks HTTP/2 only when tr.h2.
func (tr *transport) client() *http.Client {
	ht := &http.Transport{
		DisableCompression: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, tr.addr)
		},
	}
	if tr.tls {
		ht.TLSClientConfig = &tls.Config{RootCAs: tr.roots, MinVersion: tls.VersionTLS12}
		if tr.h2 {
			ht.ForceAttemptHTTP2 = true
		} else {
			ht.TLSClientConfig.NextProtos = []string{"http/1.1"}
			ht.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
	}
	return &http.Client{Transport: ht, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// dial opens a raw HTTP/1.1 connection: TCP, or TCP plus a completed TLS
// handshake offering only http/1.1.
func (tr *transport) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", tr.addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", tr.addr, err)
	}
	if !tr.tls {
		return c
	}
	tc := tls.Client(c, &tls.Config{ServerName: tr.host, RootCAs: tr.roots, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12})
	_ = tc.SetDeadline(time.Now().Add(hangBound))
	if err := tc.Handshake(); err != nil {
		c.Close()
		t.Fatalf("TLS handshake with %s: %v", tr.addr, err)
	}
	_ = tc.SetDeadline(time.Time{})
	return tc
}

// TestTimeoutsAgainstBinary drives the built wharf binary over real sockets
// (issue #3, item 5): slowloris headers and a TLS connection that never says
// hello are cut, a slow but steady upload that outlasts both timeouts
// succeeds, a stalled upload is cut without leaving a blob behind, and a
// download to a client that stopped reading is cut; wharf keeps serving
// after every cut. Plain HTTP, HTTP/1.1 over TLS and HTTP/2 over TLS run in
// parallel against one wharf.
func TestTimeoutsAgainstBinary(t *testing.T) {
	dir := t.TempDir()
	cert, key, leaf := acmetest.SelfSigned(t, dir, "", "tls.test")
	w := harness.StartWharf(t, timeoutsConfig, harness.WithVars(map[string]any{"cert": cert, "key": key}))
	roots := x509.NewCertPool()
	roots.AddCert(leaf)

	transports := []*transport{
		{name: "plain", host: "plain.test", addr: w.HTTPAddr},
		{name: "tls", tls: true, host: "tls.test", addr: w.HTTPSAddr, roots: roots},
		{name: "tls-h2", tls: true, h2: true, host: "tls.test", addr: w.HTTPSAddr, roots: roots},
	}
	for _, tr := range transports {
		tr.log = w.Log
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			repo := "timeouts/" + tr.name
			if !tr.h2 {
				t.Run("slowloris headers cut", func(t *testing.T) { testSlowloris(t, tr) })
				t.Run("silent connection cut", func(t *testing.T) { testSilentConn(t, tr) })
			}
			t.Run("slow steady upload survives", func(t *testing.T) { testSlowUpload(t, tr, repo+"/slow") })
			t.Run("stalled upload cut", func(t *testing.T) { testStalledUpload(t, tr, repo+"/stall") })
			t.Run("download to a reader that stopped cut", func(t *testing.T) { testStoppedReader(t, tr, repo+"/big") })
		})
	}
}

// readResult is what a reader goroutine saw when its connection ended.
type readResult struct {
	data []byte
	err  error
	at   time.Time
}

// readUntilClosed reads c until it ends (or hangBound passes) and reports
// what came and how it ended.
func readUntilClosed(c net.Conn) <-chan readResult {
	out := make(chan readResult, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(hangBound))
		b, err := io.ReadAll(c)
		out <- readResult{b, err, time.Now()}
	}()
	return out
}

// closedByServer fails the test unless r is the end of a connection the
// server closed (EOF or reset), not our own hang guard expiring. Any bytes
// the server sent first must not be a successful HTTP answer.
func closedByServer(t *testing.T, what string, r readResult) {
	t.Helper()
	var ne net.Error
	if errors.As(r.err, &ne) && ne.Timeout() {
		t.Fatalf("%s: still open after %s (read: %v); wharf never cut it", what, hangBound, r.err)
	}
	if len(r.data) > 0 && !bytes.HasPrefix(r.data, []byte("HTTP/1.1 4")) && !bytes.HasPrefix(r.data, []byte("HTTP/1.0 4")) {
		t.Fatalf("%s: server answered %q before closing, want nothing or a 4xx", what, firstLine(r.data))
	}
}

func firstLine(b []byte) string {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(string(b))
}

// testSlowloris sends a request line, then one header byte a second and
// never ends the header block: wharf must close the connection after
// read_header_timeout while the client is still trickling.
func testSlowloris(t *testing.T, tr *transport) {
	c := tr.dial(t)
	defer c.Close()
	start := time.Now()
	if _, err := fmt.Fprintf(c, "GET /v2/ HTTP/1.1\r\nHost: %s\r\n", tr.host); err != nil {
		t.Fatalf("request line: %v", err)
	}
	done := readUntilClosed(c)
	header := []byte("X-Slowloris: " + strings.Repeat("a", 64))
	sent := 0
	var res readResult
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
trickle:
	for {
		select {
		case res = <-done:
			break trickle
		case <-tick.C:
			if sent == len(header) {
				t.Fatalf("slowloris: sent %d header bytes over %s and wharf did not close the connection", sent, time.Since(start).Round(time.Millisecond))
			}
			if _, err := c.Write(header[sent : sent+1]); err != nil {
				// The server closed: the reader reports how.
				res = <-done
				break trickle
			}
			sent++
		}
	}
	closedByServer(t, "slowloris", res)
	if sent == len(header) {
		t.Fatalf("slowloris: the whole header line went out before the cut")
	}
	t.Logf("slowloris over %s: cut %s after the request line, %d header bytes trickled (read_header_timeout %s; %v)",
		tr.name, res.at.Sub(start).Round(100*time.Millisecond), sent, headerTimeout, res.err)
}

// testSilentConn opens connections that never finish saying anything: on
// the TLS port one without a ClientHello and one with only the first bytes
// of a TLS record (handshake timeout); on the plain port one that sends no
// byte (header timeout of the first request). Each must be closed by wharf.
func testSilentConn(t *testing.T, tr *transport) {
	type silent struct {
		name  string
		first []byte
	}
	cases := []silent{{"no byte", nil}}
	if tr.tls {
		cases = []silent{
			{"no ClientHello", nil},
			{"partial ClientHello record", []byte{0x16, 0x03, 0x01}},
		}
	}
	for _, sc := range cases {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			c, err := net.DialTimeout("tcp", tr.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			if len(sc.first) > 0 {
				if _, err := c.Write(sc.first); err != nil {
					t.Fatal(err)
				}
			}
			res := <-readUntilClosed(c)
			closedByServer(t, sc.name, res)
			if tr.tls && len(res.data) > 0 && bytes.HasPrefix(res.data, []byte("HTTP/")) {
				t.Fatalf("%s: TLS port answered in plain HTTP: %q", sc.name, firstLine(res.data))
			}
			t.Logf("%s on %s: closed by wharf after %s, %d bytes received (%v)", sc.name, tr.name, res.at.Sub(start).Round(100*time.Millisecond), len(res.data), res.err)
		})
	}
}

// trickle hands out data in chunks, sleeping gap before every chunk but
// the first: a body that is slow but never still for long. A chunk may
// take several reads (the client's copy buffer may be smaller); only the
// start of a chunk waits.
type trickle struct {
	data  []byte
	chunk int
	gap   time.Duration
	left  int // bytes left of the current chunk
	began bool
	// When the client asked for each chunk after the first (before its
	// sleep) and when the chunk went out (after it): on a failure they
	// tell a client that overslept or could not write from a server that
	// stopped reading.
	mu               sync.Mutex
	asked, startedAt []time.Time
}

// pacing describes the client's side of the upload, relative to start.
func (s *trickle) pacing(start time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	rel := func(ts []time.Time) string {
		var out []string
		for _, t := range ts {
			out = append(out, t.Sub(start).Round(time.Millisecond).String())
		}
		return strings.Join(out, " ")
	}
	return fmt.Sprintf("client asked for chunks 2.. at %s; chunks went out at %s (gap %s)", rel(s.asked), rel(s.startedAt), s.gap)
}

func (s *trickle) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	if s.left == 0 {
		if s.began {
			s.mu.Lock()
			s.asked = append(s.asked, time.Now())
			s.mu.Unlock()
			time.Sleep(s.gap)
		}
		s.began = true
		s.left = s.chunk
		s.mu.Lock()
		s.startedAt = append(s.startedAt, time.Now())
		s.mu.Unlock()
	}
	n := min(len(p), s.left, len(s.data))
	copy(p, s.data[:n])
	s.data = s.data[n:]
	s.left -= n
	return n, nil
}

// piece bounds every call into assembly or the vDSO on large test data.
// Such a call cannot be preempted, and a goroutine inside it keeps its P's
// timers from firing: crypto/rand.Read or sha256.Sum256 over the 64 MiB
// blob of the stopped-reader test, running in parallel with the slow
// upload, made the slow upload's 500 ms sleep between chunks last 3-6 s
// on a machine at load 25-30 (GOMAXPROCS=2), so the client itself went
// quiet for longer than progress_timeout and wharf rightly cut it. In
// 1 MiB pieces the worst oversleep there was ~0.25 s.
const piece = 1 << 20

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	for i := 0; i < n; i += piece {
		if _, err := rand.Read(b[i:min(i+piece, n)]); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func digestOf(b []byte) string {
	h := sha256.New()
	for i := 0; i < len(b); i += piece {
		h.Write(b[i:min(i+piece, len(b))])
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// do sends one request with ctx bounded by hangBound and checks the
// transport it went over.
func (tr *transport) do(t *testing.T, c *http.Client, method, u string, body io.Reader, contentLength int64) (*http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		cancel()
		t.Fatalf("%s %s: %v", method, u, err)
	}
	if body != nil {
		req.ContentLength = contentLength
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := c.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	if tr.h2 != (resp.ProtoMajor == 2) {
		resp.Body.Close()
		t.Fatalf("%s %s went over %s, want h2=%v", method, u, resp.Proto, tr.h2)
	}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// mustDo is do plus a status check; it returns the body.
func (tr *transport) mustDo(t *testing.T, c *http.Client, method, u string, body io.Reader, contentLength int64, want int) (*http.Response, []byte) {
	t.Helper()
	resp, err := tr.do(t, c, method, u, body, contentLength)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read answer: %v", method, u, err)
	}
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s, want %d", method, u, resp.StatusCode, b, want)
	}
	return resp, b
}

// startUpload opens an upload session and returns its absolute location.
func (tr *transport) startUpload(t *testing.T, c *http.Client, repo string) string {
	t.Helper()
	resp, _ := tr.mustDo(t, c, http.MethodPost, tr.base()+"/v2/"+repo+"/blobs/uploads/", nil, 0, http.StatusAccepted)
	return tr.resolve(t, resp)
}

func (tr *transport) resolve(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, _ := url.Parse(tr.base())
	l, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		t.Fatalf("Location %q: %v", resp.Header.Get("Location"), err)
	}
	return b.ResolveReference(l).String()
}

func withDigest(t *testing.T, loc, digest string) string {
	t.Helper()
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("digest", digest)
	u.RawQuery = q.Encode()
	return u.String()
}

// pushChunked uploads body with one chunked PATCH and a PUT with the digest.
func (tr *transport) pushChunked(t *testing.T, c *http.Client, repo string, body io.Reader, digest string) {
	t.Helper()
	loc := tr.startUpload(t, c, repo)
	resp, _ := tr.mustDo(t, c, http.MethodPatch, loc, body, -1, http.StatusAccepted)
	tr.mustDo(t, c, http.MethodPut, withDigest(t, tr.resolve(t, resp), digest), nil, 0, http.StatusCreated)
}

// pullVerify GETs a blob and checks its length and digest.
func (tr *transport) pullVerify(t *testing.T, c *http.Client, repo, digest string, size int) {
	t.Helper()
	resp, err := tr.do(t, c, http.MethodGet, tr.base()+"/v2/"+repo+"/blobs/"+digest, nil, 0)
	if err != nil {
		t.Fatalf("GET blob %s: %v", digest, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET blob %s: %d %s", digest, resp.StatusCode, b)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("GET blob %s: after %d bytes: %v", digest, n, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest || n != int64(size) {
		t.Fatalf("GET blob: %d bytes %s, pushed %d bytes %s", n, got, size, digest)
	}
}

// headStatus is the status of HEAD on a blob.
func (tr *transport) headStatus(t *testing.T, c *http.Client, repo, digest string) int {
	t.Helper()
	resp, err := tr.do(t, c, http.MethodHead, tr.base()+"/v2/"+repo+"/blobs/"+digest, nil, 0)
	if err != nil {
		t.Fatalf("HEAD blob %s: %v", digest, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// healthy proves wharf still serves: a fresh client pushes a blob and pulls
// it back intact.
func (tr *transport) healthy(t *testing.T, repo string) {
	t.Helper()
	c := tr.client()
	defer c.CloseIdleConnections()
	b := randomBytes(t, 1<<20)
	d := digestOf(b)
	tr.pushChunked(t, c, repo, bytes.NewReader(b), d)
	tr.pullVerify(t, c, repo, d, len(b))
}

// testSlowUpload: 64 KiB every 500 ms for about 6 s, three times
// progress_timeout and read_header_timeout, in one chunked PATCH. No gap
// reaches progress_timeout, so wharf must take all of it; the blob then
// pulls back with the right digest.
func testSlowUpload(t *testing.T, tr *transport, repo string) {
	c := tr.client()
	defer c.CloseIdleConnections()
	const chunk, chunks, gap = 64 << 10, 13, 500 * time.Millisecond
	data := randomBytes(t, chunk*chunks)
	d := digestOf(data)
	start := time.Now()
	body := &trickle{data: data, chunk: chunk, gap: gap}
	defer func() {
		if t.Failed() {
			t.Log(body.pacing(start))
		}
	}()
	tr.pushChunked(t, c, repo, body, d)
	took := time.Since(start)
	if took <= progressTimeout+headerTimeout {
		// The body is paced by the test itself, so this only guards the
		// test's own premise, not wharf's speed.
		t.Fatalf("the slow upload took %s, not longer than the timeouts it must outlast", took)
	}
	tr.pullVerify(t, c, repo, d, len(data))
	t.Logf("slow upload over %s: %d KiB in %s (%d chunks %s apart) accepted and pulled back as %s", tr.name, len(data)>>10, took.Round(100*time.Millisecond), chunks, gap, d)
}

// stallingBody hands out head, then blocks until it is closed and fails: a
// client that stopped sending mid-body. The HTTP client closes it when the
// exchange ends, which also ends the blocked read. An HTTP/1 client waits
// for a blocked body read even after its context ends, so the stall itself
// gives up after hangBound and says so in gaveUp.
type stallingBody struct {
	head    []byte
	release chan struct{}
	once    sync.Once
	gaveUp  atomic.Bool
}

// Close ends the stall.
func (s *stallingBody) Close() error {
	s.once.Do(func() { close(s.release) })
	return nil
}

func (s *stallingBody) Read(p []byte) (int, error) {
	if len(s.head) > 0 {
		n := copy(p, s.head)
		s.head = s.head[n:]
		return n, nil
	}
	select {
	case <-s.release:
		return 0, errors.New("test client closed the stalled body")
	case <-time.After(hangBound):
		s.gaveUp.Store(true)
		return 0, errors.New("test client gave up on the stall")
	}
}

// testStalledUpload: a chunked PATCH sends 256 KiB of a 1 MiB blob and then
// nothing. wharf must end the request (error answer or closed connection)
// after progress_timeout, must not let the session be committed under the
// whole blob's digest, must show neither the whole nor the partial blob,
// and must keep serving.
func testStalledUpload(t *testing.T, tr *transport, repo string) {
	c := tr.client()
	defer c.CloseIdleConnections()
	data := randomBytes(t, 1<<20)
	full, sent := digestOf(data), 256<<10
	partial := digestOf(data[:sent])
	loc := tr.startUpload(t, c, repo)

	body := &stallingBody{head: data[:sent], release: make(chan struct{})}
	defer body.Close()
	start := time.Now()
	resp, err := tr.do(t, c, http.MethodPatch, loc, body, -1)
	took := time.Since(start)
	switch {
	case errors.Is(err, context.DeadlineExceeded) || body.gaveUp.Load():
		t.Fatalf("stalled upload: still open after %s; wharf never cut it", hangBound)
	case err != nil:
		t.Logf("stalled upload over %s: cut after %s: %v", tr.name, took.Round(100*time.Millisecond), err)
	default:
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Fatalf("stalled upload: answered %d %s, want a 4xx (the client stalled) or a cut connection", resp.StatusCode, b)
		}
		t.Logf("stalled upload over %s: answered after %s: %d %s", tr.name, took.Round(100*time.Millisecond), resp.StatusCode, bytes.TrimSpace(b))
		// The answer says what happened in the user's terms, not with
		// the server's socket addresses.
		if !bytes.Contains(b, []byte("progress timeout")) || bytes.Contains(b, []byte("127.0.0.1")) {
			t.Errorf("stalled upload answer %s: want it to name the progress timeout and no socket address", b)
		}
	}
	_ = body.Close()

	// No blob, whole or partial, is visible.
	for _, d := range []string{full, partial} {
		if st := tr.headStatus(t, c, repo, d); st != http.StatusNotFound {
			t.Errorf("after the stalled upload HEAD %s = %d, want 404", d, st)
		}
	}
	// The session may keep what arrived (for a resume), but never more than
	// was sent, and it cannot be committed as the whole blob.
	resp, err = tr.do(t, c, http.MethodGet, loc, nil, 0)
	if err != nil {
		t.Fatalf("upload status: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		if r := resp.Header.Get("Range"); r != "" {
			_, end, _ := strings.Cut(r, "-")
			if n, err := strconv.Atoi(end); err != nil || n+1 > sent {
				t.Errorf("upload session after the stall reports Range %q; only %d bytes were sent", r, sent)
			}
			t.Logf("upload session after the stall: Range %s (resumable)", r)
		}
	} else if resp.StatusCode != http.StatusNotFound {
		t.Errorf("upload status after the stall: %d, want 204 or 404", resp.StatusCode)
	}
	resp, err = tr.do(t, c, http.MethodPut, withDigest(t, loc, full), nil, 0)
	if err != nil {
		t.Fatalf("PUT the stalled session: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode < 400 || resp.StatusCode >= 500 {
		t.Errorf("PUT ?digest=<whole blob> on the stalled session: %d %s, want a 4xx", resp.StatusCode, b)
	}
	if st := tr.headStatus(t, c, repo, full); st != http.StatusNotFound {
		t.Errorf("after committing the stalled session was refused, HEAD %s = %d, want 404", full, st)
	}
	tr.healthy(t, repo+"-after")
}

// accessLine is the part of wharf's JSON access log the test reads.
type accessLine struct {
	Message string `json:"message"`
	Method  string `json:"method"`
	Path    string `json:"path"`
	Status  int    `json:"status"`
	Bytes   int64  `json:"bytes"`
}

// waitAccessLine waits (up to hangBound) for wharf to log the end of a
// request for method and path, i.e. for the handler to return.
func waitAccessLine(t *testing.T, tr *transport, method, path string) (accessLine, bool) {
	t.Helper()
	deadline := time.Now().Add(hangBound)
	for {
		sc := bufio.NewScanner(strings.NewReader(tr.log()))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var l accessLine
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Message == "request" && l.Method == method && l.Path == path {
				return l, true
			}
		}
		if time.Now().After(deadline) {
			return accessLine{}, false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// testStoppedReader pushes a 64 MiB blob (far more than the socket buffers
// and HTTP/2 windows hold), starts downloading it, reads 1 KiB and stops
// reading. wharf's writes then make no progress; it must give up after
// progress_timeout, which its access log shows as the request ending. Only
// then does the client read again: the body must end early, short of the
// blob. wharf keeps serving afterwards.
func testStoppedReader(t *testing.T, tr *transport, repo string) {
	const size = 64 << 20
	data := randomBytes(t, size)
	d := digestOf(data)
	c := tr.client()
	defer c.CloseIdleConnections()
	tr.pushChunked(t, c, repo, bytes.NewReader(data), d)
	path := "/v2/" + repo + "/blobs/" + d

	var body io.Reader
	var closeBody func()
	if tr.h2 {
		// No deadline on this request: only wharf may end it while the
		// test waits for its access-log line.
		ctx, cancel := context.WithCancel(context.Background())
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, tr.base()+path, nil)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("GET blob: %v", err)
		}
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			cancel()
			t.Fatalf("GET blob: %d over %s", resp.StatusCode, resp.Proto)
		}
		body, closeBody = resp.Body, func() { resp.Body.Close(); cancel() }
	} else {
		conn := tr.dial(t)
		if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, tr.host); err != nil {
			t.Fatalf("send GET: %v", err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(hangBound))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("GET blob: %v", err)
		}
		if resp.StatusCode != http.StatusOK || resp.ContentLength != size {
			t.Fatalf("GET blob: %d, %d bytes", resp.StatusCode, resp.ContentLength)
		}
		body, closeBody = resp.Body, func() { conn.Close() }
	}
	defer closeBody()
	got := make([]byte, 1<<10)
	if _, err := io.ReadFull(body, got); err != nil {
		t.Fatalf("read the first KiB: %v", err)
	}
	start := time.Now()
	l, ok := waitAccessLine(t, tr, http.MethodGet, path)
	if !ok {
		t.Fatalf("download to a client that stopped reading after 1 KiB: wharf's handler was still running %s later "+
			"(no access-log line for GET %s; progress_timeout is %s)", hangBound, path, progressTimeout)
	}
	t.Logf("download over %s: wharf ended the request %s after the client stopped reading: status %d, %d of %d bytes written",
		tr.name, time.Since(start).Round(100*time.Millisecond), l.Status, l.Bytes, size)
	n, err := io.Copy(io.Discard, body)
	total := int64(len(got)) + n
	if err == nil || total >= size {
		t.Fatalf("after the cut the client still read %d of %d bytes and the body ended with %v; want a short, broken body", total, size, err)
	}
	t.Logf("client resumed reading: %d of %d bytes, then %v", total, size, err)
	tr.healthy(t, repo+"-after")
}
