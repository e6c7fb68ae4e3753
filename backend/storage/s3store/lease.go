package s3store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/wharf-dev/wharf/backend/storage"
)

// The gc lease: one object, <prefix>gc.lease, says which collection may
// delete under the prefix. It is written with conditional PUTs
// (If-None-Match: * to take a free lease, If-Match: <etag> to take over
// an expired one or to renew our own), so of two writers one gets 412
// Precondition Failed. Its expiry is the object's LastModified (the S3
// server's clock) plus leaseTTL; the holder renews it every leaseRenew.
// See README.md for what a server without conditional writes means.
const (
	leaseTTL   = 2 * time.Minute
	leaseRenew = 30 * time.Second
)

var _ storage.GCLocker = (*Store)(nil)

// lease is the content of the lease object.
type lease struct {
	Owner string `json:"owner"`
	// Token is random per acquisition: the holder recognizes its own
	// lease by it (two runs may share an owner string).
	Token    string    `json:"token"`
	Acquired time.Time `json:"acquired"`
	// Renewed changes with every renewal, and so the ETag: a taker's
	// If-Match on the version it saw expire fails if the holder renewed
	// meanwhile (the same content would keep the same ETag).
	Renewed time.Time `json:"renewed"`
}

// leaseState is the lease object as read: content, ETag and expiry.
type leaseState struct {
	lease
	etag  string
	until time.Time
}

func (s *Store) leaseKey() string { return s.prefix + "gc.lease" }

// where names the lease's scope in messages: bucket/prefix.
func (s *Store) where() string {
	return strings.TrimSuffix(s.bucket+"/"+s.prefix, "/")
}

// leaseTimes are the lease's TTL and renewal interval (tests shorten
// them).
func (s *Store) leaseTimes() (ttl, renew time.Duration) {
	if s.leaseTTL > 0 {
		return s.leaseTTL, s.leaseTTL / 4
	}
	return leaseTTL, leaseRenew
}

// readLease returns the lease object, or nil if there is none.
func (s *Store) readLease(ctx context.Context) (*leaseState, error) {
	body, info, _, err := minio.Core{Client: s.c}.GetObject(ctx, s.bucket, s.leaseKey(), minio.GetObjectOptions{})
	if err != nil {
		if errors.Is(mapErr(err), storage.ErrNotFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("read gc lease: %w", err)
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("read gc lease: %w", err)
	}
	ttl, _ := s.leaseTimes()
	st := &leaseState{etag: info.ETag, until: info.LastModified.Add(ttl)}
	if err := json.Unmarshal(data, &st.lease); err != nil {
		// Unreadable: treat it as held by someone unknown until it
		// expires, then take it over.
		st.Owner = "an unreadable lease"
	}
	return st, nil
}

// writeLease writes l conditionally: ifNoneMatch (create only) or
// ifMatch (replace exactly that version). It reports errHeld on 412.
func (s *Store) writeLease(ctx context.Context, l lease, ifMatch string) error {
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	o := minio.PutObjectOptions{ServerSideEncryption: s.sse, DisableMultipart: true, ContentType: "application/json"}
	if ifMatch == "" {
		o.SetMatchETagExcept("*")
	} else {
		o.SetMatchETag(ifMatch)
	}
	_, err = s.c.PutObject(ctx, s.bucket, s.leaseKey(), bytes.NewReader(data), int64(len(data)), o)
	r := minio.ToErrorResponse(err)
	switch {
	case err == nil:
		return nil
	case r.StatusCode == http.StatusPreconditionFailed || r.Code == "PreconditionFailed":
		return errHeld
	case r.StatusCode == http.StatusNotImplemented || r.Code == "NotImplemented":
		// A server without conditional writes: write plainly and let
		// the read-back decide (see README.md for what that allows).
		s.log.Warn().Str("bucket", s.bucket).Msg("s3: the server refuses conditional writes; the gc lease falls back to write and read back")
		o := minio.PutObjectOptions{ServerSideEncryption: s.sse, DisableMultipart: true, ContentType: "application/json"}
		_, err = s.c.PutObject(ctx, s.bucket, s.leaseKey(), bytes.NewReader(data), int64(len(data)), o)
	}
	return err
}

var errHeld = errors.New("the gc lease changed meanwhile")

func (s *Store) heldBy(st *leaseState) error {
	return &storage.GCHeldError{Where: s.where(), Owner: st.Owner, Until: st.until}
}

// LockGC takes the prefix's gc lease (see the top of this file).
func (s *Store) LockGC(ctx context.Context, owner string) (context.Context, func(), error) {
	now0 := time.Now().UTC()
	mine := lease{Owner: owner, Token: storage.NewID(), Acquired: now0, Renewed: now0}
	cur, err := s.readLease(ctx)
	if err != nil {
		return nil, nil, err
	}
	if cur != nil && time.Now().Before(cur.until) {
		return nil, nil, s.heldBy(cur)
	}
	ifMatch := ""
	if cur != nil {
		ifMatch = cur.etag // expired: take it over, unless another did first
	}
	if err := s.writeLease(ctx, mine, ifMatch); err != nil {
		if errors.Is(err, errHeld) {
			if now, rerr := s.readLease(ctx); rerr == nil && now != nil {
				return nil, nil, s.heldBy(now)
			}
			return nil, nil, &storage.GCHeldError{Where: s.where(), Owner: "another gc", Until: time.Now().Add(leaseTTL)}
		}
		return nil, nil, fmt.Errorf("write gc lease: %w", err)
	}
	// Read it back: on a server that ignores the conditions, the last
	// of two writers wins, and the other learns it here.
	now, err := s.readLease(ctx)
	if err != nil {
		return nil, nil, err
	}
	if now == nil || now.Token != mine.Token {
		if now == nil {
			return nil, nil, fmt.Errorf("gc lease %s vanished right after it was written", s.leaseKey())
		}
		return nil, nil, s.heldBy(now)
	}
	lctx, cancel := context.WithCancelCause(ctx)
	h := &held{s: s, mine: mine, etag: now.etag, until: now.until, cancel: cancel, stop: make(chan struct{}), done: make(chan struct{})}
	go h.renew()
	var once sync.Once
	release := func() { once.Do(h.release) }
	// First finish what a killed collection left half-done.
	if err := s.finishTrash(lctx); err != nil {
		release()
		return nil, nil, fmt.Errorf("settle objects a killed gc left aside: %w", err)
	}
	return lctx, release, nil
}

// settleKilledGC is the janitor's share of finishTrash: when trash/
// holds objects a killed gc left aside, it takes the gc lease (if free)
// to settle them, so an object touched in that window is back within a
// janitor round instead of at the next gc.
func (s *Store) settleKilledGC(ctx context.Context) {
	found := false
	err := s.list(ctx, s.prefix+"trash/", true, func(o minio.ObjectInfo) error {
		if _, _, ok := s.parseTrash(o.Key); ok {
			found = true
			return errStopList
		}
		return nil
	})
	if !found {
		if err != nil && !errors.Is(err, errStopList) {
			s.log.Debug().Err(err).Msg("s3: list trash")
		}
		return
	}
	_, release, err := s.LockGC(ctx, storage.GCOwner("janitor"))
	if err != nil {
		if !errors.Is(err, storage.ErrGCRunning) {
			s.log.Warn().Err(err).Msg("s3: settle objects a killed gc left aside")
		}
		return
	}
	release()
}

var errStopList = errors.New("stop listing")

// held is a lease this process holds.
type held struct {
	s      *Store
	mine   lease
	etag   string
	until  time.Time
	cancel context.CancelCauseFunc
	stop   chan struct{}
	done   chan struct{}
}

// renew rewrites the lease (If-Match our version) every renew interval.
// A 412 means another took it over: the lease is lost at once. Other
// failures are retried until the lease would expire.
func (h *held) renew() {
	defer close(h.done)
	_, every := h.s.leaseTimes()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), every)
		h.mine.Renewed = time.Now().UTC()
		err := h.s.writeLease(ctx, h.mine, h.etag)
		var now *leaseState
		if err == nil {
			now, err = h.s.readLease(ctx)
			if err == nil && (now == nil || now.Token != h.mine.Token) {
				err = errHeld
			}
		}
		cancel()
		switch {
		case err == nil:
			h.etag, h.until = now.etag, now.until
		case errors.Is(err, errHeld):
			h.lost(fmt.Errorf("gc lease on %s taken over by another gc", h.s.where()))
			return
		case !time.Now().Before(h.until.Add(-every)):
			h.lost(fmt.Errorf("gc lease on %s could not be renewed: %w", h.s.where(), err))
			return
		default:
			h.s.log.Warn().Err(err).Msg("s3: renew gc lease (will retry)")
		}
	}
}

func (h *held) lost(err error) {
	h.s.log.Error().Err(err).Msg("s3: gc stops")
	h.cancel(err)
}

// release stops renewing and deletes the lease if it is still ours.
func (h *held) release() {
	close(h.stop)
	<-h.done
	h.cancel(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cur, err := h.s.readLease(ctx); err == nil && cur != nil && cur.Token == h.mine.Token {
		if err := h.s.remove(ctx, h.s.leaseKey()); err != nil {
			h.s.log.Warn().Err(err).Msg("s3: release gc lease (it expires by itself)")
		}
	}
}
