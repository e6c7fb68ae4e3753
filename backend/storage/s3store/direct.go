package s3store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Blob reads from an S3 server reached over plain HTTP (MinIO, versitygw,
// Ceph RGW on a private network) take a direct path: a pre-signed GET on
// a TCP connection wharf holds itself, whose body the kernel then splices
// into the client's connection. A profile of a pull through net/http's
// client showed 89% of wharf's CPU in the read and write system calls
// that copy every byte into wharf and out again; splice(2) moves the
// pages without either copy. net/http's client cannot serve this: its
// connection and the bytes it has buffered are not reachable.
//
// The direct path only ever serves a successful answer: any other status
// (503 SlowDown, 404, 403) or a failed connection makes the caller ask
// again through minio-go, which retries with back-off and turns the
// error into the same errors every other call gets.

const (
	// directIdle is how many idle connections are kept for reuse.
	directIdle = 16
	// directIdleTime is how long an idle connection may wait for reuse;
	// below the idle timeouts S3 servers use (versitygw, MinIO: >= 30 s).
	directIdleTime = 20 * time.Second
	// spliceChunk is how much one splice round moves before the stall
	// deadline is pushed forward again.
	spliceChunk = 8 << 20
	// presignTTL bounds the pre-signed URL, which is used at once.
	presignTTL = 15 * time.Minute
)

// direct dials and pools the connections of the direct path.
type direct struct {
	addr   string // host:port of the endpoint
	dialer net.Dialer
	// answer bounds the wait for an answer's header, stall a body that
	// sends nothing (Waits: a hung S3 server must not hang the pull).
	answer, stall time.Duration

	mu     sync.Mutex
	idle   []*directConn
	closed bool // the store is closed: nothing is pooled any more
}

// directConn is one HTTP/1.1 connection to the S3 server and its read
// buffer (which may hold the start of a body).
type directConn struct {
	c    *net.TCPConn
	br   *bufio.Reader
	used time.Time
}

func newDirect(host string, w Waits) *direct {
	addr := host
	if _, _, err := net.SplitHostPort(host); err != nil {
		addr = net.JoinHostPort(strings.Trim(host, "[]"), "80")
	}
	return &direct{addr: addr, dialer: net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}, answer: w.Answer, stall: w.Stall}
}

func (d *direct) get() *directConn {
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(d.idle) > 0 {
		dc := d.idle[len(d.idle)-1]
		d.idle = d.idle[:len(d.idle)-1]
		if time.Since(dc.used) < directIdleTime {
			return dc
		}
		dc.c.Close()
	}
	return nil
}

// put keeps a connection whose last answer was read completely.
func (d *direct) put(dc *directConn) {
	if dc.br.Buffered() != 0 || dc.c.SetDeadline(time.Time{}) != nil {
		dc.c.Close()
		return
	}
	dc.used = time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		dc.c.Close()
		return
	}
	if len(d.idle) >= directIdle {
		d.idle[0].c.Close()
		d.idle = append(d.idle[:0], d.idle[1:]...)
	}
	d.idle = append(d.idle, dc)
}

func (d *direct) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, dc := range d.idle {
		dc.c.Close()
	}
	d.idle = nil
	d.closed = true
}

func (d *direct) dial(ctx context.Context) (*directConn, error) {
	c, err := d.dialer.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("dial %s: not a TCP connection", d.addr)
	}
	return &directConn{c: tc, br: bufio.NewReaderSize(tc, 16<<10)}, nil
}

// directBody is an answer's body still on its connection.
type directBody struct {
	dc    *directConn
	left  int64 // body bytes not yet read
	reuse bool  // the server keeps the connection open after the body
	stall time.Duration
}

// errNotDirect says the direct path did not get a usable answer; the
// caller asks through minio-go instead.
var errNotDirect = errors.New("s3: direct read not possible")

// openDirect sends a pre-signed GET of key from byte off and returns the body
// of a 200 (off 0) or matching 206 answer and the object's size. Every
// other outcome is errNotDirect (wrapping what happened).
func (s *Store) openDirect(ctx context.Context, key string, off int64) (*directBody, int64, error) {
	u, err := s.c.PresignedGetObject(ctx, s.bucket, key, presignTTL, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: presign: %v", errNotDirect, err)
	}
	var req strings.Builder
	req.WriteString("GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: wharf\r\n")
	if off > 0 {
		req.WriteString("Range: bytes=" + strconv.FormatInt(off, 10) + "-\r\n")
	}
	req.WriteString("\r\n")
	// A pooled connection the server has meanwhile closed fails before
	// any answer: then once more on a new one.
	for attempt := 0; attempt < 2; attempt++ {
		var dc *directConn
		if attempt == 0 {
			dc = s.direct.get()
		}
		reused := dc != nil
		if !reused {
			if dc, err = s.direct.dial(ctx); err != nil {
				return nil, 0, fmt.Errorf("%w: %v", errNotDirect, err)
			}
		}
		body, size, err := s.direct.roundTrip(ctx, dc, req.String(), off)
		if err == nil {
			return body, size, nil
		}
		dc.c.Close()
		if !reused || !errors.Is(err, errNoAnswer) {
			return nil, 0, fmt.Errorf("%w: %v", errNotDirect, err)
		}
	}
	return nil, 0, errNotDirect
}

// errNoAnswer: the connection ended before any answer came.
var errNoAnswer = errors.New("no answer")

// roundTrip sends req on dc and reads the answer's header; a usable
// answer leaves its body on the connection.
func (d *direct) roundTrip(ctx context.Context, dc *directConn, req string, off int64) (*directBody, int64, error) {
	deadline := time.Now().Add(d.answer)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := dc.c.SetDeadline(deadline); err != nil {
		return nil, 0, fmt.Errorf("%w: %v", errNoAnswer, err)
	}
	stop := context.AfterFunc(ctx, func() { dc.c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.WriteString(dc.c, req); err != nil {
		return nil, 0, fmt.Errorf("%w: %v", errNoAnswer, err)
	}
	if _, err := dc.br.Peek(1); err != nil {
		return nil, 0, fmt.Errorf("%w: %v", errNoAnswer, err)
	}
	resp, err := http.ReadResponse(dc.br, nil)
	if err != nil {
		return nil, 0, err
	}
	if len(resp.TransferEncoding) > 0 || resp.ContentLength < 0 {
		return nil, 0, fmt.Errorf("answer %s without a plain Content-Length", resp.Status)
	}
	size := resp.ContentLength
	switch {
	case off == 0 && resp.StatusCode == http.StatusOK:
	case off > 0 && resp.StatusCode == http.StatusPartialContent:
		first, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || first != off || total-off != resp.ContentLength {
			return nil, 0, fmt.Errorf("answer to a range from %d: Content-Range %q, %d bytes", off, resp.Header.Get("Content-Range"), resp.ContentLength)
		}
		size = total
	default:
		return nil, 0, fmt.Errorf("answer %s", resp.Status)
	}
	return &directBody{dc: dc, left: resp.ContentLength, reuse: !resp.Close, stall: d.stall}, size, nil
}

// parseContentRange reads "bytes first-last/total".
func parseContentRange(h string) (first, total int64, ok bool) {
	r, found := strings.CutPrefix(h, "bytes ")
	if !found {
		return 0, 0, false
	}
	span, tot, found := strings.Cut(r, "/")
	a, _, found2 := strings.Cut(span, "-")
	if !found || !found2 {
		return 0, 0, false
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	total, err2 := strconv.ParseInt(tot, 10, 64)
	return first, total, err1 == nil && err2 == nil && first >= 0 && total > first
}

// arm pushes the stall deadline forward and makes ctx's end fail the
// reads until the returned func is called.
func (b *directBody) arm(ctx context.Context) (func() bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	_ = b.dc.c.SetReadDeadline(time.Now().Add(b.stall))
	return context.AfterFunc(ctx, func() { b.dc.c.SetReadDeadline(time.Unix(1, 0)) }), nil
}

// Read reads body bytes; a connection that ends early is
// io.ErrUnexpectedEOF.
func (b *directBody) Read(ctx context.Context, p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	stop, err := b.arm(ctx)
	if err != nil {
		return 0, err
	}
	n, err := b.dc.br.Read(p)
	stop()
	b.left -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// WriteTo sends the rest of the body to w: what the read buffer holds
// first, then the connection itself through w's ReadFrom, which on a
// plain-HTTP client connection is splice(2).
func (b *directBody) WriteTo(ctx context.Context, w io.Writer) (int64, error) {
	var n int64
	if k := min(int64(b.dc.br.Buffered()), b.left); k > 0 {
		head, _ := b.dc.br.Peek(int(k))
		m, err := w.Write(head)
		_, _ = b.dc.br.Discard(m)
		n += int64(m)
		b.left -= int64(m)
		if err != nil {
			return n, err
		}
	}
	rf, ok := w.(io.ReaderFrom)
	if !ok {
		rf = readerFrom{w}
	}
	for b.left > 0 {
		chunk := &io.LimitedReader{R: b.dc.c, N: min(b.left, spliceChunk)}
		stop, err := b.arm(ctx)
		if err != nil {
			return n, err
		}
		m, err := rf.ReadFrom(chunk)
		stop()
		n += m
		b.left -= m
		if err != nil {
			// The stall deadline is meant for the S3 server, but it
			// also runs while the client takes the bytes: a client
			// slower than a chunk per Stall wait lets it pass with the
			// server fine. A round that moved bytes made progress; only
			// one that moved none is a stall.
			if m > 0 && errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
				continue
			}
			return n, err
		}
		if chunk.N > 0 { // the S3 server closed the connection early
			return n, io.ErrUnexpectedEOF
		}
	}
	return n, nil
}

// readerFrom copies through a 256 KiB buffer for writers without ReadFrom.
type readerFrom struct{ w io.Writer }

func (r readerFrom) ReadFrom(src io.Reader) (int64, error) {
	return io.CopyBuffer(struct{ io.Writer }{r.w}, struct{ io.Reader }{src}, make([]byte, 256<<10))
}

// release returns a fully read connection to the pool, or closes it.
func (b *directBody) release(d *direct) {
	if b.dc == nil {
		return
	}
	if b.left == 0 && b.reuse {
		d.put(b.dc)
	} else {
		b.dc.c.Close()
	}
	b.dc = nil
}
