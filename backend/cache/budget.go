package cache

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/storage"
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
// What a pull is using is never evicted under it: every manifest and blob
// the cache serves is pinned for pinFor after it was last served (the
// whole pull of an image falls in that window: manifest first, then its
// blobs), and a pinned manifest keeps everything it uses. A blob that is
// read past its pin keeps being read to the end anyway (the open file
// survives the unlink). If pinned content alone exceeds the budget, the
// budget is exceeded until the pins expire, and a warning says so.

const (
	// lowWater is the share of max_size a run evicts down to.
	lowWater = 0.9
	// pinFor is how long served content stays pinned.
	pinFor = 2 * time.Minute
	// budgetEvery re-checks the budget even without new blobs (pins
	// expire, files are removed behind wharf's back).
	budgetEvery = 10 * time.Minute
)

type budget struct {
	c       *Cache
	max     int64
	size    atomic.Int64 // estimate of the blobs' bytes; -1 until counted
	kick    chan struct{}
	stop    context.CancelFunc
	done    chan struct{}
	pinMu   sync.Mutex
	pins    map[digest.Digest]time.Time
	runs    atomic.Int64 // finished runs (tests)
	running atomic.Bool
}

// startBudget starts the budget's background work when the site has a
// max_size (or metrics, which show the size).
func (c *Cache) startBudget() {
	if c.maxSize <= 0 && c.metrics == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &budget{c: c, max: c.maxSize, kick: make(chan struct{}, 1), stop: cancel, done: make(chan struct{}), pins: map[digest.Digest]time.Time{}}
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
	t := time.NewTicker(budgetEvery)
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
	b.running.Store(true)
	defer b.running.Store(false)
	b.prunePins()
	target := int64(float64(b.max) * lowWater)
	res, err := Evict(ctx, b.c.store, EvictOptions{MaxSize: b.max, Target: target, InUse: b.pinned})
	b.runs.Add(1)
	if err != nil {
		if ctx.Err() == nil {
			b.c.log.Warn().Err(err).Msg("cache: enforcing max_size failed")
		}
		return
	}
	b.c.metrics.evicted(res.Blobs, res.Bytes)
	// Blobs stored during the run are not in KeptBytes; added() counted
	// them on top of the old estimate, so re-base on the run's result.
	b.size.Store(res.KeptBytes)
	b.c.metrics.setSize(res.KeptBytes, b.max)
	b.c.log.Info().Int("blobs", res.Blobs).Int64("bytes", res.Bytes).Int64("kept_bytes", res.KeptBytes).
		Int64("max_size", b.max).Time("cutoff", res.Cutoff).Msg("cache: max_size reached; evicted the least recently used images")
	if res.KeptBytes > b.max {
		b.c.log.Warn().Int64("kept_bytes", res.KeptBytes).Int64("max_size", b.max).
			Msg("cache: content in use exceeds max_size; it stays until its pulls end")
	}
}

// pin marks content as in use by a pull now.
func (b *budget) pin(d digest.Digest) {
	if b == nil || b.max <= 0 {
		return
	}
	b.pinMu.Lock()
	b.pins[d] = time.Now()
	b.pinMu.Unlock()
}

func (b *budget) pinned(d digest.Digest) bool {
	b.pinMu.Lock()
	t, ok := b.pins[d]
	b.pinMu.Unlock()
	return ok && time.Since(t) < pinFor
}

func (b *budget) prunePins() {
	b.pinMu.Lock()
	defer b.pinMu.Unlock()
	for d, t := range b.pins {
		if time.Since(t) >= pinFor {
			delete(b.pins, d)
		}
	}
}
