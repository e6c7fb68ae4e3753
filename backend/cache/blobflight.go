package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
)

// blobFlight is one blob download from the upstream in progress. Requests
// for the same blob of the same repository that arrive meanwhile follow
// it instead of downloading again: they read the download's data file as
// it grows (localfs keeps it at <root>/uploads/<id>/data until the commit
// renames it, and an open file survives the rename) and get their last
// byte only once the leader has verified the digest.
type blobFlight struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	path    string        // data file of a streamed download; "" while unknown or when spooled
	size    int64         // announced length; -1 unknown
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

func (f *blobFlight) streaming(path string, size int64) {
	f.update(func() { f.path, f.size = path, size })
}

func (f *blobFlight) finish(ok bool, err error) {
	f.update(func() {
		if !f.done {
			f.done, f.ok, f.err = true, ok, err
		}
	})
}

func (f *blobFlight) state() (path string, size int64, done, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.path, f.size, f.done, f.ok
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

// serveFlight serves blob d from flight f's data file as it grows (the
// leader's own client and every follower), honouring the request's
// Range; the last byte waits until the digest is verified.
func (c *Cache) serveFlight(w http.ResponseWriter, req *http.Request, d digest.Digest, f *blobFlight) error {
	ctx := req.Context()
	var file *os.File
	for {
		ch := f.watch()
		path, size, done, ok := f.state()
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
		if path != "" && size >= 0 {
			if fh, err := os.Open(path); err == nil {
				file = fh
				break
			}
			// renamed by the commit or removed by a failure: see done
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
		fi, err := file.Stat()
		if err != nil {
			c.log.Warn().Err(err).Msg("cache: stat a blob being downloaded")
			panic(http.ErrAbortHandler)
		}
		avail := fi.Size()
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
			n, err := io.CopyN(w, file, avail-pos)
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
