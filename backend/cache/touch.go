package cache

import (
	"context"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// Last use. `wharf gc` evicts what a cache site has not used for its
// max_age (evict.go). The time of last use is the modification time of
// the files that served a request: the blob's content, the repository's
// link to it, the manifest record, the tag record. Writing them (a fetch
// from the upstream, a revalidated tag) sets it; serving them from the
// cache touches them, but only when their time is older than touchEvery,
// so a hot layer costs one stat per pull and not a metadata write.

// maxTouchEvery is the coarsest resolution of the last-use time.
const maxTouchEvery = time.Hour

// sizeTouchEvery is the resolution of the last-use time on a site with
// max_size: its eviction orders images by last use, which may churn
// within minutes on a small budget.
const sizeTouchEvery = time.Minute

// touchInterval is how stale a last-use time may get before a use writes
// it again: max_age/24, at most an hour (a minute with max_size). Without
// max_age the times are kept anyway (hourly), so that turning eviction on
// later does not evict what is in use.
func touchInterval(maxAge time.Duration, maxSize bool) time.Duration {
	every := maxTouchEvery
	if maxAge > 0 && maxAge/24 < every {
		every = maxAge / 24
	}
	if maxSize && sizeTouchEvery < every {
		every = sizeTouchEvery
	}
	return every
}

// usedBlob records that content d was served now. It never fails a
// request: a blob evicted meanwhile was already opened (the open file
// survives) and the next request fetches it again.
func (c *Cache) usedBlob(ctx context.Context, d digest.Digest) {
	ctx = context.WithoutCancel(ctx)
	bi, err := c.store.StatBlobInfo(ctx, d)
	if err == nil && time.Since(bi.ModTime) < c.touchEvery {
		return
	}
	if err == nil {
		err = c.store.TouchBlob(ctx, d)
	}
	if err != nil {
		c.log.Debug().Err(err).Str("digest", string(d)).Msg("cache: recording the use of a blob failed")
	}
}

// usedRecord records that repo's record key (a tag, a manifest, a blob
// link) was used now; like usedBlob it never fails a request.
func (c *Cache) usedRecord(ctx context.Context, repo, key string) {
	ctx = context.WithoutCancel(ctx)
	t, err := c.store.StatRecord(ctx, repo, key)
	if err == nil && time.Since(t) < c.touchEvery {
		return
	}
	if err == nil {
		err = c.store.TouchRecord(ctx, repo, key)
	}
	if err != nil {
		c.log.Debug().Err(err).Str("repo", repo).Str("record", key).Msg("cache: recording the use of a record failed")
	}
}
