package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
)

// Eviction (`wharf gc` on a cache site with max_age).
//
// Everything the cache keeps carries its last use as its modification
// time (touch.go). A run removes, in this order:
//
//  1. tag records not used for MaxAge;
//  2. manifest records not used for MaxAge that no younger tag names;
//  3. a repository's links to blobs not used for MaxAge by that
//     repository, unless a kept manifest of that repository uses the blob;
//  4. blobs (global content) not used for MaxAge that no kept manifest of
//     any repository uses (as its own content, config or layer).
//
// So an image in use stays whole (its manifest keeps its layers even when
// the clients had them already and only pulled the manifest), and an image
// nobody pulled for MaxAge goes whole.
//
// Safety while the cache serves: every removal is DeleteRecordIfOlder or
// DeleteBlobIfOlder, which decide atomically against a touch (a use just
// before keeps the file; a use just after finds no file, which the cache
// ignores). A request that has opened a file keeps reading it after the
// unlink; one that finds a record without its content (or no record)
// fetches again from the upstream. A manifest used between the listing
// and its removal is kept, and so is what it uses. Downloads in progress
// live in upload sessions, which eviction never touches; a committed
// download's blob is young.

// EvictOptions configures one eviction run.
type EvictOptions struct {
	// MaxAge: what was not used for this long is removed; 0 = no age
	// limit (then MaxSize must be set).
	MaxAge time.Duration
	// MaxSize is the budget for content in bytes (max_size); 0 = none.
	// When the blobs exceed it, the cutoff moves forward past the least
	// recently used ones until the most recently used fit into Target
	// (default MaxSize), and everything used before the cutoff goes as
	// with MaxAge: least recently pulled images first, whole.
	MaxSize int64
	// Target is what a MaxSize run evicts down to (a low-water mark below
	// MaxSize, so that the next pull does not start a run at once); 0 =
	// MaxSize.
	Target int64
	// InUse reports content the serving process is using right now (an
	// image being pulled): such a blob is kept, and such a manifest is
	// kept with what it uses. Nil: none.
	InUse func(digest.Digest) bool
	// DryRun removes nothing and reports what a real run would remove.
	DryRun bool
	// Report is called for every tag, manifest, link and blob removed (or
	// that would be, in a dry run); may be nil.
	Report func(EvictItem)

	// beforeSweep runs between the listing and the removals (tests: a
	// pull racing the eviction).
	beforeSweep func()
}

// EvictKind says what an EvictItem is.
type EvictKind string

// Kinds of evicted items.
const (
	EvictTag      EvictKind = "tag"      // a repository's tag record (the upstream's tag->digest answer)
	EvictManifest EvictKind = "manifest" // a repository's manifest record
	EvictLink     EvictKind = "link"     // a repository's link to a blob
	EvictBlob     EvictKind = "blob"     // content in the global blob store
)

// EvictItem is one evicted thing.
type EvictItem struct {
	Kind   EvictKind
	Repo   string        // tags, manifests, links
	Tag    string        // tags
	Digest digest.Digest // manifests, links, blobs
	Size   int64         // blobs
	// LastUse is the item's last use (its modification time).
	LastUse time.Time
}

// EvictResult counts what a run removed (or would remove, in a dry run)
// and what stays.
type EvictResult struct {
	Tags, Manifests, Links, Blobs int
	Bytes                         int64 // size of the removed blobs
	KeptBlobs                     int
	KeptBytes                     int64
	// Unreadable counts kept manifests whose content did not parse; the
	// blobs they name were judged by their own last use.
	Unreadable int
	// Cutoff is the last-use time before which things were evicted (for
	// MaxSize runs, the moved cutoff; zero when nothing had to go).
	Cutoff time.Time
	// Total is the size of all blobs listed at the start.
	Total int64
}

type evictRepo struct {
	name     string
	oldTags  []stamped
	drop     []stamped // manifest records to remove
	oldLinks []stamped
	marked   map[digest.Digest]bool // blobs kept manifests of this repository use
}

// stamped is a record name with its modification time when listed.
type stamped struct {
	key    string
	tag    string
	digest digest.Digest
	mtime  time.Time
}

type evictor struct {
	st     storage.Store
	o      EvictOptions
	cutoff time.Time
	marked map[digest.Digest]bool
	res    EvictResult
}

// Evict removes what the cache store st has not used for o.MaxAge. It is
// safe to run while a Cache serves from the same store (see above).
func Evict(ctx context.Context, st storage.Store, o EvictOptions) (*EvictResult, error) {
	if o.MaxAge < 0 || o.MaxSize < 0 || o.MaxAge == 0 && o.MaxSize == 0 {
		return nil, fmt.Errorf("evict: want a positive max_age or max_size, not %v and %d", o.MaxAge, o.MaxSize)
	}
	if o.InUse == nil {
		o.InUse = func(digest.Digest) bool { return false }
	}
	e := &evictor{st: st, o: o, marked: map[digest.Digest]bool{}}
	if o.MaxAge > 0 {
		e.cutoff = time.Now().Add(-o.MaxAge)
	}

	// Blobs first: one stored after the listing is no candidate.
	var cands []storage.BlobInfo
	if err := st.ListBlobs(ctx, func(b storage.BlobInfo) error {
		cands = append(cands, b)
		e.res.Total += b.Size
		return nil
	}); err != nil {
		return nil, fmt.Errorf("evict: %w", err)
	}
	if o.MaxSize > 0 && e.res.Total > o.MaxSize {
		// what in-use manifests name counts as in use for the cutoff
		used := map[digest.Digest]bool{}
		for _, b := range cands {
			if b.Size <= backend.MaxManifestSize && o.InUse(b.Digest) {
				for _, x := range manifestBlobs(ctx, st, b.Digest) {
					used[x] = true
				}
			}
		}
		inUse := o.InUse
		o.InUse = func(d digest.Digest) bool { return used[d] || inUse(d) }
		if c := sizeCutoff(cands, o); c.After(e.cutoff) {
			e.cutoff = c
		}
	}
	e.res.Cutoff = e.cutoff
	sort.Slice(cands, func(i, j int) bool { return cands[i].Digest < cands[j].Digest })

	names, err := st.ListRepos(ctx)
	if err != nil {
		return nil, fmt.Errorf("evict: %w", err)
	}
	repos := make([]*evictRepo, 0, len(names))
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("evict: %w", err)
		}
		r, err := e.scan(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("evict: repository %s: %w", name, err)
		}
		repos = append(repos, r)
	}
	if o.beforeSweep != nil {
		o.beforeSweep()
	}
	for _, r := range repos {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("evict: %w", err)
		}
		if err := e.sweepRecords(ctx, r); err != nil {
			return nil, fmt.Errorf("evict: repository %s: %w", r.name, err)
		}
	}
	for _, b := range cands {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("evict: %w", err)
		}
		if err := e.sweepBlob(ctx, b); err != nil {
			return nil, fmt.Errorf("evict: blob %s: %w", b.Digest, err)
		}
	}
	return &e.res, nil
}

func (e *evictor) old(t time.Time) bool { return t.Before(e.cutoff) }

// sizeCutoff is the last-use time that keeps the most recently used blobs
// within the target: blobs newest first (in-use ones always count as
// kept), the cutoff is just past the first one that no longer fits.
func sizeCutoff(cands []storage.BlobInfo, o EvictOptions) time.Time {
	target := o.Target
	if target <= 0 || target > o.MaxSize {
		target = o.MaxSize
	}
	bs := make([]storage.BlobInfo, len(cands))
	copy(bs, cands)
	sort.Slice(bs, func(i, j int) bool { return bs[i].ModTime.After(bs[j].ModTime) })
	var kept int64
	for _, b := range bs {
		if o.InUse(b.Digest) {
			kept += b.Size
		}
	}
	for _, b := range bs {
		if o.InUse(b.Digest) {
			continue
		}
		if kept+b.Size > target {
			return b.ModTime.Add(time.Nanosecond)
		}
		kept += b.Size
	}
	return time.Time{}
}

func (e *evictor) report(it EvictItem) {
	if e.o.Report != nil {
		e.o.Report(it)
	}
}

// scan lists one repository's records with their last use, and marks the
// blobs its kept manifests use.
func (e *evictor) scan(ctx context.Context, name string) (*evictRepo, error) {
	r := &evictRepo{name: name, marked: map[digest.Digest]bool{}}
	tags, err := e.st.ListRecords(ctx, name, "tags")
	if err != nil {
		return nil, err
	}
	named := map[digest.Digest]bool{} // by tags in use
	for _, tag := range tags {
		key := tagKey(tag)
		t, err := e.st.StatRecord(ctx, name, key)
		if errors.Is(err, storage.ErrNotFound) {
			continue // dropped meanwhile
		}
		if err != nil {
			return nil, err
		}
		raw, err := e.st.GetRecord(ctx, name, key)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var rec tagRecord
		valid := json.Unmarshal(raw, &rec) == nil && rec.Digest.Validate() == nil
		if e.old(t) && !(valid && e.o.InUse(rec.Digest)) {
			r.oldTags = append(r.oldTags, stamped{key: key, tag: tag, mtime: t})
			continue
		}
		if valid {
			named[rec.Digest] = true
		}
	}
	manifests, err := e.listDigests(ctx, name, "manifests")
	if err != nil {
		return nil, err
	}
	for _, m := range manifests {
		if !e.old(m.mtime) || named[m.digest] || e.o.InUse(m.digest) {
			if err := e.markManifest(ctx, r, m.digest); err != nil {
				return nil, err
			}
			continue
		}
		r.drop = append(r.drop, m)
	}
	links, err := e.listDigests(ctx, name, "blobs")
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if e.old(l.mtime) {
			r.oldLinks = append(r.oldLinks, l)
		}
	}
	return r, nil
}

// listDigests lists records dir/<alg>/<hex> with their times; other names
// are not the cache's and are left alone.
func (e *evictor) listDigests(ctx context.Context, repo, dir string) ([]stamped, error) {
	algs, err := e.st.ListRecords(ctx, repo, dir)
	if err != nil {
		return nil, err
	}
	var out []stamped
	for _, a := range algs {
		hexes, err := e.st.ListRecords(ctx, repo, dir+"/"+a)
		if err != nil {
			return nil, err
		}
		for _, h := range hexes {
			d := digest.NewDigestFromEncoded(digest.Algorithm(a), h)
			if d.Validate() != nil {
				continue
			}
			key := dir + "/" + a + "/" + h
			t, err := e.st.StatRecord(ctx, repo, key)
			if errors.Is(err, storage.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			out = append(out, stamped{key: key, digest: d, mtime: t})
		}
	}
	return out, nil
}

// markManifest keeps manifest d of repository r: its own content, its
// config and its layers. An index's children are manifests of their own,
// kept by their own use.
func (e *evictor) markManifest(ctx context.Context, r *evictRepo, d digest.Digest) error {
	mark := func(x digest.Digest) {
		e.marked[x] = true
		r.marked[x] = true
	}
	mark(d)
	data, err := storage.ReadBlob(ctx, e.st, d, backend.MaxManifestSize)
	if errors.Is(err, storage.ErrNotFound) {
		return nil // content gone: nothing it uses to keep
	}
	if errors.Is(err, storage.ErrTooLarge) {
		e.res.Unreadable++
		return nil
	}
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	var m backend.Manifest
	if json.Unmarshal(data, &m) != nil {
		e.res.Unreadable++
		return nil
	}
	if m.Config != nil {
		mark(m.Config.Digest)
	}
	for _, l := range m.Layers {
		mark(l.Digest)
	}
	return nil
}

// removeRecord removes a record of repo unless it was used since the
// cutoff, and reports whether it did (a dry run only looks); ErrNotFound
// when it is gone.
func (e *evictor) removeRecord(ctx context.Context, repo string, s stamped) (bool, error) {
	if e.o.DryRun {
		t, err := e.st.StatRecord(ctx, repo, s.key)
		if err != nil {
			return false, err
		}
		return e.old(t), nil
	}
	return e.st.DeleteRecordIfOlder(ctx, repo, s.key, e.cutoff)
}

// sweepRecords removes r's old tags, then its old manifests (a manifest
// used since the listing is kept, with what it uses), then its old links
// to blobs its kept manifests do not use.
func (e *evictor) sweepRecords(ctx context.Context, r *evictRepo) error {
	for _, s := range r.oldTags {
		removed, err := e.removeRecord(ctx, r.name, s)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if removed {
			e.res.Tags++
			e.report(EvictItem{Kind: EvictTag, Repo: r.name, Tag: s.tag, LastUse: s.mtime})
		}
	}
	for _, s := range r.drop {
		removed, err := e.removeRecord(ctx, r.name, s)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if !removed { // pulled since the listing: keep what it uses
			if err := e.markManifest(ctx, r, s.digest); err != nil {
				return err
			}
			continue
		}
		e.res.Manifests++
		e.report(EvictItem{Kind: EvictManifest, Repo: r.name, Digest: s.digest, LastUse: s.mtime})
	}
	for _, s := range r.oldLinks {
		if r.marked[s.digest] {
			continue
		}
		removed, err := e.removeRecord(ctx, r.name, s)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if removed {
			e.res.Links++
			e.report(EvictItem{Kind: EvictLink, Repo: r.name, Digest: s.digest, LastUse: s.mtime})
		}
	}
	return nil
}

// sweepBlob removes content b unless a kept manifest uses it or it was
// used since the cutoff, also when looked at again now.
func (e *evictor) sweepBlob(ctx context.Context, b storage.BlobInfo) error {
	keep := func() error {
		e.res.KeptBlobs++
		e.res.KeptBytes += b.Size
		return nil
	}
	if e.marked[b.Digest] || !e.old(b.ModTime) || e.o.InUse(b.Digest) {
		return keep()
	}
	var removed bool
	var err error
	if e.o.DryRun {
		var now storage.BlobInfo
		now, err = e.st.StatBlobInfo(ctx, b.Digest)
		removed = err == nil && e.old(now.ModTime)
	} else {
		removed, err = e.st.DeleteBlobIfOlder(ctx, b.Digest, e.cutoff)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return nil // removed by someone else
	}
	if err != nil {
		return err
	}
	if !removed {
		return keep()
	}
	e.res.Blobs++
	e.res.Bytes += b.Size
	e.report(EvictItem{Kind: EvictBlob, Digest: b.Digest, Size: b.Size, LastUse: b.ModTime})
	return nil
}
