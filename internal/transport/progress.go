package transport

import (
	"io"
	"net/http"
	"time"
)

// Timeouts: the http.Server bounds header reads (ReadHeaderTimeout) and
// idle keep-alive connections (IdleTimeout). Neither a total read nor a
// total write timeout is set, since either would kill a slow 10 GiB
// transfer. Instead a transfer is cut when it makes no progress for
// progress_timeout: request bodies through progressBody (a read deadline
// pushed forward on every read), responses through Conn (a write
// deadline pushed forward on every write) and, over HTTP/2, progressWriter.

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
	bp := GetBuffer()
	defer PutBuffer(bp)
	buf := (*bp)[:uploadBuf]
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
