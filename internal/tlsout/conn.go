package tlsout

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// batchRecords is how many records one write system call carries.
	batchRecords = 16
	// closeNotifyTimeout bounds the wait to send close_notify on Close.
	closeNotifyTimeout = 5 * time.Second
)

// rekeyAfter is how many records one key seals before Conn sends a
// KeyUpdate; RFC 8446 (5.5) allows 2^24.5 full records with AES-GCM. A
// variable so that a test can make it small.
var rekeyAfter uint64 = 1 << 23

// Conn is a server-side TLS 1.3 connection whose handshake crypto/tls has
// done. Reads go through crypto/tls; writes are sealed here, up to 16
// records per write system call, and ReadFrom reads a file straight into
// the records' places, so a blob download costs one read, one seal and one
// write per 256 KiB instead of a copy, a seal and a write per 16 KiB.
type Conn struct {
	tc    *tls.Conn
	u     *under
	state tls.ConnectionState
	s     suite
	out   func([]byte) (int, error)

	wmu    sync.Mutex // guards everything below
	secret []byte
	k      trafficKeys
	seq    uint64
	nonce  [12]byte
	werr   error // the first write error; the connection is unusable after it
	closed bool
	// For tests: vectored file reads, KeyUpdates sent, and the sequence
	// number the take-over started at.
	readvs, updates int64
	firstSeq        uint64
}

// ConnectionState is the handshake's result, as *tls.Conn reports it.
func (c *Conn) ConnectionState() tls.ConnectionState { return c.state }

// NetConn returns the connection under TLS.
func (c *Conn) NetConn() net.Conn { return c.u.Conn }

// Read reads application data; crypto/tls decrypts it.
func (c *Conn) Read(p []byte) (int, error) { return c.tc.Read(p) }

// LocalAddr is the local network address.
func (c *Conn) LocalAddr() net.Addr { return c.tc.LocalAddr() }

// RemoteAddr is the peer's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.tc.RemoteAddr() }

// SetDeadline sets the read and write deadlines of the connection.
func (c *Conn) SetDeadline(t time.Time) error { return c.tc.SetDeadline(t) }

// SetReadDeadline sets the read deadline of the connection.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.tc.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline of the connection.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.tc.SetWriteDeadline(t) }

// slot is the room one full record takes: header, data, inner content
// type, AEAD tag.
func (c *Conn) slot() int { return recordHeader + maxPlaintext + 1 + c.k.aead.Overhead() }

var batchPool = sync.Pool{New: func() any {
	b := make([]byte, 0, batchRecords*(recordHeader+maxPlaintext+1+16))
	return &b
}}

// seal turns the n bytes of data at b[off+recordHeader:] into a record of
// type typ in place, and returns the record's length. The slot must have
// room for the content type and tag after the data. c.wmu is held.
func (c *Conn) seal(b []byte, off, n int, typ byte) int {
	size := n + 1 + c.k.aead.Overhead()
	rec := b[off : off+recordHeader+size]
	rec[0], rec[1], rec[2], rec[3], rec[4] = typeAppData, 3, 3, byte(size>>8), byte(size)
	rec[recordHeader+n] = typ
	c.k.nonce(&c.nonce, c.seq)
	c.seq++
	c.k.aead.Seal(rec[recordHeader:recordHeader], c.nonce[:], rec[recordHeader:recordHeader+n+1], rec[:recordHeader])
	return len(rec)
}

// appendRecord seals data as one record of type typ at the end of b.
func (c *Conn) appendRecord(b []byte, typ byte, data []byte) []byte {
	off := len(b)
	b = append(b, make([]byte, recordHeader)...)
	b = append(b, data...)
	b = append(b, make([]byte, 1+c.k.aead.Overhead())...)
	c.seal(b, off, len(data), typ)
	return b
}

// send writes sealed records; c.wmu is held.
func (c *Conn) send(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if _, err := c.out(b); err != nil {
		c.werr = fmt.Errorf("tls write: %w", err)
		return c.werr
	}
	return nil
}

// rekeyIfDue sends a KeyUpdate and moves to the next key when the current
// one has sealed rekeyAfter records or would within the next batch; c.wmu
// is held.
func (c *Conn) rekeyIfDue() error {
	if c.seq+batchRecords < rekeyAfter {
		return nil
	}
	// KeyUpdate, update_not_requested (RFC 8446, 4.6.3).
	b := c.appendRecord(nil, typeHandshake, []byte{24, 0, 0, 1, 0})
	if err := c.send(b); err != nil {
		return err
	}
	next, err := c.s.nextSecret(c.secret)
	if err != nil {
		c.werr = err
		return err
	}
	k, err := c.s.keys(next)
	if err != nil {
		c.werr = err
		return err
	}
	c.secret, c.k, c.seq = next, k, 0
	c.updates++
	return nil
}

func (c *Conn) writable() error {
	if c.werr != nil {
		return c.werr
	}
	if c.closed {
		return net.ErrClosed
	}
	return nil
}

// Write seals p into records and sends them, 16 records per system call.
func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.copyReader(bytes.NewReader(p), int64(len(p)))
	return int(n), err
}

// ReadFrom sends what r yields, reading it into the records' places: a
// regular file (also inside an *io.LimitedReader, as net/http passes
// ranges) with one readv per 16 records, any other reader one Read per
// record, sending at once when a Read comes back short so that streamed
// answers are not held back.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	limit := int64(-1)
	lr, _ := r.(*io.LimitedReader)
	src := r
	if lr != nil {
		src, limit = lr.R, lr.N
	}
	var n int64
	var err error
	if rc := fileConn(src); rc != nil {
		n, err = c.copyFile(rc, limit)
	} else {
		n, err = c.copyReader(src, limit)
	}
	if lr != nil {
		lr.N -= n
	}
	return n, err
}

// fileConn is the raw descriptor access of a reader that is a regular
// file, or nil. Besides *os.File this takes what os.File.WriteTo hands
// io.Copy (a wrapper that embeds the *os.File).
func fileConn(r io.Reader) syscallReader {
	f, ok := r.(interface {
		SyscallConn() (syscall.RawConn, error)
		Stat() (os.FileInfo, error)
	})
	if !ok {
		return nil
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

type syscallReader interface {
	Read(func(uintptr) bool) error
}

// copyBatches is ReadFrom's loop: fill reads at most limit bytes (no
// limit if negative) into the data places of one batch of records in buf,
// seals them and says where the sealed records end and how much data they
// carry; the batch is then sent.
func (c *Conn) copyBatches(limit int64, fill func(buf []byte, slot int, limit int64) (end int, n int64, err error)) (int64, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writable(); err != nil {
		return 0, err
	}
	bp := batchPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	buf := (*bp)[:cap(*bp)]
	var total int64
	for limit != 0 {
		if err := c.rekeyIfDue(); err != nil {
			return total, err
		}
		end, n, rerr := fill(buf, c.slot(), limit)
		if err := c.send(buf[:end]); err != nil {
			return total, err
		}
		total += n
		if limit > 0 {
			limit -= n
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
	return total, nil
}

// copyFile is ReadFrom for files: one readv fills the data places of a
// whole batch, which is then sealed in place.
func (c *Conn) copyFile(rc syscallReader, limit int64) (int64, error) {
	var iovs [batchRecords][]byte
	return c.copyBatches(limit, func(buf []byte, slot int, limit int64) (int, int64, error) {
		count := 0
		for i := range iovs {
			n := maxPlaintext
			if limit >= 0 && limit-int64(i*maxPlaintext) < int64(n) {
				n = int(limit - int64(i*maxPlaintext))
			}
			at := i*slot + recordHeader
			iovs[i] = buf[at : at+n]
			count++
			if n < maxPlaintext {
				break
			}
		}
		got, err := readv(rc, iovs[:count])
		c.readvs++
		end := 0
		for i := 0; i*maxPlaintext < got; i++ {
			end = i*slot + c.seal(buf, i*slot, min(got-i*maxPlaintext, maxPlaintext), typeAppData)
		}
		return end, int64(got), err
	})
}

// copyReader is ReadFrom for other readers: one Read per record place; a
// short Read ends the batch, so what arrived is sent at once.
func (c *Conn) copyReader(r io.Reader, limit int64) (int64, error) {
	return c.copyBatches(limit, func(buf []byte, slot int, limit int64) (int, int64, error) {
		end := 0
		var total int64
		for i := 0; i < batchRecords && limit != 0; i++ {
			n := maxPlaintext
			if limit >= 0 && limit < int64(n) {
				n = int(limit)
			}
			at := i*slot + recordHeader
			got, err := r.Read(buf[at : at+n])
			if got > 0 {
				end = i*slot + c.seal(buf, i*slot, got, typeAppData)
				total += int64(got)
				if limit > 0 {
					limit -= int64(got)
				}
			}
			if err != nil || got < n {
				return end, total, err
			}
		}
		return end, total, nil
	})
}

// readv fills iovs from a file with one system call.
func readv(rc syscallReader, iovs [][]byte) (int, error) {
	var n int
	var err error
	cerr := rc.Read(func(fd uintptr) bool {
		for {
			n, err = unix.Readv(int(fd), iovs)
			if err != unix.EINTR {
				break
			}
		}
		return err != unix.EAGAIN
	})
	if err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("readv: %w", err)
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// closeNotifyLocked sends the close_notify alert; c.wmu is held.
func (c *Conn) closeNotifyLocked() {
	if c.writable() != nil {
		return
	}
	c.closed = true
	_ = c.u.Conn.SetWriteDeadline(time.Now().Add(closeNotifyTimeout))
	_ = c.send(c.appendRecord(nil, typeAlert, []byte{1, 0})) // warning, close_notify
}

// Close sends close_notify and closes the connection. A write that is
// under way (a peer that stopped reading) is not waited for: it fails
// when the connection closes.
func (c *Conn) Close() error {
	if c.wmu.TryLock() {
		c.closeNotifyLocked()
		c.wmu.Unlock()
	}
	return c.u.Close()
}

// CloseWrite sends close_notify and shuts down the sending side, as
// net/http does before closing a connection it answered.
func (c *Conn) CloseWrite() error {
	c.wmu.Lock()
	c.closeNotifyLocked()
	c.wmu.Unlock()
	if cw, ok := c.u.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("tlsout: connection cannot half-close")
}
