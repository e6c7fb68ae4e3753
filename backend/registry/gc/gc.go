// Package gc is the garbage collector of wharf's embedded registry
// (`wharf gc`): it removes blobs that no manifest uses any more, and with
// DeleteUntagged also manifests that no tag reaches. It runs on a store
// that a registry is serving at the same time.
//
// # Algorithm (mark and sweep over one registry root)
//
// The walk is package sweep's, shared with cache eviction; this package
// is the registry's policy: which revisions are roots and when a link
// goes.
//
//  1. Candidates: every blob in the store, with its modification time.
//  2. Mark, per repository: the roots are all manifest revisions (with
//     DeleteUntagged: the tagged ones, plus untagged ones younger than the
//     grace period). From each kept manifest: the manifest blob, its config
//     and layers, the children of an index (which are kept manifests too),
//     and the referrers whose subject is kept (kept too).
//  3. Sweep: with DeleteUntagged, the manifest revisions not kept (and
//     their referrer records) go first. Then a candidate blob is deleted
//     only if it is unmarked and older than the grace period, both when it
//     was listed and at the moment of the delete. Last, per-repository
//     blob links whose content is gone are removed, so no repository shows
//     a blob it cannot serve. A dry run does the same and removes nothing.
//
// # Safety while serving
//
// Blobs pushed after the listing are no candidates. A blob that becomes
// used during the run — a manifest PUT that uses an old blob the client
// found with HEAD and did not upload again (docker does that), a
// cross-repository mount, an upload of content that already exists, a
// manifest pushed again — gets its modification time refreshed by the
// registry (storage.Clock.TouchBlob; TouchRecord for the children of an
// index) before the registry checks that it exists and before the
// manifest or link is stored. gc removes a blob only through
// DeleteBlobIfOlder, which decides atomically against such a touch: the
// touch comes first and the blob stays, or the blob is already gone, the
// touch fails and the registry answers MANIFEST_BLOB_UNKNOWN (the client
// uploads it again). So a manifest is never stored with a blob that gc
// removes, and a kept manifest never loses a blob. Untagged revisions
// (DeleteUntagged) and per-repository links are removed the same way
// (DeleteRecordIfOlder), after checking again that no tag names the
// revision and that it is still old.
//
// What remains, by design: (1) a blob that is being removed but was
// touched just before is moved away for a moment (two renames on the
// local file system) and put back; a request for it in that moment gets
// 404, and a manifest PUT checking it then gets MANIFEST_BLOB_UNKNOWN and
// is retried by the client. Only blobs that were unreferenced and older
// than the grace period are ever in that state. (2) A client that finds a
// blob with HEAD and only PUTs its manifest more than the grace period
// later gets MANIFEST_BLOB_UNKNOWN if gc ran in between; hence a default
// grace of an hour. Upload sessions are never touched: their data is not
// in the blob store until committed, and a commit dates the blob at the
// commit.
package gc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/layout"
	"github.com/wharf-dev/wharf/backend/storage/sweep"
)

// DefaultGrace is how old an unreferenced blob must be before it is
// collected unless Options.Grace says otherwise.
const DefaultGrace = time.Hour

// Options configures one run.
type Options struct {
	// DeleteUntagged also removes manifests that no tag reaches (directly,
	// through an index, or as a referrer of a kept manifest).
	DeleteUntagged bool
	// DryRun removes nothing and reports what a real run would remove.
	DryRun bool
	// Grace: nothing younger than this is removed. Zero means DefaultGrace;
	// a negative value means no grace at all (tests, offline stores).
	Grace time.Duration
	// Report is called for every manifest, blob and link removed (or that
	// would be, in a dry run); may be nil.
	Report func(Item)

	// beforeSweep runs between mark and sweep (tests: a push racing gc).
	beforeSweep func()
}

// Kind says what an Item is.
type Kind string

// Kinds of removed items.
const (
	KindManifest Kind = "manifest" // a manifest revision of a repository
	KindBlob     Kind = "blob"     // content in the global blob store
	KindLink     Kind = "link"     // a repository's link to a blob
)

// Item is one removed thing.
type Item struct {
	Kind   Kind
	Repo   string // manifests and links
	Digest digest.Digest
	Size   int64 // blobs
}

// Result counts what a run removed (or would remove, in a dry run).
type Result struct {
	Manifests int
	Blobs     int
	Links     int
	Bytes     int64 // size of the removed blobs
	// Kept is how many blobs stay; Marked how many of them are in use.
	Kept, Marked int
}

// repoState is what the mark phase learned about one repository.
type repoState struct {
	name      string
	revisions []digest.Digest
	tagged    map[digest.Digest]bool
	// referrers maps a subject to the manifests that name it.
	referrers map[digest.Digest][]digest.Digest
	// subjectOf is the inverse, for removing a referrer record.
	subjectOf map[digest.Digest]digest.Digest
	kept      map[digest.Digest]bool
	drop      []digest.Digest // revisions to remove (DeleteUntagged)
}

// reach is how marking spreads in a registry: through an index to its
// children and from a kept manifest to its referrers, and a manifest that
// does not parse stops the run.
func (rs *repoState) reach() sweep.Reach {
	isRev := make(map[digest.Digest]bool, len(rs.revisions))
	for _, d := range rs.revisions {
		isRev[d] = true
	}
	return sweep.Reach{
		Index:     true,
		Referrers: rs.referrers,
		Revision:  func(d digest.Digest) bool { return isRev[d] },
	}
}

type collector struct {
	st    sweep.Store
	o     Options
	run   *sweep.Run
	start time.Time
	res   Result
}

// Run collects garbage in st once.
func Run(ctx context.Context, st sweep.Store, o Options) (*Result, error) {
	grace := o.Grace
	if grace == 0 {
		grace = DefaultGrace
	}
	if grace < 0 {
		grace = 0
	}
	now := time.Now()
	c := &collector{st: st, o: o, start: now, run: sweep.New(st, now.Add(-grace), o.DryRun)}

	if _, _, err := c.run.ListBlobs(ctx); err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	var states []*repoState
	if err := c.run.Repos(ctx, func(name string) error {
		rs, err := c.mark(ctx, name)
		if err == nil {
			states = append(states, rs)
		}
		return err
	}); err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	if o.beforeSweep != nil {
		o.beforeSweep()
	}

	for _, rs := range states {
		if err := c.sweepManifests(ctx, rs); err != nil {
			return nil, fmt.Errorf("gc: repository %s: %w", rs.name, err)
		}
	}
	gone := map[digest.Digest]bool{}
	if err := c.run.SweepBlobs(ctx, nil, func(b storage.BlobInfo) {
		gone[b.Digest] = true
		c.res.Blobs++
		c.res.Bytes += b.Size
		c.report(Item{Kind: KindBlob, Digest: b.Digest, Size: b.Size})
	}, func(b storage.BlobInfo) {
		c.res.Kept++
		if c.run.Marked(b.Digest) {
			c.res.Marked++
		}
	}); err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	for _, rs := range states {
		if err := c.sweepLinks(ctx, rs, gone); err != nil {
			return nil, fmt.Errorf("gc: repository %s: %w", rs.name, err)
		}
	}
	return &c.res, nil
}

func (c *collector) report(it Item) {
	if c.o.Report != nil {
		c.o.Report(it)
	}
}

// tagged returns the digests the tags of repo name now.
func (c *collector) tagged(ctx context.Context, repo string) (map[digest.Digest]bool, error) {
	tags, err := layout.Tags(ctx, c.st, repo)
	if err != nil {
		return nil, err
	}
	out := map[digest.Digest]bool{}
	for _, t := range tags {
		raw, err := c.st.GetRecord(ctx, repo, layout.Tag(t))
		if err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				continue // deleted meanwhile
			}
			return nil, err
		}
		if d, err := digest.Parse(strings.TrimSpace(string(raw))); err == nil {
			out[d] = true
		}
	}
	return out, nil
}

// young reports whether the revision d of repo was written, or its content
// refreshed, within the grace period.
func (c *collector) young(ctx context.Context, repo string, d digest.Digest) (bool, error) {
	t, err := c.st.StatRecord(ctx, repo, layout.Manifest(d))
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	if !c.run.Old(t) {
		return true, nil
	}
	bi, err := c.st.StatBlobInfo(ctx, d)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	return !c.run.Old(bi.ModTime), nil
}

func (c *collector) loadRepo(ctx context.Context, name string) (*repoState, error) {
	rs := &repoState{name: name, subjectOf: map[digest.Digest]digest.Digest{}}
	var err error
	if rs.revisions, err = layout.Digests(ctx, c.st, name, layout.ManifestsDir); err != nil {
		return nil, err
	}
	if rs.tagged, err = c.tagged(ctx, name); err != nil {
		return nil, err
	}
	if rs.referrers, err = layout.Referrers(ctx, c.st, name); err != nil {
		return nil, err
	}
	for s, ds := range rs.referrers {
		for _, d := range ds {
			rs.subjectOf[d] = s
		}
	}
	return rs, nil
}

// mark finds the kept manifests of one repository and marks every blob
// they use.
func (c *collector) mark(ctx context.Context, name string) (*repoState, error) {
	rs, err := c.loadRepo(ctx, name)
	if err != nil {
		return nil, err
	}
	var roots []digest.Digest
	for _, d := range rs.revisions {
		root := !c.o.DeleteUntagged || rs.tagged[d]
		if !root {
			y, err := c.young(ctx, name, d)
			if err != nil {
				return nil, err
			}
			root = y
		}
		if root {
			roots = append(roots, d)
		}
	}
	if rs.kept, err = c.run.Keep(ctx, roots, rs.reach()); err != nil {
		return nil, err
	}
	for _, d := range rs.revisions {
		if !rs.kept[d] {
			rs.drop = append(rs.drop, d)
		}
	}
	return rs, nil
}

// sweepManifests removes the revisions mark did not keep, after checking
// again that they are still untagged and old. One that became young or
// tagged meanwhile is kept, and so is everything it uses.
func (c *collector) sweepManifests(ctx context.Context, rs *repoState) error {
	if len(rs.drop) == 0 {
		return nil
	}
	tagged, err := c.tagged(ctx, rs.name)
	if err != nil {
		return err
	}
	reach := rs.reach()
	for _, d := range rs.drop {
		y, err := c.young(ctx, rs.name, d)
		if err != nil {
			return err
		}
		if y || tagged[d] {
			if _, err := c.run.MarkManifest(ctx, d, reach); err != nil {
				return err
			}
			continue
		}
		removed, err := c.run.RemoveRecord(ctx, rs.name, layout.Manifest(d), c.run.Cutoff)
		if errors.Is(err, storage.ErrNotFound) {
			continue // deleted meanwhile through the API
		}
		if err != nil {
			return err
		}
		if !removed { // pushed again just now: keep it and what it uses
			if _, err := c.run.MarkManifest(ctx, d, reach); err != nil {
				return err
			}
			continue
		}
		// after the revision, so a referrer never lists a manifest that
		// is still there but unlisted; a referrer record written again by
		// a push meanwhile is young and stays
		if s, ok := rs.subjectOf[d]; ok && !c.o.DryRun {
			if _, err := c.st.DeleteRecordIfOlder(ctx, rs.name, layout.Referrer(s, d), c.run.Cutoff); err != nil && !errors.Is(err, storage.ErrNotFound) {
				return err
			}
		}
		c.res.Manifests++
		c.report(Item{Kind: KindManifest, Repo: rs.name, Digest: d})
	}
	return nil
}

// sweepLinks removes links of rs to blobs whose content is gone: the ones
// this run removed, or found missing now. A link written after the run
// started is left alone (a push of that blob is under way).
func (c *collector) sweepLinks(ctx context.Context, rs *repoState, gone map[digest.Digest]bool) error {
	links, err := layout.Digests(ctx, c.st, rs.name, layout.BlobsDir)
	if err != nil {
		return err
	}
	for _, d := range links {
		if c.o.DryRun {
			if gone[d] {
				c.res.Links++
				c.report(Item{Kind: KindLink, Repo: rs.name, Digest: d})
			}
			continue
		}
		if _, err := c.st.StatBlobInfo(ctx, d); !errors.Is(err, storage.ErrNotFound) {
			if err != nil {
				return err
			}
			continue
		}
		removed, err := c.run.RemoveRecord(ctx, rs.name, layout.BlobLink(d), c.start)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if !removed {
			continue
		}
		c.res.Links++
		c.report(Item{Kind: KindLink, Repo: rs.name, Digest: d})
	}
	return nil
}
