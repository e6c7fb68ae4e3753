package gateway

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// recordWriter notes the size of every write and signals each one.
type recordWriter struct {
	sizes []int
	data  bytes.Buffer
	wrote chan struct{}
}

func (w *recordWriter) Write(p []byte) (int, error) {
	w.sizes = append(w.sizes, len(p))
	w.data.Write(p)
	if w.wrote != nil {
		w.wrote <- struct{}{}
	}
	return len(p), nil
}

// pieces returns reads of exactly size bytes.
type pieces struct {
	r    io.Reader
	size int
}

func (p pieces) Read(b []byte) (int, error) {
	if len(b) > p.size {
		b = b[:p.size]
	}
	return p.r.Read(b)
}

func newBody(r io.Reader) *progressBody {
	return &progressBody{
		ReadCloser: io.NopCloser(r),
		rc:         http.NewResponseController(httptest.NewRecorder()),
		timeout:    int64(time.Minute),
		slack:      int64(time.Minute) / 16,
	}
}

func TestProgressBodyWriteTo(t *testing.T) {
	// A fast body arriving in 16 KiB pieces leaves in 128 KiB writes.
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	w := &recordWriter{}
	n, err := newBody(pieces{bytes.NewReader(data), 16 << 10}).WriteTo(w)
	if err != nil || n != int64(len(data)) || !bytes.Equal(w.data.Bytes(), data) {
		t.Fatalf("copied %d, %v", n, err)
	}
	if len(w.sizes) != len(data)/uploadBuf {
		t.Fatalf("%d writes %v, want %d of %d bytes", len(w.sizes), w.sizes, len(data)/uploadBuf, uploadBuf)
	}

	// A body that trickles in is passed on piece by piece: the writer sees
	// each piece before the next is sent (a buffering copy would hang).
	pr, pw := io.Pipe()
	w = &recordWriter{wrote: make(chan struct{}, 1)}
	done := make(chan error, 1)
	go func() { _, err := newBody(pr).WriteTo(w); done <- err }()
	for i := 0; i < 5; i++ {
		if _, err := pw.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		select {
		case <-w.wrote:
		case <-time.After(30 * time.Second):
			t.Fatalf("piece %d held back", i)
		}
	}
	pw.Close()
	if err := <-done; err != nil || w.data.String() != "xxxxx" {
		t.Fatalf("trickle: %q %v", w.data.String(), err)
	}
}

// max_conns: a connection beyond the limit waits until one closes.
func TestConnectionLimit(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := progressListener(inner, time.Minute, 1)
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
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first := <-accepted
	select {
	case <-accepted:
		t.Fatal("second connection accepted beyond max_conns = 1")
	case <-time.After(300 * time.Millisecond):
	}
	first.Close()
	first.Close() // a second Close must not free a second slot
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(30 * time.Second):
		t.Fatal("closing a connection did not free its slot")
	}
}
