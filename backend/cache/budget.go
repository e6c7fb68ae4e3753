package cache

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/sweep"
)

// The disk budget (max_size), enforced by the serving process.
//
// The cache keeps an estimate of the bytes its blobs take (counted once at
// start, then every stored blob added). When a stored blob takes it past
// max_size, a background run of Evict with MaxSize removes the least
// recently used images, whole, down to lowWater of max_size, and the
// estimate becomes the exact count of that run. Runs never overlap; blobs
// stored during a run start another one after it if still needed.
//
// What a pull is using is never evicted under it. When the cache serves
// an image manifest, it pins the manifest with the blobs it names (config
// and layers) until each of them has been served since, or pinFor has
// passed (a client skips the layers it already has; their pins then last
// the whole window). A pinned manifest keeps everything it uses, and a
// blob that is being sent is pinned until its answer ends; a reader that
// has the file open reads it to the end anyway (the open file survives
// the unlink). If pinned content alone exceeds the budget, the budget is
// exceeded until the pulls end, and a warning says so.

const (
	// lowWater is the share of max_size a run evicts down to.
	lowWater = 0.9
	// pinFor is how long a served manifest stays pinned at most.
	pinFor = 10 * time.Minute
	// budgetEvery re-counts the stored blobs and re-checks the budget
	// even without new blobs (pins expire, `wharf gc` or an operator
	// removes files behind the serving process's back); sizeEvery is the
	// recount of a site without max_size, for the size gauge only.
	budgetEvery = 10 * time.Minute
	sizeEvery   = time.Hour
)

type budget struct {
	c       *Cache
	max     int64
	size    atomic.Int64 // estimate of the blobs' bytes; -1 until counted
	during  atomic.Int64 // bytes stored since the current run's listing began
	kick    chan struct{}
	stop    context.CancelFunc
	done    chan struct{}
	pinMu   sync.Mutex
	pins    map[digest.Digest]*pull // by manifest digest
	reading map[digest.Digest]int   // blobs being sent: answers in progress
	runMu   sync.Mutex              // one run at a time
	runs    atomic.Int64            // finished runs (tests)
}

// startBudget starts the budget's background work when the site has a
// max_size (or metrics, which show the size).
func (c *Cache) startBudget() {
	if c.maxSize <= 0 && c.metrics == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &budget{c: c, max: c.maxSize, kick: make(chan struct{}, 1), stop: cancel, done: make(chan struct{}), pins: map[digest.Digest]*pull{}, reading: map[digest.Digest]int{}}
	b.size.Store(-1)
	c.budget = b
	go b.loop(ctx)
}

// stopBudget ends the background work and waits for it (Close).
func (c *Cache) stopBudget() {
	if c.budget != nil {
		c.budget.stop()
		<-c.budget.done
	}
}

func (b *budget) loop(ctx context.Context) {
	defer close(b.done)
	b.count(ctx)
	b.check(ctx)
	every := sizeEvery
	if b.max > 0 {
		every = budgetEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.kick:
		case <-t.C:
			b.count(ctx)
		}
		b.check(ctx)
	}
}

// count sets the estimate to the exact size of the stored blobs.
func (b *budget) count(ctx context.Context) {
	var total int64
	if err := b.c.store.ListBlobs(ctx, func(bi storage.BlobInfo) error {
		total += bi.Size
		return nil
	}); err != nil {
		if ctx.Err() == nil {
			b.c.log.Warn().Err(err).Msg("cache: counting the stored blobs failed")
		}
		return
	}
	b.size.Store(total)
	b.c.metrics.setSize(total, b.max)
}

// added notes a newly stored blob of n bytes and starts a run when the
// budget is exceeded.
func (b *budget) added(n int64) {
	if b == nil {
		return
	}
	if b.size.Load() < 0 {
		return // not counted yet; the first count includes it
	}
	b.during.Add(n)
	s := b.size.Add(n)
	b.c.metrics.setSize(s, b.max)
	if b.max > 0 && s > b.max {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
}

// check runs Evict when the estimate is past the budget.
func (b *budget) check(ctx context.Context) {
	if b.max <= 0 || b.size.Load() <= b.max {
		return
	}
	b.runMu.Lock()
	defer b.runMu.Unlock()
	if b.size.Load() <= b.max {
		return // a run that just ended made room
	}
	b.prunePins()
	target := int64(float64(b.max) * lowWater)
	var res *EvictResult
	// A run keeps what kept manifests use even when it is older than the
	// cutoff; the next run's cutoff moves past it if the budget still
	// does not hold. A few runs settle it.
	for pass := 0; pass < 3; pass++ {
		b.during.Store(0)
		r, err := Evict(ctx, b.c.store, EvictOptions{MaxSize: b.max, Target: target, InUse: b.pinned})
		b.runs.Add(1)
		if err != nil {
			if ctx.Err() == nil {
				b.c.log.Warn().Err(err).Msg("cache: enforcing max_size failed")
			}
			return
		}
		b.c.metrics.evicted(r.Blobs, r.Bytes)
		if res == nil {
			res = r
		} else {
			res.Blobs, res.Bytes, res.KeptBytes, res.Cutoff = res.Blobs+r.Blobs, res.Bytes+r.Bytes, r.KeptBytes, r.Cutoff
		}
		// Blobs stored during the run may be missing from KeptBytes;
		// count them on top (at worst twice: one more run).
		b.size.Store(r.KeptBytes + b.during.Load())
		if b.size.Load() <= b.max || r.Blobs == 0 {
			break
		}
	}
	b.c.metrics.setSize(b.size.Load(), b.max)
	b.c.log.Info().Int("blobs", res.Blobs).Int64("bytes", res.Bytes).Int64("kept_bytes", res.KeptBytes).
		Int64("max_size", b.max).Time("cutoff", res.Cutoff).Msg("cache: max_size reached; evicted the least recently used images")
	if res.KeptBytes > b.max {
		b.c.log.Warn().Int64("kept_bytes", res.KeptBytes).Int64("max_size", b.max).
			Msg("cache: content in use exceeds max_size; it stays until its pulls end")
	}
}

// pull is a pinned manifest: the pull it began is taken to be going on
// until every blob it names was served or until ends.
type pull struct {
	until   time.Time
	waiting map[digest.Digest]bool
}

// pinManifest pins manifest d (served just now) and the blobs it names.
func (b *budget) pinManifest(ctx context.Context, d digest.Digest) {
	if b == nil || b.max <= 0 || d.Validate() != nil {
		return
	}
	p := &pull{until: time.Now().Add(pinFor), waiting: map[digest.Digest]bool{}}
	for _, x := range manifestBlobs(ctx, b.c.store, d) {
		p.waiting[x] = true
	}
	b.pinMu.Lock()
	b.pins[d] = p
	b.pinMu.Unlock()
}

// reading pins blob d while an answer sends it; the returned func ends
// that, and counts the blob as served for the pulls waiting for it.
func (b *budget) read(d digest.Digest) func() {
	if b == nil || b.max <= 0 {
		return func() {}
	}
	b.pinMu.Lock()
	b.reading[d]++
	b.pinMu.Unlock()
	return func() {
		b.pinMu.Lock()
		defer b.pinMu.Unlock()
		if b.reading[d]--; b.reading[d] <= 0 {
			delete(b.reading, d)
		}
		for m, p := range b.pins {
			if p.waiting[d] {
				delete(p.waiting, d)
				if len(p.waiting) == 0 {
					delete(b.pins, m)
				}
			}
		}
	}
}

// pinned reports content a pull is using: a pinned manifest, a blob a
// pinned manifest still waits for, a blob being sent.
func (b *budget) pinned(d digest.Digest) bool {
	b.pinMu.Lock()
	defer b.pinMu.Unlock()
	if b.reading[d] > 0 {
		return true
	}
	now := time.Now()
	if p, ok := b.pins[d]; ok && now.Before(p.until) {
		return true
	}
	for _, p := range b.pins {
		if p.waiting[d] && now.Before(p.until) {
			return true
		}
	}
	return false
}

func (b *budget) prunePins() {
	b.pinMu.Lock()
	defer b.pinMu.Unlock()
	now := time.Now()
	for d, p := range b.pins {
		if !now.Before(p.until) {
			delete(b.pins, d)
		}
	}
}

// manifestBlobs lists the config and layers of stored manifest d (none
// for an index or what does not parse).
func manifestBlobs(ctx context.Context, st storage.BlobReader, d digest.Digest) []digest.Digest {
	u, err := sweep.ReadManifest(ctx, st, d)
	if err != nil {
		return nil
	}
	return u.Blobs
}
