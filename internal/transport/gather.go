package transport

import (
	"sync"
	"time"
)

// crypto/tls writes every record (at most 16 KiB of data) with its own
// write system call, so a blob download costs ~65,000 writes per GiB.
// Below the TLS layer, Conn gathers full-size records and writes them in
// one call: a record shorter than the maximum (the end of what the server
// wrote) or a full buffer sends everything at once; full records that are
// not followed by more within gatherDelay are sent by a timer. Handshake
// messages and small answers are short records, so they leave at once.
// TestGatherMatchesCryptoTLSRecords fails if crypto/tls stops writing
// records the way these rules expect.

const (
	// fullRecord is the smallest write that may be a full-size TLS record:
	// 16 KiB of data plus the 5-byte header (AEAD overhead comes on top).
	fullRecord = 16<<10 + 5
	// gatherMax is how much is gathered before it is written.
	gatherMax = 128 << 10
	// gatherDelay bounds how long full records wait for a successor.
	gatherDelay = 500 * time.Microsecond
)

// isFrameTail reports whether a record of n bytes carries exactly 9 bytes
// of data: the tail of an HTTP/2 DATA frame of n*16 KiB data plus its
// 9-byte header (TLS 1.3: 5+9+1+16 = 31 bytes; TLS 1.2 with AES-GCM:
// 5+8+9+16 = 38; with ChaCha20-Poly1305: 5+9+16 = 30). Such a record right
// after a full one is gathered too, or every 16 KiB frame cost a write.
func isFrameTail(n int) bool { return n == 30 || n == 31 || n == 38 }

type gatherState struct {
	mu    sync.Mutex
	buf   *[]byte // pending records, from the pool; nil when empty
	timer *time.Timer
	err   error         // a failed delayed write; returned by the next Write
	full  bool          // the last write gathered was a full record
	delay time.Duration // how long gathered records wait; 0: gatherDelay
}

func (c *Conn) gatherWrite(p []byte) (int, error) {
	g := &c.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return 0, g.err
	}
	full := len(p) >= fullRecord
	tail := !full && g.full && isFrameTail(len(p))
	g.full = full
	if !full && !tail {
		// A short record ends what the writer had to say: send it all.
		if g.buf == nil {
			c.rearm()
			return c.Conn.Write(p)
		}
		*g.buf = append(*g.buf, p...)
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if g.buf != nil && len(*g.buf)+len(p) > gatherMax {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if g.buf == nil {
		g.buf = GetBuffer()
		*g.buf = (*g.buf)[:0]
	}
	*g.buf = append(*g.buf, p...)
	d := g.delay
	if d == 0 {
		d = gatherDelay
	}
	if g.timer == nil {
		g.timer = time.AfterFunc(d, c.timerFlush)
	} else {
		g.timer.Reset(d)
	}
	return len(p), nil
}

// flushLocked writes the pending records; c.g.mu is held.
func (c *Conn) flushLocked() error {
	g := &c.g
	if g.buf == nil {
		return nil
	}
	if g.timer != nil {
		g.timer.Stop()
	}
	c.rearm()
	_, err := c.Conn.Write(*g.buf)
	PutBuffer(g.buf)
	g.buf = nil
	if err != nil && g.err == nil {
		g.err = err
	}
	return err
}

func (c *Conn) timerFlush() {
	c.g.mu.Lock()
	defer c.g.mu.Unlock()
	_ = c.flushLocked()
}
