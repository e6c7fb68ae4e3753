package transport

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is the one wrapper around every accepted TCP connection (see the
// package comment): progress write deadlines, read-ahead, the listener's
// slot, and below crypto/tls the gathering of records.
type Conn struct {
	net.Conn // the *net.TCPConn

	// Write deadlines: every Write sets now+timeout (or the server's own
	// write deadline if that is earlier), at most every slack.
	timeout int64 // ns; 0 = none
	slack   int64 // ns
	armed   atomic.Int64
	outer   atomic.Int64 // write deadline the server set, unix ns; 0 = none

	release   func() // frees the listener's slot; nil = no limit
	closeOnce sync.Once

	// Read-ahead: net/http reads request bodies in small pieces (a 4 KiB
	// bufio fill per chunk header, then the rest of a chunk), two system
	// calls per chunk of a streamed push; one large read serves many. The
	// buffer is pooled and held only while it has data.
	ra    *[]byte
	raOff int
	raEnd int

	gather bool        // gather TLS records (gather.go); false: write through
	g      gatherState // guarded by g.mu
}

func newConn(c net.Conn, timeout time.Duration, gather bool) *Conn {
	return &Conn{Conn: c, timeout: int64(timeout), slack: int64(timeout) / 16, gather: gather}
}

// Read serves small reads from one large read of the socket.
func (c *Conn) Read(p []byte) (int, error) {
	if c.ra == nil {
		if len(p) >= BufferSize/4 {
			return c.Conn.Read(p) // large reads gain nothing from a copy
		}
		c.ra = GetBuffer()
		n, err := c.Conn.Read(*c.ra)
		if n <= 0 {
			PutBuffer(c.ra)
			c.ra = nil
			return 0, err
		}
		c.raOff, c.raEnd = 0, n
		// An error with data is reported by the next Read, from the socket.
	}
	n := copy(p, (*c.ra)[c.raOff:c.raEnd])
	c.raOff += n
	if c.raOff == c.raEnd {
		PutBuffer(c.ra)
		c.ra = nil
	}
	return n, nil
}

func (c *Conn) arm(now int64) {
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

// rearm pushes the write deadline forward if the last push is older
// than slack.
func (c *Conn) rearm() {
	if c.timeout <= 0 {
		return
	}
	if now := time.Now().UnixNano(); now-c.armed.Load() > c.slack {
		c.arm(now)
	}
}

// Write sends p (plain connections) or hands it to the record gathering
// (TLS connections), with the write deadline pushed forward.
func (c *Conn) Write(p []byte) (int, error) {
	if c.gather {
		return c.gatherWrite(p)
	}
	c.rearm()
	return c.Conn.Write(p)
}

// sendfileChunk is how much one sendfile round may move before the write
// deadline is pushed forward again.
const sendfileChunk = 4 << 20

// ReadFrom keeps the kernel's sendfile/splice path for plain-HTTP
// downloads, in chunks so the deadline follows progress. A LimitedReader
// from the caller (http.ServeContent sends ranges through io.CopyN) is
// unwrapped first: the kernel path looks through one LimitedReader only.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := c.Conn.(io.ReaderFrom)
	if !ok || c.gather {
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

// SetWriteDeadline records the server's own deadline, which progress
// deadlines never pass.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		c.outer.Store(0)
	} else {
		c.outer.Store(t.UnixNano())
	}
	c.armed.Store(0) // the next Write re-arms
	return c.Conn.SetWriteDeadline(t)
}

func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// Close sends what is gathered, closes the connection and gives its slot
// back to the listener.
func (c *Conn) Close() error {
	if c.gather {
		c.g.mu.Lock()
		_ = c.flushLocked()
		c.g.mu.Unlock()
	}
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		if c.release != nil {
			c.release()
		}
	})
	return err
}

// CloseWrite sends what is gathered, then half-closes.
func (c *Conn) CloseWrite() error {
	if c.gather {
		c.g.mu.Lock()
		_ = c.flushLocked()
		c.g.mu.Unlock()
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
