package gateway

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The listener must hand net/http a connection whose ReadFrom reaches the
// TCP connection (the sendfile path), with or without a connection limit,
// and a limited number of connections at once.
func TestProgressListenerKeepsSendfileAndLimits(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := progressListener(raw, time.Minute, 1)
	defer ln.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	c1, _ := net.Dial("tcp", raw.Addr().String())
	defer c1.Close()
	s1 := <-accepted
	pc, ok := s1.(*progressConn)
	if !ok {
		t.Fatalf("accepted %T, want *progressConn", s1)
	}
	if _, ok := pc.Conn.(*net.TCPConn); !ok {
		t.Fatalf("progressConn wraps %T, want *net.TCPConn (sendfile)", pc.Conn)
	}
	c2, _ := net.Dial("tcp", raw.Addr().String())
	defer c2.Close()
	select {
	case <-accepted:
		t.Fatal("a second connection was accepted past max_conns = 1")
	case <-time.After(200 * time.Millisecond):
	}
	s1.Close()
	s1.Close() // a second Close must not free a second slot
	select {
	case s2 := <-accepted:
		s2.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("closing the first connection did not free its slot")
	}
}

// ReadFrom with a LimitedReader around a file (what io.CopyN hands it)
// sends exactly the limit and keeps the caller's count right.
func TestProgressConnReadFromLimited(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), (sendfileChunk*2+100)/16)
	path := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	got := make(chan []byte)
	go func() {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			got <- nil
			return
		}
		b, _ := io.ReadAll(c)
		got <- b
	}()
	sc, err := raw.Accept()
	if err != nil {
		t.Fatal(err)
	}
	pc := newProgressConn(sc, time.Minute)
	f, _ := os.Open(path)
	defer f.Close()
	want := int64(sendfileChunk + 12345)
	lr := &io.LimitedReader{R: f, N: want}
	n, err := pc.ReadFrom(lr)
	pc.Close()
	if err != nil || n != want || lr.N != 0 {
		t.Fatalf("ReadFrom = %d, %v (left %d); want %d, nil, 0", n, err, lr.N, want)
	}
	if b := <-got; !bytes.Equal(b, data[:want]) {
		t.Fatalf("peer got %d bytes, not the first %d of the file", len(b), want)
	}
}
