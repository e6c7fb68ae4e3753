// Package migration copies a registry site's data from one store to
// another (the local file system to an S3 bucket and back) while the site
// keeps serving from the source: `wharf migrate-storage`.
//
// Blobs go first, a few at a time, streamed from the source into an upload
// session of the destination, whose Commit hashes what arrived and refuses
// it unless it matches the blob's digest: a blob that is corrupt at the
// source is reported and never becomes visible. Then each repository's
// records, in the order a push writes them: blob links, image manifests,
// the indexes that list them, referrers, tags last; a record is only
// written once everything it refers to is at the destination, so a tag
// there never names something missing, whenever the run stops.
//
// A run can be repeated at any time and copies only what is new: blobs and
// records the destination has are not read again, and a tag moved at the
// source since the last run is moved at the destination too, unless the
// destination's tag was written later (a push there after the switch-over
// wins). A run killed at any point (kill -9 included) leaves nothing half
// written and completes on the next run. See README.md.
package migration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/layout"
)

// Source is what a migration reads: the narrowest part of storage.Store
// it needs (every store implements it).
type Source interface {
	ListBlobs(ctx context.Context, fn func(storage.BlobInfo) error) error
	OpenBlob(ctx context.Context, d digest.Digest) (storage.Blob, error)
	ListRepos(ctx context.Context) ([]string, error)
	ListRecords(ctx context.Context, repo, dir string) ([]string, error)
	GetRecord(ctx context.Context, repo, key string) ([]byte, error)
	StatRecord(ctx context.Context, repo, key string) (time.Time, error)
}

// Dest is what a migration writes: blobs only through upload sessions
// (whose Commit verifies the digest), records one at a time.
type Dest interface {
	ListBlobs(ctx context.Context, fn func(storage.BlobInfo) error) error
	StatBlob(ctx context.Context, d digest.Digest) (int64, error)
	TouchBlob(ctx context.Context, d digest.Digest) error
	NewUpload(ctx context.Context, repo string) (storage.Upload, error)
	GetRecord(ctx context.Context, repo, key string) ([]byte, error)
	PutRecord(ctx context.Context, repo, key string, value []byte) error
	StatRecord(ctx context.Context, repo, key string) (time.Time, error)
}

// UploadRepo is the repository name the destination's upload sessions
// of a migration are opened under (a session left by a killed run is
// expired like any abandoned upload).
const UploadRepo = "wharf-migrate"

// DefaultWorkers is how many blobs are copied (and repositories
// migrated) at once unless Options.Workers says otherwise.
const DefaultWorkers = 4

// Options configure a migration.
type Options struct {
	// From is the store the site serves from now; To the new one.
	From Source
	To   Dest
	// DestServed says the site serves from the destination already
	// (the runs after the switch-over): a tag written there later than
	// the source's was pushed by a client and is kept. Before the
	// switch only migrations write the destination's tags, and the
	// source's value always wins, whatever the clocks say.
	DestServed bool
	// Workers is how many blobs are copied at once, and how many
	// repositories' records are written at once; 0 = DefaultWorkers.
	Workers int
	// Skip is called, one call at a time, for everything left out, with
	// the reason.
	Skip func(Skipped)
	// Repo is called after each repository with what it got.
	Repo func(RepoResult)
	// Progress, if set, is called every ProgressEvery (default 10s)
	// while blobs are copied, and once when they are done.
	Progress      func(Progress)
	ProgressEvery time.Duration
}

// Progress is how far the blob phase is.
type Progress struct {
	// Checked of Total source blobs were looked at; Copied of them were
	// copied (Bytes), the others were at the destination already or
	// skipped.
	Checked, Total, Copied int
	Bytes                  int64
	// Read is how many bytes were read from the source so far, blobs
	// still being copied included.
	Read int64
}

// Kinds of things a migration skips.
const (
	KindBlob     = "blob"
	KindLink     = "link"
	KindManifest = "manifest"
	KindReferrer = "referrer"
	KindTag      = "tag"
)

// Skipped is one thing left out and why.
type Skipped struct {
	Kind   string // KindBlob, KindLink, ...
	Repo   string // "" for a blob
	Name   string // digest, tag or key
	Reason string
}

func (s Skipped) String() string {
	where := s.Name
	if s.Repo != "" {
		where = s.Repo + " " + s.Name
	}
	return fmt.Sprintf("skipped %s %s: %s", s.Kind, where, s.Reason)
}

// RepoResult is what one repository got: records written now, and
// records the destination had already.
type RepoResult struct {
	Repo                              string
	Links, Manifests, Referrers, Tags int
	// TagsMoved counts tags that named another manifest at the
	// destination (moved at the source since the last run); they are
	// also in Tags.
	TagsMoved int
	Present   int
	Skipped   int
}

// Result sums up a migration.
type Result struct {
	Repos int
	// Blobs copied now, with their bytes; BlobsPresent were at the
	// destination already (not read again).
	Blobs        int
	Bytes        int64
	BlobsPresent int
	// Records written now (links, manifests, referrers, tags), of them
	// tags, and of those moved tags; RecordsPresent were there already.
	Records, Tags, TagsMoved int
	RecordsPresent           int
	Skipped                  int
}

// blobEntry is what became of one blob in this run; once guards the copy
// so that two workers needing the same blob copy it once.
type blobEntry struct {
	once    sync.Once
	ok      bool // at the destination now
	present bool // was there before this run
	size    int64
	reason  string // why not ok
	err     error  // the destination failed: stops the run
}

type migrator struct {
	o Options

	mu    sync.Mutex // guards blobs and the blob counters of res
	blobs map[digest.Digest]*blobEntry
	// there: the destination's blobs and sizes when the run began (one
	// listing instead of a HEAD per blob on S3).
	there    map[digest.Digest]int64
	res      Result
	progress Progress
	read     atomic.Int64 // bytes read from the source, for Progress.Read

	reportMu sync.Mutex // serialises o.Skip and o.Repo and guards res's other counters
}

// Run copies everything of o.From that o.To lacks. It returns an error
// only for what stops the whole run (a store failing at the destination,
// listing the source failing, ctx ending); everything else is skipped,
// reported through o.Skip and counted in Result.Skipped.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	m := &migrator{o: o, blobs: map[digest.Digest]*blobEntry{}, there: map[digest.Digest]int64{}}
	if err := o.To.ListBlobs(ctx, func(b storage.BlobInfo) error {
		m.there[b.Digest] = b.Size
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list the destination's blobs: %w", err)
	}
	var all []storage.BlobInfo
	if err := o.From.ListBlobs(ctx, func(b storage.BlobInfo) error {
		all = append(all, b)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list the source's blobs: %w", err)
	}
	if err := m.copyBlobs(ctx, all); err != nil {
		return &m.res, err
	}
	// Repositories are listed after the blobs are copied: a repository
	// pushed meanwhile comes along, its new blobs copied on demand.
	repos, err := o.From.ListRepos(ctx)
	if err != nil {
		return &m.res, fmt.Errorf("list the source's repositories: %w", err)
	}
	err = m.parallel(ctx, len(repos), func(ctx context.Context, i int) error {
		rr, err := m.migrateRepo(ctx, repos[i])
		if err != nil {
			return fmt.Errorf("repository %s: %w", repos[i], err)
		}
		m.reportMu.Lock()
		defer m.reportMu.Unlock()
		m.res.Repos++
		m.res.Records += rr.Links + rr.Manifests + rr.Referrers + rr.Tags
		m.res.Tags += rr.Tags
		m.res.TagsMoved += rr.TagsMoved
		m.res.RecordsPresent += rr.Present
		if o.Repo != nil {
			o.Repo(rr)
		}
		return nil
	})
	return &m.res, err
}

// parallel runs fn(0..n-1) on up to o.Workers goroutines; the first
// error stops the rest and is returned (or ctx's).
func (m *migrator) parallel(ctx context.Context, n int, fn func(context.Context, int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(m.o.Workers)
	for i := 0; i < n && gctx.Err() == nil; i++ {
		g.Go(func() error { return fn(gctx, i) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

func (m *migrator) skip(s Skipped) {
	m.reportMu.Lock()
	defer m.reportMu.Unlock()
	m.res.Skipped++
	if m.o.Skip != nil {
		m.o.Skip(s)
	}
}

// --- blobs -------------------------------------------------------------------

func (m *migrator) copyBlobs(ctx context.Context, all []storage.BlobInfo) error {
	m.progress.Total = len(all)
	if m.o.Progress != nil {
		every := m.o.ProgressEvery
		if every <= 0 {
			every = 10 * time.Second
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					m.o.Progress(m.snapshot())
				}
			}
		}()
		defer func() {
			close(stop)
			<-done
			m.o.Progress(m.snapshot())
		}()
	}
	return m.parallel(ctx, len(all), func(ctx context.Context, i int) error {
		e := m.ensureBlob(ctx, all[i].Digest, all[i].Size)
		m.mu.Lock()
		m.progress.Checked++
		m.mu.Unlock()
		return e.err
	})
}

func (m *migrator) snapshot() Progress {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.progress
	p.Read = m.read.Load()
	return p
}

// ensureBlob makes sure blob d is at the destination, copying it once per
// run however many callers need it. A failed copy is reported once. size
// is the source's size of it, -1 if not known.
func (m *migrator) ensureBlob(ctx context.Context, d digest.Digest, size int64) *blobEntry {
	m.mu.Lock()
	e, ok := m.blobs[d]
	if !ok {
		e = &blobEntry{}
		m.blobs[d] = e
	}
	m.mu.Unlock()
	e.once.Do(func() {
		m.copyBlob(ctx, d, size, e)
		if !e.ok && e.err == nil && ctx.Err() != nil {
			e.err = ctx.Err() // stopped, not skipped
		}
		if !e.ok && e.err == nil {
			m.skip(Skipped{Kind: KindBlob, Name: string(d), Reason: e.reason})
		}
	})
	return e
}

// sourceReader remembers a read error of the source, to tell it from a
// failure of the destination, and counts what it read.
type sourceReader struct {
	r    io.Reader
	err  error
	read *atomic.Int64
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.read.Add(int64(n))
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// copyBlob streams blob d from the source into a destination upload
// session; Commit hashes and compares, so nothing that does not match d
// becomes visible. Problems of the source are reasons to skip, problems
// of the destination stop the run (e.err).
func (m *migrator) copyBlob(ctx context.Context, d digest.Digest, srcSize int64, e *blobEntry) {
	have, listed := m.there[d] // read-only once the run has begun
	if !listed {
		// Not there when the run began; it may be now (a push at the
		// destination after the switch-over).
		var err error
		if have, err = m.o.To.StatBlob(ctx, d); err == nil {
			listed = true
		} else if !errors.Is(err, storage.ErrNotFound) {
			e.err = fmt.Errorf("destination: stat blob %s: %w", d, err)
			return
		}
	}
	if listed {
		if srcSize >= 0 && have != srcSize {
			e.reason = fmt.Sprintf("the destination has it with %d bytes, the source with %d: left alone (remove it there to copy it again)", have, srcSize)
			return
		}
		e.ok, e.present, e.size = true, true, have
		m.mu.Lock()
		m.res.BlobsPresent++
		m.mu.Unlock()
		return
	}
	b, err := m.o.From.OpenBlob(ctx, d)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			e.reason = "not at the source (removed since it was listed, or never there)"
		} else {
			e.reason = "cannot open it at the source: " + err.Error()
		}
		return
	}
	defer b.Close()
	up, err := m.o.To.NewUpload(ctx, UploadRepo)
	if err != nil {
		e.err = fmt.Errorf("destination: start an upload for blob %s: %w", d, err)
		return
	}
	defer up.Close()
	src := &sourceReader{r: b, read: &m.read}
	n, err := up.Append(ctx, src)
	if err != nil {
		// The session is discarded whatever failed; a cancelled ctx
		// must not keep the clean-up from happening.
		_ = up.Cancel(context.WithoutCancel(ctx))
		switch {
		case ctx.Err() != nil:
			e.err = ctx.Err()
		case src.err != nil:
			e.reason = fmt.Sprintf("reading it at the source failed after %d of %d bytes: %v", n, b.Size(), src.err)
		default:
			e.err = fmt.Errorf("destination: write blob %s: %w", d, err)
		}
		return
	}
	if err := up.Commit(ctx, d); err != nil {
		if errors.Is(err, storage.ErrDigestMismatch) {
			e.reason = fmt.Sprintf("its %d bytes at the source do not hash to its digest (%v): not copied", n, err)
			return
		}
		e.err = fmt.Errorf("destination: commit blob %s: %w", d, err)
		return
	}
	e.ok, e.size = true, n
	m.mu.Lock()
	m.res.Blobs++
	m.res.Bytes += n
	m.progress.Copied++
	m.progress.Bytes += n
	m.mu.Unlock()
}

// --- one repository's records --------------------------------------------------

// repoRun is the state of one repository's migration.
type repoRun struct {
	m    *migrator
	repo string
	rr   RepoResult
	// have: manifests the destination holds for the repository (known
	// so far); linked: blob links it holds.
	have, linked map[digest.Digest]bool
}

type manifestInfo struct {
	d    digest.Digest
	mt   string // the record's value (the media type)
	m    *backend.Manifest
	size int64
}

func (m *migrator) migrateRepo(ctx context.Context, repo string) (RepoResult, error) {
	r := &repoRun{m: m, repo: repo, rr: RepoResult{Repo: repo}, have: map[digest.Digest]bool{}, linked: map[digest.Digest]bool{}}
	if err := r.links(ctx); err != nil {
		return r.rr, err
	}
	if err := r.manifests(ctx); err != nil {
		return r.rr, err
	}
	if err := r.referrers(ctx); err != nil {
		return r.rr, err
	}
	if err := r.tags(ctx); err != nil {
		return r.rr, err
	}
	return r.rr, nil
}

func (r *repoRun) skip(kind, name, reason string) {
	r.rr.Skipped++
	r.m.skip(Skipped{Kind: kind, Repo: r.repo, Name: name, Reason: reason})
}

// digests lists the source's records <dir>/<alg>/<hex> (dir one of
// layout's) as digests.
func (r *repoRun) digests(ctx context.Context, dir string) ([]digest.Digest, error) {
	ds, err := layout.Digests(ctx, r.m.o.From, r.repo, dir)
	if err != nil {
		return nil, fmt.Errorf("source: list %s: %w", dir, err)
	}
	return ds, nil
}

// destHas reports whether the destination holds the record.
func (r *repoRun) destHas(ctx context.Context, key string) (bool, error) {
	_, err := r.m.o.To.GetRecord(ctx, r.repo, key)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, storage.ErrNotFound):
		return false, nil
	}
	return false, fmt.Errorf("destination: read %s: %w", key, err)
}

// copyRecord copies an immutable record (link, manifest, referrer) unless
// the destination has it, and says whether it wrote it. A record gone at
// the source meanwhile (deleted) is not copied.
func (r *repoRun) copyRecord(ctx context.Context, key string) (written bool, err error) {
	if ok, err := r.destHas(ctx, key); err != nil || ok {
		if ok {
			r.rr.Present++
		}
		return false, err
	}
	v, err := r.m.o.From.GetRecord(ctx, r.repo, key)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("source: read %s: %w", key, err)
	}
	if err := r.m.o.To.PutRecord(ctx, r.repo, key, v); err != nil {
		return false, fmt.Errorf("destination: write %s: %w", key, err)
	}
	return true, nil
}

// errGone: link's blob went away at the destination; reported already.
var errGone = errors.New("blob gone at the destination")

// link gives the repository blob d at the destination (the blob is
// there). A blob that was there before this run is touched first, so a
// gc running at the destination does not take it as garbage just as it
// gains a user (what a cross-repository mount does too).
func (r *repoRun) link(ctx context.Context, d digest.Digest, e *blobEntry) error {
	if r.linked[d] {
		return nil
	}
	key := layout.BlobLink(d)
	has, err := r.destHas(ctx, key)
	if err != nil {
		return err
	}
	if has {
		r.rr.Present++
		r.linked[d] = true
		return nil
	}
	if e.present {
		err := r.m.o.To.TouchBlob(ctx, d)
		if errors.Is(err, storage.ErrNotFound) {
			// removed there since the run began (a gc at the
			// destination): a link to it would name nothing
			r.skip(KindLink, string(d), "the blob was removed at the destination during the run (gc?); run again")
			return errGone
		}
		if err != nil {
			return fmt.Errorf("destination: touch blob %s: %w", d, err)
		}
	}
	if err := r.m.o.To.PutRecord(ctx, r.repo, key, nil); err != nil {
		return fmt.Errorf("destination: write %s: %w", key, err)
	}
	r.rr.Links++
	r.linked[d] = true
	return nil
}

func (r *repoRun) links(ctx context.Context) error {
	ds, err := r.digests(ctx, layout.BlobsDir)
	if err != nil {
		return err
	}
	for _, d := range ds {
		e := r.m.ensureBlob(ctx, d, -1)
		if e.err != nil {
			return e.err
		}
		if !e.ok {
			r.skip(KindLink, string(d), "its blob is not at the destination: "+e.reason)
			continue
		}
		if err := r.link(ctx, d, e); err != nil && !errors.Is(err, errGone) {
			return err
		}
	}
	return nil
}

// manifests copies the manifest records: image manifests once their
// config and layers are at the destination, then indexes once every
// manifest they list is.
func (r *repoRun) manifests(ctx context.Context) error {
	ds, err := r.digests(ctx, layout.ManifestsDir)
	if err != nil {
		return err
	}
	var images, indexes []*manifestInfo
	for _, d := range ds {
		key := layout.Manifest(d)
		has, err := r.destHas(ctx, key)
		if err != nil {
			return err
		}
		if has {
			r.rr.Present++
			r.have[d] = true
			continue
		}
		mi, reason, err := r.readManifest(ctx, d)
		if err != nil {
			return err
		}
		switch {
		case mi == nil && reason == "":
			// deleted at the source meanwhile
		case mi == nil:
			r.skip(KindManifest, string(d), reason)
		case backend.IsIndex(mi.mt) || len(mi.m.Manifests) > 0:
			indexes = append(indexes, mi)
		default:
			images = append(images, mi)
		}
	}
	for _, mi := range images {
		reason, err := r.imageReady(ctx, mi)
		if err != nil {
			return err
		}
		if reason != "" {
			r.skip(KindManifest, string(mi.d), reason)
			continue
		}
		if err := r.putManifest(ctx, mi); err != nil {
			return err
		}
	}
	// Indexes may list indexes: take what is complete until a round adds
	// nothing; the rest lists something missing.
	for len(indexes) > 0 {
		var rest []*manifestInfo
		for _, mi := range indexes {
			missing, err := r.missingChild(ctx, mi)
			if err != nil {
				return err
			}
			if missing != "" {
				rest = append(rest, mi)
				continue
			}
			if err := r.putManifest(ctx, mi); err != nil {
				return err
			}
		}
		if len(rest) == len(indexes) {
			for _, mi := range rest {
				missing, _ := r.missingChild(ctx, mi)
				r.skip(KindManifest, string(mi.d), "it lists manifest "+string(missing)+", which is not at the destination (missing or skipped)")
			}
			break
		}
		indexes = rest
	}
	return nil
}

// readManifest copies manifest d's content (if need be) and parses it. A
// nil result with no reason: the record went away at the source.
func (r *repoRun) readManifest(ctx context.Context, d digest.Digest) (*manifestInfo, string, error) {
	v, err := r.m.o.From.GetRecord(ctx, r.repo, layout.Manifest(d))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("source: read manifest record %s: %w", d, err)
	}
	e := r.m.ensureBlob(ctx, d, -1)
	if e.err != nil {
		return nil, "", e.err
	}
	if !e.ok {
		return nil, "its content is not at the destination: " + e.reason, nil
	}
	// The content at the destination hashed to d; the source's copy is
	// checked against d here as well before it is believed.
	data, err := readSmall(ctx, r.m.o.From, d)
	if err != nil {
		return nil, "cannot read it at the source: " + err.Error(), nil
	}
	m, mt, perr := backend.ParseManifest("", data)
	if perr != nil {
		return nil, "not a manifest: " + perr.Message, nil
	}
	if len(v) > 0 {
		mt = string(v)
	}
	return &manifestInfo{d: d, mt: mt, m: m, size: int64(len(data))}, "", nil
}

// imageReady says why an image manifest cannot go in yet ("" = it can),
// after copying and linking its config and layers.
func (r *repoRun) imageReady(ctx context.Context, mi *manifestInfo) (string, error) {
	var descs []backend.Descriptor
	if mi.m.Config != nil {
		descs = append(descs, *mi.m.Config)
	}
	for _, l := range mi.m.Layers {
		if !l.IsNonDistributable() {
			descs = append(descs, l)
		}
	}
	for _, c := range descs {
		e := r.m.ensureBlob(ctx, c.Digest, -1)
		if e.err != nil {
			return "", e.err
		}
		if !e.ok {
			return "it uses blob " + string(c.Digest) + ", which is not at the destination: " + e.reason, nil
		}
		if e.size != c.Size {
			return fmt.Sprintf("it gives blob %s size %d, but the blob has %d bytes", c.Digest, c.Size, e.size), nil
		}
		if err := r.link(ctx, c.Digest, e); errors.Is(err, errGone) {
			return "it uses blob " + string(c.Digest) + ", which was removed at the destination during the run", nil
		} else if err != nil {
			return "", err
		}
	}
	return "", nil
}

// missingChild returns the first manifest an index lists that the
// destination does not hold for the repository, "" if none.
func (r *repoRun) missingChild(ctx context.Context, mi *manifestInfo) (digest.Digest, error) {
	for _, c := range mi.m.Manifests {
		if r.have[c.Digest] {
			continue
		}
		has, err := r.destHas(ctx, layout.Manifest(c.Digest))
		if err != nil {
			return "", err
		}
		if !has {
			return c.Digest, nil
		}
		r.have[c.Digest] = true
	}
	return "", nil
}

func (r *repoRun) putManifest(ctx context.Context, mi *manifestInfo) error {
	key := layout.Manifest(mi.d)
	if err := r.m.o.To.PutRecord(ctx, r.repo, key, []byte(mi.mt)); err != nil {
		return fmt.Errorf("destination: write %s: %w", key, err)
	}
	r.rr.Manifests++
	r.have[mi.d] = true
	return nil
}

// referrers copies the referrer records (layout.Referrer) whose
// referring manifest is at the destination (the subject need not be).
func (r *repoRun) referrers(ctx context.Context) error {
	subjects, err := r.digests(ctx, layout.ReferrersDir)
	if err != nil {
		return err
	}
	for _, s := range subjects {
		refs, err := layout.ReferrersOfSubject(ctx, r.m.o.From, r.repo, s)
		if err != nil {
			return fmt.Errorf("source: list the referrers of %s: %w", s, err)
		}
		for _, d := range refs {
			if !r.have[d] {
				has, err := r.destHas(ctx, layout.Manifest(d))
				if err != nil {
					return err
				}
				if !has {
					r.skip(KindReferrer, string(d), "the referring manifest is not at the destination (missing or skipped)")
					continue
				}
				r.have[d] = true
			}
			written, err := r.copyRecord(ctx, layout.Referrer(s, d))
			if err != nil {
				return err
			}
			if written {
				r.rr.Referrers++
			}
		}
	}
	return nil
}

type tagInfo struct {
	name  string
	value []byte
	d     digest.Digest
	at    time.Time // when the source's tag was written
}

// tags copies tags last, oldest first (so the destination's write times,
// which retention takes as push times, keep the source's order). A tag
// that names another manifest at the destination is moved to the
// source's value; once the destination is served (DestServed), only when
// the source's was written later: a later write at the destination (a
// push after the switch-over) wins.
func (r *repoRun) tags(ctx context.Context) error {
	names, err := layout.Tags(ctx, r.m.o.From, r.repo)
	if err != nil {
		return fmt.Errorf("source: list tags: %w", err)
	}
	var ts []tagInfo
	for _, n := range names {
		key := layout.Tag(n)
		v, err := r.m.o.From.GetRecord(ctx, r.repo, key)
		if errors.Is(err, storage.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return fmt.Errorf("source: read %s: %w", key, err)
		}
		at, err := r.m.o.From.StatRecord(ctx, r.repo, key)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("source: stat %s: %w", key, err)
		}
		d, perr := digest.Parse(string(bytes.TrimSpace(v)))
		if perr != nil {
			r.skip(KindTag, n, "it holds no valid digest")
			continue
		}
		ts = append(ts, tagInfo{name: n, value: v, d: d, at: at})
	}
	sort.SliceStable(ts, func(i, j int) bool { return ts[i].at.Before(ts[j].at) })
	for _, t := range ts {
		if !r.have[t.d] {
			has, err := r.destHas(ctx, layout.Manifest(t.d))
			if err != nil {
				return err
			}
			if !has {
				r.skip(KindTag, t.name, "it names manifest "+string(t.d)+", which is not at the destination (missing or skipped)")
				continue
			}
			r.have[t.d] = true
		}
		key := layout.Tag(t.name)
		old, err := r.m.o.To.GetRecord(ctx, r.repo, key)
		moved := false
		switch {
		case err == nil && bytes.Equal(old, t.value):
			r.rr.Present++
			continue
		case err == nil && !r.m.o.DestServed:
			moved = true // only migrations write there: the source's is the truth
		case err == nil:
			at, err := r.m.o.To.StatRecord(ctx, r.repo, key)
			if err != nil && !errors.Is(err, storage.ErrNotFound) {
				return fmt.Errorf("destination: stat %s: %w", key, err)
			}
			if err == nil && newer(at, t.at) {
				r.skip(KindTag, t.name, fmt.Sprintf("the destination's tag names %s and was written later (%s) than the source's (%s, naming %s): kept",
					bytes.TrimSpace(old), at.UTC().Format(time.RFC3339), t.at.UTC().Format(time.RFC3339), t.d))
				continue
			}
			moved = true
		case !errors.Is(err, storage.ErrNotFound):
			return fmt.Errorf("destination: read %s: %w", key, err)
		}
		if err := r.m.o.To.PutRecord(ctx, r.repo, key, t.value); err != nil {
			return fmt.Errorf("destination: write %s: %w", key, err)
		}
		r.rr.Tags++
		if moved {
			r.rr.TagsMoved++
		}
	}
	return nil
}

// newer reports whether the destination's tag (written at dst) is newer
// than the source's (written at src), once the destination is served. S3
// gives times in whole seconds, so both are compared as such, and a tie
// goes to the source: the source takes no pushes after the switch-over,
// so a client's push at the destination lands in a later second than the
// source's last write, while a source tag moved in the second of the
// last copy (just before the switch) must still move.
func newer(dst, src time.Time) bool {
	return dst.Truncate(time.Second).After(src.Truncate(time.Second))
}

// readSmall reads manifest d (at most backend.MaxManifestSize bytes) from
// the source and checks it hashes to d.
func readSmall(ctx context.Context, src Source, d digest.Digest) ([]byte, error) {
	b, err := src.OpenBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	if b.Size() > backend.MaxManifestSize {
		return nil, fmt.Errorf("%d bytes: %w (%d)", b.Size(), storage.ErrTooLarge, backend.MaxManifestSize)
	}
	data := make([]byte, b.Size())
	if _, err := io.ReadFull(b, data); err != nil {
		return nil, err
	}
	if got := d.Algorithm().FromBytes(data); got != d {
		return nil, fmt.Errorf("hashes to %s: %w", got, storage.ErrDigestMismatch)
	}
	return data, nil
}
