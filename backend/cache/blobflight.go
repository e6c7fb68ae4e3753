package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
)

// blobFlight is one blob download from the upstream in progress. Requests
// for the same blob of the same repository that arrive meanwhile follow
// it instead of downloading again. With a store whose uploads can be read
// while they are written (storage.TailUpload, the local file system),
// they read the download as it grows and get their last byte only once
// the leader has verified the digest. With one that cannot (S3), they
// wait for the verified blob and read it from the store.
type blobFlight struct {
	mu      sync.Mutex
	changed chan struct{}                               // closed and replaced on every change
	tail    func(context.Context) (storage.Tail, error) // opens a streamed download's bytes; nil while unknown, when spooled, or when the store cannot
	size    int64                                       // announced length; -1 unknown
	done    bool
	ok      bool  // committed (valid once done)
	err     error // why it failed (valid once done and not ok)

	followers  int                // requests following right now
	leaderGone bool               // the leader's client went away
	cancel     context.CancelFunc // ends the download
}

func (f *blobFlight) setCancel(cancel context.CancelFunc) {
	f.mu.Lock()
	f.cancel = cancel
	f.mu.Unlock()
}

// leaderLeft: the leading request's client went away; the download goes
// on only while someone follows it.
func (f *blobFlight) leaderLeft() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leaderGone = true
	if f.followers == 0 && f.cancel != nil {
		f.cancel()
	}
}

func (f *blobFlight) addFollower() {
	f.mu.Lock()
	f.followers++
	f.mu.Unlock()
}

// abandoned reports that the leader's client went away and nobody
// follows: why the download was cancelled, if it was.
func (f *blobFlight) abandoned() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leaderGone && f.followers == 0
}

func (f *blobFlight) removeFollower() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.followers--
	if f.followers == 0 && f.leaderGone && f.cancel != nil {
		f.cancel()
	}
}

func newBlobFlight() *blobFlight {
	return &blobFlight{changed: make(chan struct{}), size: -1}
}

// watch returns a channel closed at the next change.
func (f *blobFlight) watch() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *blobFlight) update(fn func()) {
	f.mu.Lock()
	if fn != nil {
		fn()
	}
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// progress tells followers that more bytes may be on disk.
func (f *blobFlight) progress() { f.update(nil) }

func (f *blobFlight) streaming(tail func(context.Context) (storage.Tail, error), size int64) {
	f.update(func() { f.tail, f.size = tail, size })
}

func (f *blobFlight) finish(ok bool, err error) {
	f.update(func() {
		if !f.done {
			f.done, f.ok, f.err = true, ok, err
		}
	})
}

func (f *blobFlight) state() (tail func(context.Context) (storage.Tail, error), size int64, done, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tail, f.size, f.done, f.ok
}

func (f *blobFlight) failure() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// joinBlob returns the flight for key, and whether the caller leads it
// (and must call endBlob) or follows it (and must call followBlob).
func (c *Cache) joinBlob(key string) (*blobFlight, bool) {
	c.blobsMu.Lock()
	if f, ok := c.blobs[key]; ok {
		f.addFollower() // before anything can see the leader leave
		hook := c.blobJoined
		c.blobsMu.Unlock()
		if hook != nil {
			hook(key)
		}
		return f, false
	}
	f := newBlobFlight()
	c.blobs[key] = f
	c.blobsMu.Unlock()
	return f, true
}

// endBlob ends the leader's flight; a flight that did not succeed fails
// with *err (the leader's error, or a generic one if it panicked).
func (c *Cache) endBlob(key string, f *blobFlight, err *error) {
	c.blobsMu.Lock()
	delete(c.blobs, key)
	c.blobsMu.Unlock()
	f.finish(false, *err)
}

var errLeaderFailed = errors.New("the shared download failed")

// followBlob serves a blob another request is downloading. When that
// download fails before this request has answered, it returns the
// leader's error, or errLeaderFailed when the leader's client went away
// (then the caller downloads itself).
func (c *Cache) followBlob(w http.ResponseWriter, req *http.Request, d digest.Digest, f *blobFlight) error {
	defer f.removeFollower() // added by joinBlob
	return c.serveFlight(w, req, d, f)
}

// serveFlight serves blob d from flight f's upload as it grows (the
// leader's own client and every follower), honouring the request's
// Range; the last byte waits until the digest is verified. When the
// store cannot read an upload while it is written, it waits for the
// verified blob and serves that.
func (c *Cache) serveFlight(w http.ResponseWriter, req *http.Request, d digest.Digest, f *blobFlight) error {
	ctx := req.Context()
	var file storage.Tail
	for {
		ch := f.watch()
		open, size, done, ok := f.state()
		if done {
			if !ok {
				if err := f.failure(); err != nil && !errors.Is(err, context.Canceled) {
					return err
				}
				return errLeaderFailed
			}
			b, err := c.store.OpenBlob(ctx, d)
			if err != nil {
				return fmt.Errorf("open stored blob %s: %w", d, err)
			}
			defer b.Close()
			c.serveFile(w, req, d, b)
			return nil
		}
		if open != nil && size >= 0 {
			if t, err := open(ctx); err == nil {
				file = t
				break
			}
			// committed or removed by a failure: see done
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer file.Close()
	_, size, _, _ := f.state()
	h := w.Header()
	backend.BlobIdentity(h, d)
	start, end, status, re := backend.BlobRange(h, req.Header.Get("Range"), size)
	if re != nil {
		return re
	}
	w.WriteHeader(status)
	if req.Method == http.MethodHead || end == start {
		return nil
	}
	pos := start
	for {
		ch := f.watch()
		_, _, done, ok := f.state()
		if done && !ok {
			c.log.Debug().Str("digest", string(d)).Msg("cache: the download this request followed failed")
			panic(http.ErrAbortHandler)
		}
		avail, err := file.Written()
		if err != nil {
			c.log.Warn().Err(err).Msg("cache: stat a blob being downloaded")
			panic(http.ErrAbortHandler)
		}
		limit := end - 1 // the last byte waits for the verification
		if done {
			limit = end
		}
		if avail > limit {
			avail = limit
		}
		if avail > pos {
			if _, err := file.Seek(pos, io.SeekStart); err != nil {
				panic(http.ErrAbortHandler)
			}
			n, err := io.CopyN(w, file, avail-pos) // sendfile from a local file
			pos += n
			if err != nil {
				return nil // client gone
			}
		}
		if pos >= end {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		}
	}
}

// teeWriter sends a download to the leading request's client as the
// bytes go to a store that cannot be read before the commit. The headers
// go out with the first byte (so a download failing before it is still a
// clean error), and the last byte only after the digest was verified
// (finish). A client that stops reading for the idle timeout, or goes
// away, is dropped: the download goes on for the requests following it
// (leaderLeft cancels it when there are none).
type teeWriter struct {
	w          http.ResponseWriter
	rc         *http.ResponseController
	d          digest.Digest
	size       int64
	watch      *time.Timer // the upstream's idle watchdog, paused while the client writes
	idle       time.Duration
	leaderLeft func()

	pos     int64 // bytes of the blob seen so far
	started bool  // headers sent
	gone    bool  // the client failed; bytes are no longer sent
	last    byte  // the blob's last byte, held back
	hasLast bool
}

func newTeeWriter(w http.ResponseWriter, d digest.Digest, size int64, watch *time.Timer, idle time.Duration, leaderLeft func()) *teeWriter {
	return &teeWriter{w: w, rc: http.NewResponseController(w), d: d, size: size, watch: watch, idle: idle, leaderLeft: leaderLeft}
}

// Write sends p (all but the blob's last byte) to the client. It never
// fails: the download must not depend on this client.
func (t *teeWriter) Write(p []byte) (int, error) {
	n := len(p)
	out := p
	if rest := t.size - 1 - t.pos; int64(len(p)) > rest {
		out = nil
		if rest >= 0 {
			out = p[:rest]
			t.last, t.hasLast = p[rest], true
		}
	}
	t.pos += int64(n)
	if !t.gone && len(out) > 0 {
		t.send(out)
	}
	return n, nil
}

// send writes b to the client within the idle timeout; the upstream's
// watchdog does not run meanwhile.
func (t *teeWriter) send(b []byte) {
	t.watch.Stop()
	defer t.watch.Reset(t.idle)
	t.start()
	_ = t.rc.SetWriteDeadline(time.Now().Add(t.idle)) // not every writer supports it
	if _, err := t.w.Write(b); err != nil {
		t.gone = true
		t.leaderLeft()
	}
}

// start sends the headers once.
func (t *teeWriter) start() {
	if !t.started {
		t.started = true
		h := t.w.Header()
		backend.BlobIdentity(h, t.d)
		h.Set("Content-Length", strconv.FormatInt(t.size, 10))
		t.w.WriteHeader(http.StatusOK)
	}
}

// finish ends the client's answer once the download ended: the last
// byte when the blob was verified and stored; else the leader's error
// while nothing was sent, or a cut stream after headers went out.
func (t *teeWriter) finish(f *blobFlight) error {
	_, _, _, ok := f.state()
	if ok && !t.gone && t.pos == t.size {
		if t.hasLast {
			t.send([]byte{t.last})
		} else {
			t.start() // an empty blob
		}
		_ = t.rc.SetWriteDeadline(time.Time{})
		if !t.gone {
			return nil
		}
	}
	if t.gone {
		return nil // the client went away
	}
	if !t.started {
		if err := f.failure(); err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		return context.Canceled
	}
	panic(http.ErrAbortHandler) // never a complete wrong blob
}
