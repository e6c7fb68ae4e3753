package gateway

import (
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Timeouts: the http.Server bounds header reads (ReadHeaderTimeout) and
// idle keep-alive connections (IdleTimeout). Neither a total read nor a
// total write timeout is set, since either would kill a slow 10 GiB
// transfer. Instead a transfer is cut when it makes no progress for
// progress_timeout: request bodies through progressBody (a read deadline
// pushed forward on every read), responses through progressConn (a write
// deadline pushed forward on every write).

// progressListener wraps accepted connections in progressConn and bounds
// how many are open at once. It counts connections itself rather than
// using netutil.LimitListener, whose connection type hides ReadFrom and so
// turns every blob download from sendfile into a read/write loop.
func progressListener(ln net.Listener, timeout time.Duration, maxConns int) net.Listener {
	l := &progressLn{Listener: ln, timeout: timeout}
	if maxConns > 0 {
		l.slots = make(chan struct{}, maxConns)
	}
	return l
}

type progressLn struct {
	net.Listener
	timeout time.Duration
	slots   chan struct{} // one token per open connection; nil = no limit
}

func (l *progressLn) Accept() (net.Conn, error) {
	if l.slots != nil {
		l.slots <- struct{}{} // wait for a free slot, as LimitListener does
	}
	c, err := l.Listener.Accept()
	if err != nil {
		if l.slots != nil {
			<-l.slots
		}
		return nil, err
	}
	if l.timeout <= 0 && l.slots == nil {
		return c, nil
	}
	pc := newProgressConn(c, l.timeout)
	if l.slots != nil {
		pc.release = func() { <-l.slots }
	}
	return pc, nil
}

// progressConn gives every Write a deadline of now+timeout (or the
// server's own write deadline if that is earlier), re-armed as writes
// succeed, so a client that stops reading is cut after timeout while one
// that reads slowly but steadily is not. Reads pass through untouched.
type progressConn struct {
	net.Conn
	timeout int64 // ns
	slack   int64 // re-arm at most this often (ns)
	armed   atomic.Int64
	outer   atomic.Int64 // write deadline the server set, unix ns; 0 = none

	release   func() // frees the listener's slot; nil = no limit
	closeOnce sync.Once

	// Read-ahead: net/http reads request bodies in small pieces (a 4 KiB
	// bufio fill per chunk header, then the rest of a chunk, often 32 KiB),
	// two syscalls per chunk of a streamed push. One large read serves
	// many of them. The buffer is pooled and held only while it has data.
	ra    *[]byte
	raOff int
	raEnd int
}

const readAheadSize = 256 << 10

var readAheadPool = sync.Pool{New: func() any { b := make([]byte, readAheadSize); return &b }}

// Read serves small reads from one large read of the socket.
func (c *progressConn) Read(p []byte) (int, error) {
	if c.ra == nil {
		if len(p) >= readAheadSize/4 {
			return c.Conn.Read(p) // large reads gain nothing from a copy
		}
		c.ra = readAheadPool.Get().(*[]byte)
		n, err := c.Conn.Read(*c.ra)
		if n <= 0 {
			readAheadPool.Put(c.ra)
			c.ra = nil
			return 0, err
		}
		c.raOff, c.raEnd = 0, n
		// An error with data is reported by the next Read, from the socket.
	}
	n := copy(p, (*c.ra)[c.raOff:c.raEnd])
	c.raOff += n
	if c.raOff == c.raEnd {
		readAheadPool.Put(c.ra)
		c.ra = nil
	}
	return n, nil
}

// Close closes the connection and gives its slot back to the listener.
func (c *progressConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		if c.release != nil {
			c.release()
		}
	})
	return err
}

func newProgressConn(c net.Conn, timeout time.Duration) *progressConn {
	return &progressConn{Conn: c, timeout: int64(timeout), slack: int64(timeout) / 16}
}

func (c *progressConn) arm(now int64) {
	if c.timeout <= 0 {
		return
	}
	d := now + c.timeout
	if o := c.outer.Load(); o != 0 && o < d {
		d = o
	}
	_ = c.Conn.SetWriteDeadline(time.Unix(0, d))
	c.armed.Store(now)
}

func (c *progressConn) Write(p []byte) (int, error) {
	if now := time.Now().UnixNano(); now-c.armed.Load() > c.slack {
		c.arm(now)
	}
	return c.Conn.Write(p)
}

// sendfileChunk is how much one sendfile round may move before the write
// deadline is pushed forward again.
const sendfileChunk = 4 << 20

// ReadFrom keeps the kernel's sendfile/splice path for plain-HTTP
// downloads, in chunks so the deadline follows progress. A LimitedReader
// from the caller (http.ServeContent sends ranges through io.CopyN) is
// unwrapped first: the kernel path looks through one LimitedReader only.
func (c *progressConn) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := c.Conn.(io.ReaderFrom)
	if !ok {
		return io.Copy(struct{ io.Writer }{c}, r)
	}
	outer, _ := r.(*io.LimitedReader)
	chunk := &io.LimitedReader{R: r}
	if outer != nil {
		chunk.R = outer.R
	}
	var total int64
	for {
		n := int64(sendfileChunk)
		if outer != nil {
			n = min(n, outer.N)
			if n <= 0 {
				return total, nil
			}
		}
		c.arm(time.Now().UnixNano())
		chunk.N = n
		m, err := rf.ReadFrom(chunk)
		total += m
		if outer != nil {
			outer.N -= m
		}
		if err != nil || chunk.N > 0 {
			return total, err
		}
	}
}

func (c *progressConn) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		c.outer.Store(0)
	} else {
		c.outer.Store(t.UnixNano())
	}
	c.armed.Store(0) // the next Write re-arms
	return c.Conn.SetWriteDeadline(t)
}

func (c *progressConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// CloseWrite lets the server half-close a plain TCP connection.
func (c *progressConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// withProgress cuts request bodies that stop moving: every Read pushes the
// connection's (HTTP/1) or stream's (HTTP/2) read deadline to
// now+timeout; when the body ends the deadline is cleared again so the
// server's idle handling takes over. Over HTTP/2 it also cuts answers that
// stop moving (progressWriter): there a client that stops reading blocks
// the handler on flow control, which no connection deadline sees.
func withProgress(timeout time.Duration, next http.Handler) http.Handler {
	if timeout <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor >= 2 {
			w = &progressWriter{
				ResponseWriter: w,
				rc:             http.NewResponseController(w),
				timeout:        int64(timeout),
				slack:          int64(timeout) / 16,
			}
		}
		if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
			r.Body = &progressBody{
				ReadCloser: r.Body,
				rc:         http.NewResponseController(w),
				timeout:    int64(timeout),
				slack:      int64(timeout) / 16,
			}
		}
		next.ServeHTTP(w, r)
	})
}

// progressWriter pushes an HTTP/2 stream's write deadline to now+timeout
// before every write and flush, so a stream whose client stopped reading
// (the handler waits for a window update that never comes) is reset after
// timeout while one that reads slowly but steadily is not.
type progressWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout int64
	slack   int64
	armed   int64
}

func (w *progressWriter) arm() {
	if now := time.Now().UnixNano(); now-w.armed > w.slack {
		_ = w.rc.SetWriteDeadline(time.Unix(0, now+w.timeout))
		w.armed = now
	}
}

func (w *progressWriter) Write(p []byte) (int, error) {
	w.arm()
	return w.ResponseWriter.Write(p)
}

// Flush passes through, armed: a flush can wait for flow control too.
func (w *progressWriter) Flush() {
	w.arm()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the stream's writer.
func (w *progressWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Uploads are moved in buffers of uploadBuf bytes: WriteTo fills one from
// as many reads as arrive back to back (each at least fillMin bytes, so a
// body that trickles in is passed on as it comes) before writing it on,
// which cuts the writes to the backend or upstream (one chunk per write
// for a chunked upstream request) several-fold compared to one per TLS
// record.
const (
	uploadBuf = 128 << 10
	fillMin   = 8 << 10
)

var uploadBufPool = sync.Pool{New: func() any { b := make([]byte, uploadBuf); return &b }}

type progressBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout int64
	slack   int64
	armed   int64
	done    bool
}

func (b *progressBody) Read(p []byte) (int, error) {
	if b.done {
		return b.ReadCloser.Read(p)
	}
	if now := time.Now().UnixNano(); now-b.armed > b.slack {
		_ = b.rc.SetReadDeadline(time.Unix(0, now+b.timeout))
		b.armed = now
	}
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		// The body is complete: hand the connection back to the server's
		// own idle handling. After any other error the (passed) deadline
		// stays, so the server's attempt to drain the rest fails at once
		// and the answer goes out.
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// WriteTo copies the rest of the body to w in large writes (see uploadBuf).
func (b *progressBody) WriteTo(w io.Writer) (int64, error) {
	bp := uploadBufPool.Get().(*[]byte)
	defer uploadBufPool.Put(bp)
	buf := *bp
	var total int64
	for {
		n, err := b.Read(buf)
		for last := n; err == nil && last >= fillMin && n < len(buf); n += last {
			last, err = b.Read(buf[n:])
		}
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
			if m < n {
				return total, io.ErrShortWrite
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}
