package transport

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// countConn counts the writes that reach the socket.
type countConn struct {
	net.Conn
	writes int
}

func (c *countConn) Write(p []byte) (int, error) { c.writes++; return c.Conn.Write(p) }

func TestGatherRecords(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		b, _ := io.ReadAll(c)
		got <- b
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc := &countConn{Conn: raw}
	// No timer flushes while writes are counted (the race detector can
	// make a loop of writes slower than gatherDelay).
	c := newConn(cc, 0, true)
	c.g.delay = time.Hour

	full := func(b byte) []byte { return bytes.Repeat([]byte{b}, fullRecord+16) }
	var want []byte
	write := func(p []byte) {
		t.Helper()
		if n, err := c.Write(p); err != nil || n != len(p) {
			t.Fatalf("Write: %d, %v", n, err)
		}
		want = append(want, p...)
	}
	// four full records and a short one: one socket write
	for i := byte(0); i < 4; i++ {
		write(full('a' + i))
	}
	write([]byte("short"))
	if cc.writes != 1 {
		t.Fatalf("%d socket writes for 4 full records and a short one, want 1", cc.writes)
	}
	// HTTP/2 DATA frames of 16 KiB: a full record and a 9-byte tail each;
	// the tails do not end the gathering, the short record at the end does
	before := cc.writes
	frames := gatherMax / (fullRecord + 16 + 31)
	for i := 0; i < frames; i++ {
		write(full('f'))
		write(bytes.Repeat([]byte{'t'}, 31))
	}
	write([]byte("end"))
	if n := cc.writes - before; n != 1 {
		t.Fatalf("%d socket writes for %d frames (full record + tail) and a short record, want 1", n, frames)
	}
	// two tails in a row: the second is not a frame tail and sends at once
	before = cc.writes
	write(full('g'))
	write(bytes.Repeat([]byte{'t'}, 31))
	write(bytes.Repeat([]byte{'u'}, 31))
	if n := cc.writes - before; n != 1 {
		t.Fatalf("%d socket writes for full, tail, tail; want 1", n)
	}
	// more full records than fit: written when the buffer is full
	for i := 0; i < 2*gatherMax/fullRecord; i++ {
		write(full('x'))
	}
	if cc.writes < 2 {
		t.Fatalf("buffer never flushed when full (%d writes)", cc.writes)
	}
	// a trailing full record is sent by the timer without another write
	c.g.mu.Lock()
	c.g.delay = time.Millisecond
	c.g.mu.Unlock()
	before = cc.writes
	write(full('z'))
	for i := 0; ; i++ {
		c.g.mu.Lock()
		pending := c.g.buf != nil
		c.g.mu.Unlock()
		if !pending {
			break
		}
		if i > 1000 {
			t.Fatal("trailing record never flushed")
		}
		time.Sleep(time.Millisecond)
	}
	if cc.writes == before {
		t.Fatal("timer flush did not write")
	}
	// and what is pending at Close is sent before the close
	write(full('q'))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("peer got %d bytes, want %d (in order)", len(b), len(want))
	}
}
