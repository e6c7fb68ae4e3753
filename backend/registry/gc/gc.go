// Package gc is the garbage collector of wharf's embedded registry
// (`wharf gc`): it removes blobs that no manifest uses any more, and with
// DeleteUntagged also manifests that no tag reaches. It runs on a store
// that a registry is serving at the same time.
//
// # Algorithm (mark and sweep over one registry root)
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
// registry (storage.Store.TouchBlob; TouchRecord for the children of an
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
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
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

// Record keys as backend/registry writes them (see storage/README.md).
func manifestKey(d digest.Digest) string {
	return "manifests/" + string(d.Algorithm()) + "/" + d.Encoded()
}
func blobKey(d digest.Digest) string { return "blobs/" + string(d.Algorithm()) + "/" + d.Encoded() }
func referrerKey(subject, d digest.Digest) string {
	return "referrers/" + string(subject.Algorithm()) + "/" + subject.Encoded() + "/" + string(d.Algorithm()) + "-" + d.Encoded()
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

type collector struct {
	st     storage.Store
	o      Options
	start  time.Time
	cutoff time.Time // things modified before this are old enough
	marked map[digest.Digest]bool
	res    Result
}

// Run collects garbage in st once.
func Run(ctx context.Context, st storage.Store, o Options) (*Result, error) {
	grace := o.Grace
	if grace == 0 {
		grace = DefaultGrace
	}
	if grace < 0 {
		grace = 0
	}
	now := time.Now()
	c := &collector{st: st, o: o, start: now, cutoff: now.Add(-grace), marked: map[digest.Digest]bool{}}

	var cands []storage.BlobInfo
	if err := st.ListBlobs(ctx, func(b storage.BlobInfo) error {
		cands = append(cands, b)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].Digest < cands[j].Digest })

	repos, err := st.ListRepos(ctx)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	states := make([]*repoState, 0, len(repos))
	for _, name := range repos {
		rs, err := c.mark(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("gc: repository %s: %w", name, err)
		}
		states = append(states, rs)
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
	for _, b := range cands {
		removed, err := c.sweepBlob(ctx, b)
		if err != nil {
			return nil, fmt.Errorf("gc: blob %s: %w", b.Digest, err)
		}
		if removed {
			gone[b.Digest] = true
		} else {
			c.res.Kept++
			if c.marked[b.Digest] {
				c.res.Marked++
			}
		}
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

// listDigests lists records dir/<alg>/<hex> as digests; names that are no
// valid digest are skipped (the registry never writes them).
func (c *collector) listDigests(ctx context.Context, repo, dir string) ([]digest.Digest, error) {
	algs, err := c.st.ListRecords(ctx, repo, dir)
	if err != nil {
		return nil, err
	}
	var out []digest.Digest
	for _, a := range algs {
		hexes, err := c.st.ListRecords(ctx, repo, dir+"/"+a)
		if err != nil {
			return nil, err
		}
		for _, h := range hexes {
			if d := digest.NewDigestFromEncoded(digest.Algorithm(a), h); d.Validate() == nil {
				out = append(out, d)
			}
		}
	}
	return out, nil
}

// tagged returns the digests the tags of repo name now.
func (c *collector) tagged(ctx context.Context, repo string) (map[digest.Digest]bool, error) {
	tags, err := c.st.ListRecords(ctx, repo, "tags")
	if err != nil {
		return nil, err
	}
	out := map[digest.Digest]bool{}
	for _, t := range tags {
		raw, err := c.st.GetRecord(ctx, repo, "tags/"+t)
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
	t, err := c.st.StatRecord(ctx, repo, manifestKey(d))
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	if !t.Before(c.cutoff) {
		return true, nil
	}
	bi, err := c.st.StatBlobInfo(ctx, d)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	return !bi.ModTime.Before(c.cutoff), nil
}

func (c *collector) loadRepo(ctx context.Context, name string) (*repoState, error) {
	rs := &repoState{
		name:      name,
		referrers: map[digest.Digest][]digest.Digest{},
		subjectOf: map[digest.Digest]digest.Digest{},
		kept:      map[digest.Digest]bool{},
	}
	var err error
	if rs.revisions, err = c.listDigests(ctx, name, "manifests"); err != nil {
		return nil, err
	}
	if rs.tagged, err = c.tagged(ctx, name); err != nil {
		return nil, err
	}
	subjects, err := c.listDigests(ctx, name, "referrers")
	if err != nil {
		return nil, err
	}
	for _, s := range subjects {
		dir := "referrers/" + string(s.Algorithm()) + "/" + s.Encoded()
		names, err := c.st.ListRecords(ctx, name, dir)
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			alg, hex, ok := strings.Cut(n, "-")
			d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
			if !ok || d.Validate() != nil {
				continue
			}
			rs.referrers[s] = append(rs.referrers[s], d)
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
	isRev := map[digest.Digest]bool{}
	for _, d := range rs.revisions {
		isRev[d] = true
	}
	var queue []digest.Digest
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
			queue = append(queue, d)
		}
	}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		if rs.kept[d] {
			continue
		}
		rs.kept[d] = true
		children, err := c.markManifest(ctx, name, d)
		if err != nil {
			return nil, err
		}
		// children are revisions (the registry checks that); if one was
		// deleted through the API, what it uses is still kept while the
		// index lists it
		queue = append(queue, children...)
		for _, r := range rs.referrers[d] {
			if isRev[r] {
				queue = append(queue, r)
			}
		}
	}
	for _, d := range rs.revisions {
		if !rs.kept[d] {
			rs.drop = append(rs.drop, d)
		}
	}
	return rs, nil
}

// markManifest marks manifest d's own blob and everything it references,
// and returns the child manifests of an index. Content that cannot be read
// (other than missing) stops the whole run: sweeping with an incomplete
// mark would delete blobs in use.
func (c *collector) markManifest(ctx context.Context, repo string, d digest.Digest) ([]digest.Digest, error) {
	c.marked[d] = true
	data, err := storage.ReadBlob(ctx, c.st, d, backend.MaxManifestSize)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil // a revision whose content is gone: nothing to keep
	}
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	var m backend.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("manifest %s of %s does not parse (refusing to collect): %w", d, repo, err)
	}
	if m.Config != nil {
		c.marked[m.Config.Digest] = true
	}
	for _, l := range m.Layers {
		c.marked[l.Digest] = true
	}
	var children []digest.Digest
	for _, ch := range m.Manifests {
		c.marked[ch.Digest] = true
		children = append(children, ch.Digest)
	}
	return children, nil
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
	for _, d := range rs.drop {
		y, err := c.young(ctx, rs.name, d)
		if err != nil {
			return err
		}
		if y || tagged[d] {
			if _, err := c.markManifest(ctx, rs.name, d); err != nil {
				return err
			}
			continue
		}
		if !c.o.DryRun {
			removed, err := c.st.DeleteRecordIfOlder(ctx, rs.name, manifestKey(d), c.cutoff)
			if errors.Is(err, storage.ErrNotFound) {
				continue // deleted meanwhile through the API
			}
			if err != nil {
				return err
			}
			if !removed { // pushed again just now: keep it and what it uses
				if _, err := c.markManifest(ctx, rs.name, d); err != nil {
					return err
				}
				continue
			}
			// after the revision, so a referrer never lists a manifest
			// that is still there but unlisted; a referrer record written
			// again by a push meanwhile is young and stays
			if s, ok := rs.subjectOf[d]; ok {
				if _, err := c.st.DeleteRecordIfOlder(ctx, rs.name, referrerKey(s, d), c.cutoff); err != nil && !errors.Is(err, storage.ErrNotFound) {
					return err
				}
			}
		}
		c.res.Manifests++
		c.report(Item{Kind: KindManifest, Repo: rs.name, Digest: d})
	}
	return nil
}

// sweepBlob removes b if nothing marked it and it is old, also when
// stat'ed again now.
func (c *collector) sweepBlob(ctx context.Context, b storage.BlobInfo) (bool, error) {
	if c.marked[b.Digest] || !b.ModTime.Before(c.cutoff) {
		return false, nil
	}
	var removed bool
	var err error
	if c.o.DryRun {
		var now storage.BlobInfo
		now, err = c.st.StatBlobInfo(ctx, b.Digest)
		removed = err == nil && now.ModTime.Before(c.cutoff)
	} else {
		// false: in use again since the listing (see the package doc)
		removed, err = c.st.DeleteBlobIfOlder(ctx, b.Digest, c.cutoff)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil // removed by someone else
	}
	if err != nil || !removed {
		return false, err
	}
	c.res.Blobs++
	c.res.Bytes += b.Size
	c.report(Item{Kind: KindBlob, Digest: b.Digest, Size: b.Size})
	return true, nil
}

// sweepLinks removes links of rs to blobs whose content is gone: the ones
// this run removed, or found missing now. A link written after the run
// started is left alone (a push of that blob is under way).
func (c *collector) sweepLinks(ctx context.Context, rs *repoState, gone map[digest.Digest]bool) error {
	links, err := c.listDigests(ctx, rs.name, "blobs")
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
		removed, err := c.st.DeleteRecordIfOlder(ctx, rs.name, blobKey(d), c.start)
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
