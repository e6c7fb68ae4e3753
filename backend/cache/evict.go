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
	"github.com/wharf-dev/wharf/backend/storage/layout"
	"github.com/wharf-dev/wharf/backend/storage/sweep"
)

// Eviction (`wharf gc` on a cache site with max_age).
//
// The mark-and-sweep is package sweep's, shared with the registry's gc;
// this file is the cache's policy: what counts as in use (last use within
// max_age, the size budget, the serving process's pins).
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
	oldTags  []oldTag
	drop     []sweep.Record // manifest records to remove
	oldLinks []sweep.Record
	marked   map[digest.Digest]bool // blobs kept manifests of this repository use
}

// oldTag is a tag record not used since the cutoff when listed.
type oldTag struct {
	tag   string
	mtime time.Time
}

type evictor struct {
	st  sweep.Store
	o   EvictOptions
	run *sweep.Run
	res EvictResult
}

// Evict removes what the cache store st has not used for o.MaxAge. It is
// safe to run while a Cache serves from the same store (see above).
func Evict(ctx context.Context, st sweep.Store, o EvictOptions) (*EvictResult, error) {
	if o.MaxAge < 0 || o.MaxSize < 0 || o.MaxAge == 0 && o.MaxSize == 0 {
		return nil, fmt.Errorf("evict: want a positive max_age or max_size, not %v and %d", o.MaxAge, o.MaxSize)
	}
	if o.InUse == nil {
		o.InUse = func(digest.Digest) bool { return false }
	}
	var cutoff time.Time
	if o.MaxAge > 0 {
		cutoff = time.Now().Add(-o.MaxAge)
	}
	e := &evictor{st: st, o: o, run: sweep.New(st, cutoff, o.DryRun)}

	// Blobs first: one stored after the listing is no candidate.
	cands, total, err := e.run.ListBlobs(ctx)
	if err != nil {
		return nil, fmt.Errorf("evict: %w", err)
	}
	e.res.Total = total
	if o.MaxSize > 0 && total > o.MaxSize {
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
		if c := sizeCutoff(cands, o); c.After(e.run.Cutoff) {
			e.run.Cutoff = c
		}
	}
	e.res.Cutoff = e.run.Cutoff

	var repos []*evictRepo
	if err := e.run.Repos(ctx, func(name string) error {
		r, err := e.scan(ctx, name)
		if err == nil {
			repos = append(repos, r)
		}
		return err
	}); err != nil {
		return nil, fmt.Errorf("evict: %w", err)
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
	if err := e.run.SweepBlobs(ctx, e.o.InUse, func(b storage.BlobInfo) {
		e.res.Blobs++
		e.res.Bytes += b.Size
		e.report(EvictItem{Kind: EvictBlob, Digest: b.Digest, Size: b.Size, LastUse: b.ModTime})
	}, func(b storage.BlobInfo) {
		e.res.KeptBlobs++
		e.res.KeptBytes += b.Size
	}); err != nil {
		return nil, fmt.Errorf("evict: %w", err)
	}
	return &e.res, nil
}

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

// reach is how marking spreads in a cache: a kept manifest keeps its own
// content, config and layers; an index's children are manifests of their
// own, kept by their own use. Content that does not parse is counted and
// its blobs are judged by their own last use.
func (e *evictor) reach(r *evictRepo) sweep.Reach {
	return sweep.Reach{
		Unreadable: func(digest.Digest, error) { e.res.Unreadable++ },
		Also:       r.marked,
	}
}

// scan lists one repository's records with their last use, and marks the
// blobs its kept manifests use.
func (e *evictor) scan(ctx context.Context, name string) (*evictRepo, error) {
	r := &evictRepo{name: name, marked: map[digest.Digest]bool{}}
	tags, err := layout.Tags(ctx, e.st, name)
	if err != nil {
		return nil, err
	}
	named := map[digest.Digest]bool{} // by tags in use
	for _, tag := range tags {
		key := layout.Tag(tag)
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
		if e.run.Old(t) && !(valid && e.o.InUse(rec.Digest)) {
			r.oldTags = append(r.oldTags, oldTag{tag: tag, mtime: t})
			continue
		}
		if valid {
			named[rec.Digest] = true
		}
	}
	manifests, err := sweep.Records(ctx, e.st, name, layout.ManifestsDir)
	if err != nil {
		return nil, err
	}
	var roots []digest.Digest
	for _, m := range manifests {
		if !e.run.Old(m.ModTime) || named[m.Digest] || e.o.InUse(m.Digest) {
			roots = append(roots, m.Digest)
			continue
		}
		r.drop = append(r.drop, m)
	}
	if _, err := e.run.Keep(ctx, roots, e.reach(r)); err != nil {
		return nil, err
	}
	links, err := sweep.Records(ctx, e.st, name, layout.BlobsDir)
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if e.run.Old(l.ModTime) {
			r.oldLinks = append(r.oldLinks, l)
		}
	}
	return r, nil
}

// sweepRecords removes r's old tags, then its old manifests (a manifest
// used since the listing is kept, with what it uses), then its old links
// to blobs its kept manifests do not use.
func (e *evictor) sweepRecords(ctx context.Context, r *evictRepo) error {
	for _, t := range r.oldTags {
		removed, err := e.run.RemoveRecord(ctx, r.name, layout.Tag(t.tag), e.run.Cutoff)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if removed {
			e.res.Tags++
			e.report(EvictItem{Kind: EvictTag, Repo: r.name, Tag: t.tag, LastUse: t.mtime})
		}
	}
	for _, s := range r.drop {
		removed, err := e.run.RemoveRecord(ctx, r.name, s.Key, e.run.Cutoff)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if !removed { // pulled since the listing: keep what it uses
			if _, err := e.run.MarkManifest(ctx, s.Digest, e.reach(r)); err != nil {
				return err
			}
			continue
		}
		e.res.Manifests++
		e.report(EvictItem{Kind: EvictManifest, Repo: r.name, Digest: s.Digest, LastUse: s.ModTime})
	}
	for _, s := range r.oldLinks {
		if r.marked[s.Digest] {
			continue
		}
		removed, err := e.run.RemoveRecord(ctx, r.name, s.Key, e.run.Cutoff)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if removed {
			e.res.Links++
			e.report(EvictItem{Kind: EvictLink, Repo: r.name, Digest: s.Digest, LastUse: s.ModTime})
		}
	}
	return nil
}
