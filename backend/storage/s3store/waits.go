package s3store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/wharf-dev/wharf/backend/storage"
)

// Waits bound how long wharf waits on an S3 server that stops answering
// but keeps its connections open (a frozen process, a saturated disk
// queue, a route that drops packets). Without them a request waited for
// minio-go's ten tries of a minute each: a manifest GET answered after
// ten minutes. With them the client gets 503 UNAVAILABLE after at most
// Op. Zero fields take the defaults; tests shorten them.
type Waits struct {
	// Answer is how long one try waits for the answer's header after
	// its request was sent (default 20 s).
	Answer time.Duration
	// Copy is Answer for requests in which the server copies data
	// before it answers (CopyObject, UploadPartCopy, completing a
	// multipart upload), and the bound on all tries of a copy
	// (default 5 min).
	Copy time.Duration
	// Op bounds all tries of one small request (a record, a stat, a
	// touch marker, a delete) and the opening of a blob read (default
	// 60 s, three tries).
	Op time.Duration
	// Stall is how long a connection may take no byte of a write (an
	// upload part) and a blob body may deliver none before the request
	// fails (default 60 s).
	Stall time.Duration
}

func (w *Waits) setDefaults() {
	for _, f := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&w.Answer, 20 * time.Second}, {&w.Copy, 5 * time.Minute}, {&w.Op, time.Minute}, {&w.Stall, time.Minute}} {
		if *f.v <= 0 {
			*f.v = f.def
		}
	}
}

// waitingTransport sends requests that make the server copy data to
// slow and every other to fast: one answer timeout cannot fit both a
// HEAD and the server-side copy of a 5 GiB part.
type waitingTransport struct{ fast, slow http.RoundTripper }

func (t waitingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rt := t.fast
	if r.Header.Get("X-Amz-Copy-Source") != "" || r.Method == http.MethodPost && r.URL.Query().Has("uploadId") {
		rt = t.slow
	}
	resp, err := rt.RoundTrip(r)
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() {
		if end, ok := r.Context().Value(endOnTimeout{}).(context.CancelCauseFunc); ok {
			end(errTimedOut)
		}
	}
	return resp, err
}

// endOnTimeout marks a context whose requests end at the first try that
// times out (a write that stalls, an answer that does not come): a
// streaming upload has no overall bound (it moves at the client's
// pace), and minio-go tries each part ten times, which against a frozen
// server took ten stall waits.
type endOnTimeout struct{}

var errTimedOut = fmt.Errorf("%w: S3 stopped taking or answering an upload", storage.ErrUnavailable)

// uploading returns ctx marked with endOnTimeout; context.Cause of the
// returned context is errTimedOut once that happened.
func uploading(ctx context.Context) (context.Context, context.CancelCauseFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	return context.WithValue(ctx, endOnTimeout{}, cancel), cancel
}

// newTransport wraps minio-go's default transport: answer timeouts as
// above, and connections whose writes fail when the server takes no byte
// for w.Stall (net/http has no write timeout: an upload to a frozen
// server blocked for ever).
func newTransport(secure bool, w Waits) (http.RoundTripper, error) {
	fast, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, err
	}
	// Blobs stream through these connections: 64 KiB reads and writes
	// instead of 4 KiB ones cut the syscalls of a pull.
	fast.ReadBufferSize, fast.WriteBufferSize = 64<<10, 64<<10
	dial := fast.DialContext
	fast.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return stallConn{Conn: c, stall: w.Stall}, nil
	}
	fast.ResponseHeaderTimeout = w.Answer
	slow := fast.Clone()
	slow.ResponseHeaderTimeout = w.Copy
	return waitingTransport{fast: fast, slow: slow}, nil
}

// stallConn fails a write that stalls for stall. A deadline bounds a
// whole Write call, and net/http hands over an 8 MiB part in one: the
// part goes in pieces of stallPiece, each with its own deadline, so a
// slow link that keeps moving (down to stallPiece per stall, ~4 KB/s)
// is no stall.
type stallConn struct {
	net.Conn
	stall time.Duration
}

const stallPiece = 256 << 10

func (c stallConn) Write(p []byte) (n int, err error) {
	for len(p) > 0 {
		k := min(len(p), stallPiece)
		if err := c.Conn.SetWriteDeadline(time.Now().Add(c.stall)); err != nil {
			return n, err
		}
		m, err := c.Conn.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

// op bounds all tries of one small request by the Op wait.
func (s *Store) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.waits.Op)
}
