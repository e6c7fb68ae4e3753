package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/layout"
)

func blobUnknown(d digest.Digest) error {
	return backend.Errorf(http.StatusNotFound, backend.CodeBlobUnknown, "blob %s unknown to the upstream", d)
}

// getBlob serves GET and HEAD of a blob: from the store when this
// repository has it, else from the upstream while it is being stored.
func (c *Cache) getBlob(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	d := rt.Digest
	ctx := req.Context()
	repo := rt.Repo
	_, lerr := c.store.GetRecord(ctx, repo, layout.BlobLink(d))
	switch {
	case lerr == nil:
		if b, err := c.store.OpenBlob(ctx, d); err == nil {
			defer b.Close()
			c.usedBlob(ctx, d)
			c.usedRecord(ctx, repo, layout.BlobLink(d))
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
	if err := c.store.PutRecord(ctx, repo, layout.BlobLink(d), nil); err != nil {
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

// streamBlob stores a big blob while every client that wants it, this
// request's included, reads the growing upload (serveFlight): the
// download runs at the upstream's and the disk's pace, not at the pace of
// whichever client came first, and each client gets the bytes from the
// page cache by sendfile. Each client's last byte waits for the digest
// check; on a mismatch every stream is cut before it.
//
// A store that cannot read an upload while it is written (S3) gets the
// bytes as they come instead: this request's client receives them as
// they go to the store (teeWriter; the download then moves at that
// client's pace), and the requests following it are served the verified
// blob from the store once it is committed. Nothing is held in memory
// beyond the store's write buffer.
func (c *Cache) streamBlob(ctx context.Context, w http.ResponseWriter, req *http.Request, repo string, d digest.Digest, body io.Reader, watch *time.Timer, size int64, f *blobFlight) error {
	if size >= 0 {
		// this request's own Range, checked before anything starts
		if _, _, _, re := backend.BlobRange(http.Header{}, req.Header.Get("Range"), size); re != nil {
			return re
		}
	}
	u, err := c.store.NewUpload(ctx, repo)
	if err != nil {
		return fmt.Errorf("start storing blob %s: %w", d, err)
	}
	var tee *teeWriter
	if tu, ok := u.(storage.TailUpload); ok {
		f.streaming(tu.OpenTail, size)
	} else if size >= 0 && req.Method == http.MethodGet && req.Header.Get("Range") == "" {
		// fillBlob's idleReader runs around this, so the upstream's
		// idle time is measured without the time the client takes.
		tee = newTeeWriter(w, d, size, watch, c.idle, f.leaderLeft)
		body = io.TeeReader(body, tee)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.fillBlob(ctx, u, repo, d, body, watch, size, f)
	}()
	if tee != nil {
		<-done
		return tee.finish(f)
	}
	// The download goes on for followers when this client leaves; this
	// handler returns (or is cut off) only after it ended.
	defer func() { <-done }()
	err = c.serveFlight(w, req, d, f)
	if errors.Is(err, errLeaderFailed) {
		<-done
		if ferr := f.failure(); ferr != nil && !errors.Is(ferr, context.Canceled) {
			return ferr
		}
		return context.Canceled
	}
	return err
}

// fillBlob writes the upstream body into upload u, verifies and commits
// it, and finishes the flight either way.
func (c *Cache) fillBlob(ctx context.Context, u storage.Upload, repo string, d digest.Digest, body io.Reader, watch *time.Timer, size int64, f *blobFlight) {
	defer u.Close()
	src := &idleReader{r: body, t: watch, d: c.idle}
	if pu, ok := u.(interface{ SetProgress(func(int64)) }); ok {
		// wake the readers exactly when the store wrote a chunk
		pu.SetProgress(func(int64) { f.progress() })
	} else {
		// a store without the hook: once per MiB received
		src.progress, src.every = f.progress, progressEvery
	}
	n, err := u.Append(ctx, src)
	fail := func(msg string, err error) {
		_ = u.Cancel(context.WithoutCancel(ctx))
		gone := f.abandoned()
		ev := c.log.Warn()
		if gone {
			ev = c.log.Debug() // every client went away; nothing to worry about
		}
		ev.Err(err).Str("repo", repo).Str("digest", string(d)).Int64("bytes", n).Msg(msg)
		switch {
		case gone:
			f.finish(false, context.Canceled) // later requests may try again themselves
		case ctx.Err() != nil:
			f.finish(false, &upstreamError{err: context.DeadlineExceeded, msg: fmt.Sprintf("upstream stalled for %v sending blob %s; nothing was stored", c.idle, d)})
		default:
			f.finish(false, &upstreamError{err: err, msg: fmt.Sprintf("downloading blob %s from the upstream: %s; nothing was stored", d, msg)})
		}
	}
	if err != nil {
		fail("cache: blob download from the upstream interrupted; nothing stored", err)
		return
	}
	if size >= 0 && n != size {
		fail("cache: upstream sent a different length than announced; nothing stored", fmt.Errorf("got %d of %d bytes", n, size))
		return
	}
	if err := u.Commit(ctx, d); err != nil {
		if errors.Is(err, storage.ErrDigestMismatch) {
			c.digestMismatch(repo)
			c.log.Error().Err(err).Str("repo", repo).Str("digest", string(d)).Msg("cache: upstream sent a blob that does not match its digest; not stored")
			f.finish(false, &upstreamError{status: http.StatusBadGateway, msg: fmt.Sprintf("upstream sent content for blob %s that does not match the digest; nothing was stored", d)})
			return
		}
		fail("cache: storing blob failed", err)
		return
	}
	c.budget.added(n)
	if err := c.link(ctx, repo, d); err != nil {
		c.log.Warn().Err(err).Str("repo", repo).Str("digest", string(d)).Msg("cache: link blob")
	}
	f.finish(true, nil)
}

// progressEvery: with a store that cannot say when it wrote, followers
// are woken once per this many bytes received (waking them for every
// socket read only costs them a stat that finds nothing new).
const progressEvery = 1 << 20

// idleReader resets the watchdog around every read (and the client write
// that a TeeReader does inside it): the download ends only when nothing
// moves for the idle timeout.
type idleReader struct {
	r        io.Reader
	t        *time.Timer
	d        time.Duration
	progress func() // called before a read once every bytes were read since the last call: earlier bytes may be on disk now
	every    int64
	since    int64
}

func (i *idleReader) Read(p []byte) (int, error) {
	if i.progress != nil && i.since >= i.every {
		i.since = 0
		i.progress()
	}
	i.t.Reset(i.d)
	n, err := i.r.Read(p)
	i.since += int64(n)
	if err != nil {
		// The upstream is done (or failed): what remains is the store's
		// work (an S3 store uploads its last part now), which is not the
		// upstream being idle.
		i.t.Stop()
	} else {
		i.t.Reset(i.d)
	}
	return n, err
}
