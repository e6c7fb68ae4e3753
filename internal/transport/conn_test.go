package transport

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The listener must hand net/http a connection whose ReadFrom reaches the
// TCP connection (the sendfile path), with or without a connection limit,
// and a limited number of connections at once.
func TestListenerKeepsSendfileAndLimits(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listener(raw, Config{ProgressTimeout: time.Minute, MaxConns: 1}, nil)
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
	pc, ok := s1.(*Conn)
	if !ok {
		t.Fatalf("accepted %T, want *Conn", s1)
	}
	if _, ok := pc.Conn.(*net.TCPConn); !ok {
		t.Fatalf("Conn wraps %T, want *net.TCPConn (sendfile)", pc.Conn)
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
func TestConnReadFromLimited(t *testing.T) {
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
	pc := newConn(sc, time.Minute, false)
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

// Reads through the read-ahead buffer return the peer's bytes in order
// whatever the mix of small and large reads, and EOF after the last one.
func TestConnReadAhead(t *testing.T) {
	data := make([]byte, 3*BufferSize+12345)
	for i := range data {
		data[i] = byte(i * 7)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	go func() {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			return
		}
		c.Write(data)
		c.Close()
	}()
	sc, err := raw.Accept()
	if err != nil {
		t.Fatal(err)
	}
	pc := newConn(sc, time.Minute, false)
	defer pc.Close()
	var got []byte
	sizes := []int{1, 4096, 5, BufferSize, 32 << 10, 3}
	for i := 0; ; i++ {
		buf := make([]byte, sizes[i%len(sizes)])
		n, err := pc.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, not the %d sent in order", len(got), len(data))
	}
}
