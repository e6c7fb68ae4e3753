// Package sweep is the mark-and-sweep that garbage collection of a
// registry site (backend/registry/gc) and eviction of a cache site
// (backend/cache, Evict) share. It owns the walk; the callers own the
// policy: which manifests are roots (gc: tagged or young revisions,
// eviction: manifests used within max_age or the size budget), what else
// counts as in use, and which records go.
//
// A run, used in this order:
//
//  1. ListBlobs lists every blob with its last-modified time (storage.Clock).
//     A blob stored after the listing is no candidate.
//  2. Keep marks, per repository, everything the roots reach: the manifest
//     blob, its config and layers, with Reach.Index the children of an
//     index (kept manifests themselves), with Reach.Referrers the referrers
//     of a kept manifest. Content that cannot be read stops the run unless
//     Reach.Unreadable says otherwise: sweeping with an incomplete mark
//     would delete blobs in use.
//  3. The caller removes the records its policy drops with RemoveRecord,
//     and marks again (MarkManifest) a manifest whose record turned out to
//     be in use again.
//  4. SweepBlobs removes every candidate that is not marked and older than
//     the cutoff, both when listed and at the moment of the delete.
//
// Safety while the store serves rests on the storage.Clock contract: every
// removal is DeleteBlobIfOlder or DeleteRecordIfOlder, which decide
// atomically against a touch, and the registry and the cache touch what
// they start to use before they rely on it. A dry run removes nothing and
// reports what a real run would (it looks at the times again instead).
package sweep

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
)

// Store is what a mark-and-sweep needs: blobs and records to read, and the
// clock to decide and remove by.
type Store interface {
	storage.BlobReader
	storage.RecordReader
	storage.Clock
}

// ErrUnreadable: a stored manifest is larger than backend.MaxManifestSize
// or does not parse, so what it uses is unknown.
var ErrUnreadable = errors.New("manifest unreadable")

// Run is one mark-and-sweep over a store. It is not safe for concurrent
// use.
type Run struct {
	st     Store
	dryRun bool
	// Cutoff: what was last modified before it is old enough to go. A
	// caller may move it after ListBlobs (eviction by size); the zero time
	// makes nothing old.
	Cutoff time.Time
	marked map[digest.Digest]bool
	cands  []storage.BlobInfo
}

// New starts a run over st that removes what is older than cutoff, or
// with dryRun only reports it.
func New(st Store, cutoff time.Time, dryRun bool) *Run {
	return &Run{st: st, dryRun: dryRun, Cutoff: cutoff, marked: map[digest.Digest]bool{}}
}

// Old reports whether a last-modified time t is before the cutoff.
func (r *Run) Old(t time.Time) bool { return t.Before(r.Cutoff) }

// DryRun reports whether the run only looks.
func (r *Run) DryRun() bool { return r.dryRun }

// ListBlobs lists the candidate blobs, sorted by digest, and their total
// size. Call it before marking.
func (r *Run) ListBlobs(ctx context.Context) ([]storage.BlobInfo, int64, error) {
	var total int64
	r.cands = r.cands[:0]
	if err := r.st.ListBlobs(ctx, func(b storage.BlobInfo) error {
		r.cands = append(r.cands, b)
		total += b.Size
		return nil
	}); err != nil {
		return nil, 0, err
	}
	sort.Slice(r.cands, func(i, j int) bool { return r.cands[i].Digest < r.cands[j].Digest })
	return r.cands, total, nil
}

// Repos calls fn for every repository of the store, stopping at fn's
// first error or when ctx ends.
func (r *Run) Repos(ctx context.Context, fn func(repo string) error) error {
	names, err := r.st.ListRepos(ctx)
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(name); err != nil {
			return fmt.Errorf("repository %s: %w", name, err)
		}
	}
	return nil
}

// Mark keeps blob d.
func (r *Run) Mark(d digest.Digest) { r.marked[d] = true }

// Marked reports whether blob d is kept.
func (r *Run) Marked(d digest.Digest) bool { return r.marked[d] }

// Uses is what a manifest references.
type Uses struct {
	Blobs    []digest.Digest // config and layers
	Children []digest.Digest // an index's manifests
}

// ReadManifest reads stored manifest d and returns what it uses:
// storage.ErrNotFound if its content is gone, ErrUnreadable if it is too
// large or does not parse.
func ReadManifest(ctx context.Context, st storage.BlobReader, d digest.Digest) (Uses, error) {
	data, err := storage.ReadBlob(ctx, st, d, backend.MaxManifestSize)
	if errors.Is(err, storage.ErrTooLarge) {
		return Uses{}, fmt.Errorf("manifest %s: %w: %v", d, ErrUnreadable, err)
	}
	if err != nil {
		return Uses{}, fmt.Errorf("manifest %s: %w", d, err)
	}
	var m backend.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return Uses{}, fmt.Errorf("manifest %s: %w: %v", d, ErrUnreadable, err)
	}
	var u Uses
	if m.Config != nil {
		u.Blobs = append(u.Blobs, m.Config.Digest)
	}
	for _, l := range m.Layers {
		u.Blobs = append(u.Blobs, l.Digest)
	}
	for _, ch := range m.Manifests {
		u.Children = append(u.Children, ch.Digest)
	}
	return u, nil
}

// Reach says how marking spreads from a kept manifest.
type Reach struct {
	// Index: the children of a kept index are kept manifests too (and
	// marked). Without it they are not marked: each is kept by its own use.
	Index bool
	// Referrers maps a subject to the manifests that name it; a referrer
	// of a kept manifest is kept too if Revision admits it.
	Referrers map[digest.Digest][]digest.Digest
	// Revision reports whether d is a manifest of the repository (a
	// referrer record may outlive its manifest); nil admits all.
	Revision func(d digest.Digest) bool
	// Unreadable is called for a kept manifest whose content is too
	// large or does not parse; the walk goes on without what it uses.
	// Nil stops the walk with the error instead.
	Unreadable func(d digest.Digest, err error)
	// Also receives every mark besides the run's own (a per-repository
	// set); may be nil.
	Also map[digest.Digest]bool
}

// MarkManifest marks manifest d's own blob and what it uses, and returns
// the children of an index (marked only with Reach.Index). A manifest
// whose content is gone marks only itself.
func (r *Run) MarkManifest(ctx context.Context, d digest.Digest, reach Reach) ([]digest.Digest, error) {
	mark := func(x digest.Digest) {
		r.marked[x] = true
		if reach.Also != nil {
			reach.Also[x] = true
		}
	}
	mark(d)
	u, err := ReadManifest(ctx, r.st, d)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return nil, nil // a revision whose content is gone: nothing to keep
	case errors.Is(err, ErrUnreadable) && reach.Unreadable != nil:
		reach.Unreadable(d, err)
		return nil, nil
	case errors.Is(err, ErrUnreadable):
		return nil, fmt.Errorf("%w (refusing to collect)", err)
	case err != nil:
		return nil, err
	}
	for _, b := range u.Blobs {
		mark(b)
	}
	if !reach.Index {
		return nil, nil
	}
	for _, ch := range u.Children {
		mark(ch)
	}
	return u.Children, nil
}

// Keep marks everything the manifests roots reach (see Reach) and returns
// the set of kept manifests.
func (r *Run) Keep(ctx context.Context, roots []digest.Digest, reach Reach) (map[digest.Digest]bool, error) {
	kept := map[digest.Digest]bool{}
	queue := append([]digest.Digest(nil), roots...)
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		if kept[d] {
			continue
		}
		kept[d] = true
		children, err := r.MarkManifest(ctx, d, reach)
		if err != nil {
			return nil, err
		}
		// children the registry checked were revisions; one deleted
		// through the API meanwhile still keeps what it uses while the
		// index lists it
		queue = append(queue, children...)
		for _, ref := range reach.Referrers[d] {
			if reach.Revision == nil || reach.Revision(ref) {
				queue = append(queue, ref)
			}
		}
	}
	return kept, nil
}

// Record is a record named by a digest, with its last-modified time.
type Record struct {
	Key     string
	Digest  digest.Digest
	ModTime time.Time
}

// Records lists the records dir/<alg>/<hex> of repo (layout.BlobsDir or
// layout.ManifestsDir) with their last-modified times; records removed
// meanwhile are left out.
func Records(ctx context.Context, st Store, repo, dir string) ([]Record, error) {
	ds, err := layout.Digests(ctx, st, repo, dir)
	if err != nil {
		return nil, err
	}
	out := make([]Record, 0, len(ds))
	for _, d := range ds {
		key := layout.DigestKey(dir, d)
		t, err := st.StatRecord(ctx, repo, key)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, Record{Key: key, Digest: d, ModTime: t})
	}
	return out, nil
}

// RemoveRecord removes record key of repo unless it was modified at or
// after cutoff, and reports whether it did (a dry run only looks);
// storage.ErrNotFound if it is gone.
func (r *Run) RemoveRecord(ctx context.Context, repo, key string, cutoff time.Time) (bool, error) {
	if r.dryRun {
		t, err := r.st.StatRecord(ctx, repo, key)
		if err != nil {
			return false, err
		}
		return t.Before(cutoff), nil
	}
	return r.st.DeleteRecordIfOlder(ctx, repo, key, cutoff)
}

// SweepBlobs goes through the candidates of ListBlobs: one that is marked,
// kept by keep (may be nil) or not old is kept; the others are removed
// with DeleteBlobIfOlder (a dry run looks at the time again), and one
// touched since the listing is kept. removed and kept (either may be nil)
// are called for each; a blob that someone else removed meanwhile is
// neither.
func (r *Run) SweepBlobs(ctx context.Context, keep func(digest.Digest) bool, removed, kept func(storage.BlobInfo)) error {
	call := func(fn func(storage.BlobInfo), b storage.BlobInfo) {
		if fn != nil {
			fn(b)
		}
	}
	for _, b := range r.cands {
		if err := ctx.Err(); err != nil {
			return err
		}
		if r.marked[b.Digest] || !r.Old(b.ModTime) || keep != nil && keep(b.Digest) {
			call(kept, b)
			continue
		}
		var gone bool
		var err error
		if r.dryRun {
			var now storage.BlobInfo
			now, err = r.st.StatBlobInfo(ctx, b.Digest)
			gone = err == nil && r.Old(now.ModTime)
		} else {
			// false: in use again since the listing
			gone, err = r.st.DeleteBlobIfOlder(ctx, b.Digest, r.Cutoff)
		}
		switch {
		case errors.Is(err, storage.ErrNotFound):
			// removed by someone else
		case err != nil:
			return fmt.Errorf("blob %s: %w", b.Digest, err)
		case gone:
			call(removed, b)
		default:
			call(kept, b)
		}
	}
	return nil
}
