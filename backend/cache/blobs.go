package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
)

func blobUnknown(d digest.Digest) error {
	return backend.Errorf(http.StatusNotFound, backend.CodeBlobUnknown, "blob %s unknown to the upstream", d)
}

// getBlob serves GET and HEAD of a blob: from the store when this
// repository has it, else from the upstream while it is being stored.
func (c *Cache) getBlob(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	d, e := backend.ParseDigest(rt.Reference)
	if e != nil {
		return e
	}
	ctx := req.Context()
	repo := rt.Repo
	_, lerr := c.store.GetRecord(ctx, repo, blobKey(d))
	switch {
	case lerr == nil:
		if b, err := c.store.OpenBlob(ctx, d); err == nil {
			defer b.Close()
			c.usedBlob(ctx, d)
			c.usedRecord(ctx, repo, blobKey(d))
			c.serveFile(w, req, d, b)
			return nil
		} else if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		// link without content (removed by gc): fetch again below
	case !errors.Is(lerr, storage.ErrNotFound):
		return lerr
	default:
		if _, err := c.store.StatBlob(ctx, d); err == nil {
			// The content is here (another repository brought it), but
			// the upstream has not said this repository may have it:
			// ask, so a digest cannot leak across repositories.
			if _, err := c.headBlob(ctx, repo, d); err != nil {
				return err
			}
			if err := c.link(ctx, repo, d); err != nil {
				return err
			}
			b, err := c.store.OpenBlob(ctx, d)
			if errors.Is(err, storage.ErrNotFound) {
				break // evicted meanwhile: fetch it again below
			}
			if err != nil {
				return err
			}
			defer b.Close()
			c.usedBlob(ctx, d)
			c.serveFile(w, req, d, b)
			return nil
		}
	}
	if req.Method == http.MethodHead {
		size, err := c.headBlob(ctx, repo, d)
		if err != nil {
			return err
		}
		h := w.Header()
		backend.BlobIdentity(h, d)
		if size >= 0 {
			h.Set("Content-Length", strconv.FormatInt(size, 10))
		}
		w.WriteHeader(http.StatusOK)
		return nil
	}
	return c.fetchBlob(w, req, repo, d)
}

func (c *Cache) link(ctx context.Context, repo string, d digest.Digest) error {
	if err := c.store.PutRecord(ctx, repo, blobKey(d), nil); err != nil {
		return fmt.Errorf("link blob %s: %w", d, err)
	}
	return nil
}

// headBlob asks the upstream for a blob's size.
func (c *Cache) headBlob(ctx context.Context, repo string, d digest.Digest) (int64, error) {
	ctx, cancel := c.smallCtx(ctx)
	defer cancel()
	up, path, upRepo, err := c.upReq(repo, "blobs", string(d))
	if err != nil {
		return 0, err
	}
	resp, err := up.do(ctx, http.MethodHead, path, nil, nil, upRepo)
	if err != nil {
		return 0, err
	}
	drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.ContentLength, nil
	case http.StatusNotFound:
		return 0, blobUnknown(d)
	}
	return 0, statusError(resp, "blob "+string(d))
}

// serveFile serves a stored blob with a single Range if asked (sendfile
// on plain HTTP).
func (c *Cache) serveFile(w http.ResponseWriter, req *http.Request, d digest.Digest, b storage.Blob) {
	re, err := backend.ServeBlob(w, req, d, b, b.Size())
	if re != nil {
		backend.WriteError(w, req, re)
		return
	}
	if err != nil {
		c.log.Debug().Err(err).Str("digest", string(d)).Msg("cache: blob download interrupted")
	}
}

// fetchBlob gets a missing blob from the upstream. Small blobs are stored
// and verified first and then served from the store; big ones stream to
// the client while they are written to the store, and the last byte is
// held back until the digest is verified, so a client never receives a
// complete wrong blob. Nothing becomes visible unless it matches d.
func (c *Cache) fetchBlob(w http.ResponseWriter, req *http.Request, repo string, d digest.Digest) error {
	key := repo + "@" + string(d)
	for {
		f, leader := c.joinBlob(key)
		if leader {
			// stays the error if the download panics (an aborted stream)
			var err error = &upstreamError{status: http.StatusBadGateway, msg: fmt.Sprintf("the download of blob %s from the upstream failed", d)}
			defer c.endBlob(key, f, &err)
			err = c.downloadBlob(w, req, repo, d, f)
			if be := (*backend.Error)(nil); errors.As(err, &be) && be.Code == backend.CodeRangeInvalid {
				// this request's own Range was bad: followers try themselves
				f.finish(false, context.Canceled)
			}
			return err
		}
		askedUpstream(req.Context())
		err := c.followBlob(w, req, d, f)
		if !errors.Is(err, errLeaderFailed) {
			return err
		}
		// that download failed before this request answered: try ourselves
	}
}

// downloadBlob fetches the blob from the upstream for this request and
// for the requests following it (f).
func (c *Cache) downloadBlob(w http.ResponseWriter, req *http.Request, repo string, d digest.Digest, f *blobFlight) error {
	// The download outlives this request's client while other requests
	// follow it; it is cancelled once nobody is left.
	ctx, cancel := context.WithCancel(context.WithoutCancel(req.Context()))
	defer cancel()
	f.setCancel(cancel)
	defer context.AfterFunc(req.Context(), f.leaderLeft)()
	// One watchdog bounds the wait for the answer, then the time between
	// two reads of the body; there is no limit on the whole download.
	watch := time.AfterFunc(c.upTimeout, cancel)
	defer watch.Stop()
	up, path, upRepo, err := c.upReq(repo, "blobs", string(d))
	if err != nil {
		return err
	}
	resp, err := up.do(ctx, http.MethodGet, path, nil, nil, upRepo)
	if err != nil {
		if ctx.Err() != nil && req.Context().Err() == nil {
			return &upstreamError{err: context.DeadlineExceeded, msg: fmt.Sprintf("upstream did not answer for blob %s within %v", d, c.upTimeout)}
		}
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		drain(resp)
		return blobUnknown(d)
	default:
		drain(resp)
		return statusError(resp, "blob "+string(d))
	}
	watch.Reset(c.idle)
	size := resp.ContentLength
	if size >= 0 && size <= c.spoolLimit {
		return c.spoolBlob(ctx, w, req, repo, d, &idleReader{r: resp.Body, t: watch, d: c.idle}, size, f)
	}
	return c.streamBlob(ctx, w, req, repo, d, resp.Body, watch, size, f)
}

// spoolBlob stores a small blob, verifies it, then serves it from disk.
func (c *Cache) spoolBlob(ctx context.Context, w http.ResponseWriter, req *http.Request, repo string, d digest.Digest, body io.Reader, size int64, f *blobFlight) error {
	u, err := c.store.NewUpload(ctx, repo)
	if err != nil {
		return fmt.Errorf("start storing blob %s: %w", d, err)
	}
	defer u.Close()
	n, err := u.Append(ctx, body)
	if err != nil {
		_ = u.Cancel(context.WithoutCancel(ctx))
		if req.Context().Err() != nil {
			return context.Canceled
		}
		if ctx.Err() != nil {
			return &upstreamError{err: context.DeadlineExceeded, msg: fmt.Sprintf("upstream stalled for %v sending blob %s; nothing was stored", c.idle, d)}
		}
		if errors.Is(err, storage.ErrInterrupted) {
			return &upstreamError{err: err, msg: fmt.Sprintf("downloading blob %s from the upstream", d)}
		}
		return err
	}
	if n != size {
		_ = u.Cancel(ctx)
		return &upstreamError{status: http.StatusBadGateway, msg: fmt.Sprintf("upstream sent %d bytes for blob %s, announced %d; nothing was stored", n, d, size)}
	}
	if err := u.Commit(ctx, d); err != nil {
		if errors.Is(err, storage.ErrDigestMismatch) {
			c.digestMismatch(repo)
			c.log.Error().Err(err).Str("repo", repo).Str("digest", string(d)).Msg("cache: upstream sent a blob that does not match its digest; not stored")
			return &upstreamError{status: http.StatusBadGateway, msg: fmt.Sprintf("upstream sent content for blob %s that does not match the digest; nothing was stored", d)}
		}
		return fmt.Errorf("store blob %s: %w", d, err)
	}
	c.budget.added(n)
	if err := c.link(ctx, repo, d); err != nil {
		return err
	}
	f.finish(true, nil)
	b, err := c.store.OpenBlob(ctx, d)
	if err != nil {
		return fmt.Errorf("open stored blob %s: %w", d, err)
	}
	defer b.Close()
	c.serveFile(w, req, d, b)
	return nil
}

// streamBlob tees the upstream body to the client and into an upload.
func (c *Cache) streamBlob(ctx context.Context, w http.ResponseWriter, req *http.Request, repo string, d digest.Digest, body io.Reader, watch *time.Timer, size int64, f *blobFlight) error {
	start, end := int64(0), int64(-1) // window of the blob sent to the client; -1: to the end
	status := http.StatusOK
	h := w.Header()
	if size >= 0 {
		var re *backend.Error
		if start, end, status, re = backend.BlobRange(h, req.Header.Get("Range"), size); re != nil {
			return re
		}
	}
	u, err := c.store.NewUpload(ctx, repo)
	if err != nil {
		return fmt.Errorf("start storing blob %s: %w", d, err)
	}
	defer u.Close()
	f.streaming(filepath.Join(c.root, "uploads", u.ID(), "data"), size)
	backend.BlobIdentity(h, d)
	w.WriteHeader(status)
	cw := &clientWriter{w: w, start: start, end: end, hold: end > start}
	src := &idleReader{r: io.TeeReader(body, cw), t: watch, d: c.idle, progress: f.progress}
	n, err := u.Append(ctx, src)
	abort := func(msg string, err error) error {
		_ = u.Cancel(context.WithoutCancel(ctx))
		ev := c.log.Warn()
		if req.Context().Err() != nil {
			ev = c.log.Debug() // the client went away; nothing to worry about
		}
		ev.Err(err).Str("repo", repo).Str("digest", string(d)).Int64("bytes", n).Msg(msg)
		if req.Context().Err() != nil {
			f.finish(false, context.Canceled) // followers may try again themselves
		}
		// The status line is out: end the response without its last
		// byte so the client sees a failed download, never a good one.
		panic(http.ErrAbortHandler)
	}
	if err != nil {
		return abort("cache: blob download from the upstream interrupted; nothing stored", err)
	}
	if size >= 0 && n != size {
		return abort("cache: upstream sent a different length than announced; nothing stored", fmt.Errorf("got %d of %d bytes", n, size))
	}
	if err := u.Commit(ctx, d); err != nil {
		if errors.Is(err, storage.ErrDigestMismatch) {
			c.digestMismatch(repo)
			c.log.Error().Err(err).Str("repo", repo).Str("digest", string(d)).Msg("cache: upstream sent a blob that does not match its digest; not stored")
			panic(http.ErrAbortHandler)
		}
		return abort("cache: storing blob failed", err)
	}
	c.budget.added(n)
	if err := c.link(ctx, repo, d); err != nil {
		c.log.Warn().Err(err).Str("repo", repo).Str("digest", string(d)).Msg("cache: link blob")
	}
	f.finish(true, nil)
	if err := cw.release(); err != nil {
		c.log.Debug().Err(err).Str("digest", string(d)).Msg("cache: client went away at the last byte")
	}
	return nil
}

// clientWriter passes the part [start, end) of the blob's bytes to the
// client, holding back the final byte (when hold) until release.
type clientWriter struct {
	w          io.Writer
	pos        int64
	start, end int64 // end -1: unknown length, send everything
	hold       bool
	held       []byte
	failed     error
}

func (cw *clientWriter) Write(p []byte) (int, error) {
	lo := cw.pos
	hi := lo + int64(len(p))
	cw.pos = hi
	if cw.failed != nil {
		return len(p), nil // the client is gone; the download goes on for followers
	}
	a, b := cw.start, hi
	if cw.end >= 0 {
		last := cw.end
		if cw.hold {
			last = cw.end - 1
			if lo <= last && last < hi {
				cw.held = []byte{p[last-lo]}
			}
		}
		if last < b {
			b = last
		}
	}
	if a < lo {
		a = lo
	}
	if a < b {
		if _, err := cw.w.Write(p[a-lo : b-lo]); err != nil {
			cw.failed = err // see above; the context ends the download if nobody follows
		}
	}
	return len(p), nil
}

// release writes the held-back byte.
func (cw *clientWriter) release() error {
	if cw.failed != nil {
		return cw.failed
	}
	if len(cw.held) == 0 {
		return nil
	}
	_, err := cw.w.Write(cw.held)
	return err
}

// idleReader resets the watchdog around every read (and the client write
// that a TeeReader does inside it): the download ends only when nothing
// moves for the idle timeout.
type idleReader struct {
	r        io.Reader
	t        *time.Timer
	d        time.Duration
	progress func() // called before every read: earlier bytes may be on disk now
}

func (i *idleReader) Read(p []byte) (int, error) {
	if i.progress != nil {
		i.progress()
	}
	i.t.Reset(i.d)
	n, err := i.r.Read(p)
	i.t.Reset(i.d)
	return n, err
}
