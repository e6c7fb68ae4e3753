package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/internal/transport"
)

type requestIDKey struct{}

// RequestID returns the id the gateway gave this request ("" outside it).
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// withRequestID keeps a sane client-sent X-Request-Id or makes a new one,
// and echoes it in the answer so users can quote it.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !saneID(id) {
			var b [12]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

func saneID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// accessLog writes one structured line per request once it is answered,
// with what next noted in the request's exchange (the user).
func accessLog(log *zerolog.Logger, m *metrics, siteName string) func(next siteFunc) http.Handler {
	return func(next siteFunc) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rec := &recorder{ResponseWriter: w, tls: r.TLS != nil}
			var in *countingBody
			if r.Body != nil && r.Body != http.NoBody {
				in = &countingBody{ReadCloser: r.Body}
				r.Body = in
			}
			x := &exchange{}
			// Logged in a defer so that a transfer a backend cuts off on
			// purpose (panic(http.ErrAbortHandler), e.g. a mirrored blob
			// whose digest turned out wrong) still gets its line.
			defer func() {
				p := recover()
				status := rec.status
				if status == 0 {
					status = http.StatusOK
				}
				ev := log.Info()
				if status >= 500 || p != nil {
					ev = log.Error()
				}
				ev = ev.Str("id", RequestID(r.Context())).
					Str("host", r.Host).
					Str("remote", r.RemoteAddr).
					Str("proto", r.Proto).
					Str("method", r.Method).
					Str("path", r.URL.Path).
					Int("status", status).
					Int64("bytes_in", in.count()).
					Int64("bytes", rec.bytes).
					Dur("duration", time.Since(start))
				if x.user != "" {
					ev = ev.Str("user", x.user)
				}
				if p != nil {
					ev = ev.Bool("aborted", true)
				}
				ev.Msg("request")
				m.observe(siteName, r.Method, status, rec.bytes, time.Since(start))
				if p != nil {
					panic(p)
				}
			}()
			next(rec, r, x)
		})
	}
}

// recorder notes status and size of an answer without hiding the optional
// interfaces (io.ReaderFrom for sendfile, http.Flusher for streaming).
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	tls    bool // the connection is a *tls.Conn: no sendfile, no ReadFrom
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// ReadFrom keeps the kernel's sendfile path open for blob downloads.
func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	var n int64
	var err error
	switch rf, ok := r.ResponseWriter.(io.ReaderFrom); {
	case r.tls:
		// No sendfile through TLS: net/http would copy in 32 KiB steps
		// (a file read per step); large steps cut the system calls.
		bp := transport.GetBuffer()
		n, err = io.CopyBuffer(struct{ io.Writer }{r.ResponseWriter}, struct{ io.Reader }{src}, *bp)
		transport.PutBuffer(bp)
	case ok:
		n, err = rf.ReadFrom(src)
	default:
		n, err = io.Copy(struct{ io.Writer }{r.ResponseWriter}, src)
	}
	r.bytes += n
	return n, err
}

// Flush passes through so streamed answers leave at once.
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack passes through for protocols that take over the connection.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if h, ok := r.ResponseWriter.(http.Hijacker); ok {
		return h.Hijack()
	}
	return nil, nil, errors.New("hijack not supported")
}

// Unwrap lets http.ResponseController reach the real writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// countingBody counts the request body bytes the backend read, so that
// chunked uploads (how Docker pushes) are logged with their size too.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// WriteTo keeps the body's own large-buffer copy (transport's progressBody.WriteTo).
func (b *countingBody) WriteTo(w io.Writer) (int64, error) {
	if wt, ok := b.ReadCloser.(io.WriterTo); ok {
		n, err := wt.WriteTo(w)
		b.n += n
		return n, err
	}
	n, err := io.Copy(w, struct{ io.Reader }{b.ReadCloser})
	b.n += n
	return n, err
}

func (b *countingBody) count() int64 {
	if b == nil {
		return 0
	}
	return b.n
}
