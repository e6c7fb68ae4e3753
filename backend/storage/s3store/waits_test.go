package s3store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/e2e/harness"
)

// freezer is a TCP proxy in front of the S3 server that can stop moving
// bytes in both directions while every connection stays open and new
// ones are still accepted: an S3 process stopped with SIGSTOP, seen from
// wharf.
type freezer struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	thawed chan struct{} // closed while bytes flow
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target, thawed: make(chan struct{})}
	close(f.thawed)
	t.Cleanup(func() { f.thaw(); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return f
}

func (f *freezer) endpoint() string { return "http://" + f.ln.Addr().String() }

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.thawed:
		f.thawed = make(chan struct{})
	default:
	}
}

func (f *freezer) thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.thawed:
	default:
		close(f.thawed)
	}
}

func (f *freezer) wait() {
	f.mu.Lock()
	ch := f.thawed
	f.mu.Unlock()
	<-ch
}

func (f *freezer) serve(c net.Conn) {
	defer c.Close()
	f.wait()
	up, err := net.Dial("tcp", f.target)
	if err != nil {
		return
	}
	defer up.Close()
	pump := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				f.wait()
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		dst.Close()
		src.Close()
	}
	go pump(up, c)
	pump(c, up)
}

// shortWaits keeps the tests of a frozen server in seconds, with room
// for a busy CI machine in the answers of the live server.
var shortWaits = Waits{Answer: 2 * time.Second, Copy: 10 * time.Second, Op: 5 * time.Second, Stall: 3 * time.Second}

// bounded runs each of fns at once and fails the test unless each ends
// with ErrUnavailable within 60 s (the waits are 2-5 s): the point is
// that they end.
func bounded(t *testing.T, fns map[string]func() error) {
	t.Helper()
	var wg sync.WaitGroup
	for name, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan error, 1)
			go func() { done <- fn() }()
			select {
			case err := <-done:
				if !errors.Is(err, storage.ErrUnavailable) {
					t.Errorf("%s on a frozen server: %v, want ErrUnavailable", name, err)
				}
			case <-time.After(time.Minute):
				t.Errorf("%s on a frozen server still waiting after a minute", name)
			}
		}()
	}
	wg.Wait()
}

// TestFrozenServer: while the S3 server accepts connections but answers
// nothing, every kind of request ends with ErrUnavailable (the
// registry's 503) within the waits, and once it runs again everything
// works, on the direct read path and through minio-go.
func TestFrozenServer(t *testing.T) {
	gw := harness.StartVersityGWKeepAlive(t, bucket)
	ctx := context.Background()
	fr := newFreezer(t, strings.TrimPrefix(gw.Endpoint, "http://"))
	for _, path := range []string{"direct", "minio-go"} {
		t.Run(path, func(t *testing.T) {
			s := newStore(t, gw, path, func(o *Options) {
				o.Endpoint = fr.endpoint()
				o.Waits = shortWaits
				o.MaxRetries = 10
			})
			if path == "minio-go" {
				s.direct.close()
				s.direct = nil
			}
			// Larger than the socket buffers between here and the
			// server, which keep sending after the freeze. Written
			// with the default waits: a busy machine may take longer
			// than the short ones to store it.
			data := randomBytes(t, 32<<20)
			d := digest.FromBytes(data)
			setup := newStore(t, gw, path, nil)
			if err := setup.PutBlob(ctx, d, data); err != nil {
				t.Fatal(err)
			}
			if err := setup.PutRecord(ctx, "a", "tags/v1", []byte("x")); err != nil {
				t.Fatal(err)
			}
			// A read that is under way when the server freezes.
			b, err := s.OpenBlob(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			head := make([]byte, 64<<10)
			if _, err := io.ReadFull(b, head); err != nil {
				t.Fatal(err)
			}
			fr.freeze()
			bounded(t, map[string]func() error{
				"rest of an open blob": func() error {
					var buf bytes.Buffer
					_, err := b.(io.WriterTo).WriteTo(&buf)
					if err == nil {
						return errors.New("read the whole blob from a frozen server")
					}
					if !bytes.Equal(buf.Bytes(), data[len(head):len(head)+buf.Len()]) {
						return errors.New("wrong bytes")
					}
					// A cut body is the client's short read whatever the
					// error; what counts is that it ended.
					return storage.ErrUnavailable
				},
				"GetRecord":   func() error { _, err := s.GetRecord(ctx, "a", "tags/v1"); return err },
				"PutRecord":   func() error { return s.PutRecord(ctx, "a", "tags/v2", []byte("y")) },
				"StatBlob":    func() error { _, err := s.StatBlob(ctx, d); return err },
				"TouchBlob":   func() error { return s.TouchBlob(ctx, d) },
				"OpenBlob":    func() error { _, err := s.OpenBlob(ctx, d); return err },
				"NewUpload":   func() error { _, err := s.NewUpload(ctx, "a"); return err },
				"ListRecords": func() error { _, err := s.ListRecords(ctx, "a", "tags"); return err },
				"ListRepos":   func() error { _, err := s.ListRepos(ctx); return err },
				"ListBlobs": func() error {
					return s.ListBlobs(ctx, func(storage.BlobInfo) error { return nil })
				},
			})
			b.Close()

			fr.thaw()
			u, err := s.NewUpload(ctx, "a")
			if err != nil {
				t.Fatal(err)
			}
			chunk := randomBytes(t, 12<<20)
			fr.freeze()
			start := time.Now()
			bounded(t, map[string]func() error{"Append": func() error {
				_, err := u.Append(ctx, bytes.NewReader(chunk))
				return err
			}})
			// At its first try that times out (Stall or Answer), not
			// after minio-go's ten tries of each part (22 s here before).
			if took := time.Since(start); took > 15*time.Second {
				t.Errorf("Append to a frozen server ended after %s, want at its first timeout", took.Round(100*time.Millisecond))
			}
			fr.thaw()
			u.Close()

			b, err = s.OpenBlob(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(b)
			b.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("after the thaw: %d bytes, %v", len(got), err)
			}
		})
	}
}

// slowReader reads c at about 2.6 MB/s (an 8 MiB splice round takes
// over 3 s) and checks it got want.
func slowReader(t *testing.T, c net.Conn, want []byte, done chan<- error) {
	var got bytes.Buffer
	buf := make([]byte, 64<<10)
	for {
		time.Sleep(25 * time.Millisecond)
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			done <- err
			return
		}
	}
	if !bytes.Equal(got.Bytes(), want) {
		done <- errors.New("slow client got wrong bytes")
		return
	}
	done <- nil
}

// TestSlowClientIsNoStall: a client that takes a blob more slowly than
// a spliced chunk per Stall wait is not cut off; the stall deadline is
// for the S3 server.
func TestSlowClientIsNoStall(t *testing.T) {
	gw := harness.StartVersityGWKeepAlive(t, bucket)
	ctx := context.Background()
	s := newStore(t, gw, "", func(o *Options) { o.Waits = Waits{Stall: 2 * time.Second} })
	// Well beyond the socket buffers, which take several MiB at once.
	data := randomBytes(t, 16<<20)
	d := digest.FromBytes(data)
	if err := s.PutBlob(ctx, d, data); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, tc := range []struct {
		name string
		w    func(c net.Conn) io.Writer
	}{
		{"splice", func(c net.Conn) io.Writer { return c }},
		{"copy", func(c net.Conn) io.Writer { return struct{ io.Writer }{c} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			server, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go slowReader(t, client, data, done)
			b, err := s.OpenBlob(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			if b.(*blob).db == nil {
				t.Fatal("not on the direct path")
			}
			_, err = b.(io.WriterTo).WriteTo(tc.w(server))
			b.Close()
			server.Close()
			if err != nil {
				t.Fatalf("slow client cut off: %v", err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestStallConn: a peer that keeps reading, however slowly, is no stall
// even when one Write (an 8 MiB part) takes longer than the stall wait;
// a peer that stops reading fails the write after it.
func TestStallConn(t *testing.T) {
	const stall = time.Second
	for _, tc := range []struct {
		name  string
		every time.Duration // one 64 KiB read per every; 0: no reads
		ok    bool
	}{
		{"slow but moving", 50 * time.Millisecond, true},
		{"stopped", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			data := randomBytes(t, 2<<20) // 32 reads: 1.6 s, longer than stall
			got := make(chan []byte, 1)
			go func() {
				var buf bytes.Buffer
				p := make([]byte, 64<<10)
				for tc.every > 0 && buf.Len() < len(data) {
					time.Sleep(tc.every)
					n, err := b.Read(p)
					buf.Write(p[:n])
					if err != nil {
						break
					}
				}
				got <- buf.Bytes()
			}()
			n, err := stallConn{Conn: a, stall: stall}.Write(data)
			if tc.ok {
				if err != nil || n != len(data) || !bytes.Equal(<-got, data) {
					t.Fatalf("slow reader: wrote %d of %d: %v", n, len(data), err)
				}
				return
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("stopped reader: wrote %d, %v; want a deadline error", n, err)
			}
		})
	}
}

// TestStalledBodyEndsUpload: a server that accepts the connection but
// takes no byte of a request body fails the request with a timeout
// after the Stall wait, and that timeout ends every request of an
// upload's context (uploading), as an answer that does not come does.
func TestStalledBodyEndsUpload(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // never read
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()
	tr, err := newTransport(false, Waits{Answer: time.Second, Copy: time.Second, Op: time.Second, Stall: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := uploading(context.Background())
	defer cancel(nil)
	body := bytes.NewReader(make([]byte, 64<<20)) // far beyond the socket buffers
	req, err := http.NewRequestWithContext(ctx, "PUT", "http://"+ln.Addr().String()+"/bucket/key?partNumber=1&uploadId=x", body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(body.Len())
	done := make(chan error, 1)
	go func() {
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("a body the server does not take still being sent after 30 s")
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("stalled body: %v, want a timeout", err)
	}
	if !errors.Is(context.Cause(ctx), errTimedOut) {
		t.Fatalf("upload context after the stall: %v, want errTimedOut", context.Cause(ctx))
	}
}
