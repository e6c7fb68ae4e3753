package transport

import (
	"io"
	"net/http"
	"strings"
	"time"
)

// Lingering close, as nginx does it: when a handler answers an HTTP/1.x
// request without reading its whole body (a 413 for a manifest over 4
// MiB, a 401 or 403 before an upload), closing the connection at once
// makes the kernel reset it while the client is still sending, and a
// client that writes its whole body before reading (Python's
// http.client, many scripts) sees "broken pipe" or "connection reset"
// instead of the answer. So the answer is sent first, then the rest of
// the body is read and thrown away, bounded in bytes and time; the
// connection is then reused (the body was read to its end) or closed by
// net/http as before.
const (
	// lingerMax is the most body bytes thrown away after an answer; a
	// declared Content-Length above it is not waited for at all.
	lingerMax = 32 << 20
	// lingerTimeout cuts the draining when the client sends nothing for
	// this long; lingerTime bounds the whole of it (nginx's
	// lingering_timeout and lingering_time).
	lingerTimeout = 5 * time.Second
	lingerTime    = 30 * time.Second
)

// lingerBody notes whether a request body was read to its end.
type lingerBody struct {
	io.ReadCloser
	eof bool
}

func (b *lingerBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// withLinger drains what a handler left of an HTTP/1.x request body once
// the answer is out (see lingerMax). It must wrap the server's own
// ResponseWriter: it turns on full duplex so net/http does not itself
// try to read the body, or give up on it, before the answer's header.
func withLinger(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 1 || r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 ||
			r.ContentLength > lingerMax || strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
			// HTTP/2 resets the stream and keeps the connection; a
			// client waiting for 100 Continue has sent no body.
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		_ = rc.EnableFullDuplex()
		body := &lingerBody{ReadCloser: r.Body}
		r.Body = body
		next.ServeHTTP(w, r)
		if body.eof {
			return
		}
		if err := rc.Flush(); err != nil {
			return // the client is gone
		}
		drain(rc, body)
		_ = rc.SetReadDeadline(time.Time{})
	})
}

// drain reads and discards up to lingerMax bytes of body.
func drain(rc *http.ResponseController, body io.Reader) {
	bp := GetBuffer()
	defer PutBuffer(bp)
	buf := *bp
	end := time.Now().Add(lingerTime)
	var total int64
	for total < lingerMax {
		now := time.Now()
		if now.After(end) {
			return
		}
		if rc.SetReadDeadline(minTime(now.Add(lingerTimeout), end)) != nil {
			return
		}
		n, err := body.Read(buf[:min(int64(len(buf)), lingerMax-total)])
		total += int64(n)
		if err != nil {
			return
		}
	}
}

// min of two times.
func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
