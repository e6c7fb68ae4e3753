package gateway

import (
	"net"
	"sync"
	"time"
)

// crypto/tls writes every record (at most 16 KiB of data) with its own
// write system call, so a blob download costs ~65,000 writes per GiB. Below
// the TLS layer, coalesceConn gathers full-size records and writes them in
// one call: a record shorter than the maximum (the end of what the server
// wrote) or a full buffer sends everything at once; full records that are
// not followed by more within coalesceDelay are sent by a timer. Handshake
// messages and small answers are short records, so they leave at once.

const (
	// fullRecord is the smallest write that may be a full-size TLS record:
	// 16 KiB of data plus the 5-byte header (AEAD overhead comes on top).
	fullRecord = 16<<10 + 5
	// coalesceMax is how much is gathered before it is written.
	coalesceMax = 128 << 10
	// coalesceDelay bounds how long full records wait for a successor.
	coalesceDelay = 500 * time.Microsecond
)

var coalescePool = sync.Pool{New: func() any { b := make([]byte, 0, coalesceMax+fullRecord+512); return &b }}

// isFrameTail reports whether a record of n bytes carries exactly 9 bytes
// of data: the tail of an HTTP/2 DATA frame of n*16 KiB data plus its
// 9-byte header (TLS 1.3: 5+9+1+16 = 31 bytes; TLS 1.2 with AES-GCM:
// 5+8+9+16 = 38; with ChaCha20-Poly1305: 5+9+16 = 30). Such a record right
// after a full one is gathered too, or every 16 KiB frame cost a write.
func isFrameTail(n int) bool { return n == 30 || n == 31 || n == 38 }

// coalesceListener wraps accepted connections in coalesceConn.
type coalesceListener struct{ net.Listener }

func (l coalesceListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	return &coalesceConn{Conn: c}, nil
}

type coalesceConn struct {
	net.Conn
	mu    sync.Mutex
	buf   *[]byte // pending records; from coalescePool, nil when empty
	timer *time.Timer
	err   error         // a failed delayed write; returned by the next Write
	full  bool          // the last write gathered was a full record
	delay time.Duration // how long gathered records wait; 0: coalesceDelay
}

func (c *coalesceConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	full := len(p) >= fullRecord
	tail := !full && c.full && isFrameTail(len(p))
	c.full = full
	if !full && !tail {
		// A short record ends what the writer had to say: send it all.
		if c.buf == nil {
			return c.Conn.Write(p)
		}
		*c.buf = append(*c.buf, p...)
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if c.buf != nil && len(*c.buf)+len(p) > coalesceMax {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if c.buf == nil {
		c.buf = coalescePool.Get().(*[]byte)
	}
	*c.buf = append(*c.buf, p...)
	d := c.delay
	if d == 0 {
		d = coalesceDelay
	}
	if c.timer == nil {
		c.timer = time.AfterFunc(d, c.timerFlush)
	} else {
		c.timer.Reset(d)
	}
	return len(p), nil
}

// flushLocked writes the pending records; c.mu is held.
func (c *coalesceConn) flushLocked() error {
	if c.buf == nil {
		return nil
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	_, err := c.Conn.Write(*c.buf)
	*c.buf = (*c.buf)[:0]
	coalescePool.Put(c.buf)
	c.buf = nil
	if err != nil && c.err == nil {
		c.err = err
	}
	return err
}

func (c *coalesceConn) timerFlush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.flushLocked()
}

// Close sends what is pending, then closes.
func (c *coalesceConn) Close() error {
	c.mu.Lock()
	_ = c.flushLocked()
	c.mu.Unlock()
	return c.Conn.Close()
}

// CloseWrite sends what is pending, then half-closes.
func (c *coalesceConn) CloseWrite() error {
	c.mu.Lock()
	_ = c.flushLocked()
	c.mu.Unlock()
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
