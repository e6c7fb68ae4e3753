// Package importer takes over the storage of a registry:2 or registry:3
// (the distribution project's filesystem driver) in place: every
// repository, tag, manifest revision and blob becomes available in a wharf
// registry site's store with the same digests. Blobs are hard-linked when
// both roots are on one file system and copied otherwise, and every one is
// hashed (streaming, a few at a time) before it becomes visible. An import
// can be re-run at any time: what is already there is skipped, so a run
// that was killed completes on the next one. See README.md.
package importer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/layout"
)

// Store is what an import needs of the site's store: blobs to check,
// upload sessions to stream copies through, records to write. A store
// that is also a storage.BlobImporter takes files directly.
type Store interface {
	storage.BlobReader
	storage.Uploads
	storage.Records
}

// Options configure an import.
type Options struct {
	// From is the registry's storage root: the filesystem driver's
	// rootdirectory (/var/lib/registry in the registry image), or the
	// docker/registry/v2 folder below it.
	From string
	// Store is the wharf registry site's store to import into.
	Store Store
	// DryRun reads and verifies everything and reports what would be
	// imported, writing nothing.
	DryRun bool
	// Copy always copies blobs, never hard-links them.
	Copy bool
	// TrustDigests skips hashing hard-linked blobs (copies are always
	// hashed): the import then takes seconds whatever the size, but a
	// blob that rotted on disk comes over as it is (a client pulling it
	// notices). Sizes are still checked against the manifests.
	TrustDigests bool
	// Workers is how many blobs are hashed at once; 0 = GOMAXPROCS.
	Workers int
	// Skip is called (from one goroutine at a time) for everything left
	// out, with the reason.
	Skip func(Skipped)
	// Repo is called after each repository with what it got.
	Repo func(RepoResult)
	// Progress, if set, is called every ProgressEvery (default 10s)
	// while blobs are imported: blobs done of total, bytes read so far.
	Progress      func(done, total int, bytes int64)
	ProgressEvery time.Duration
}

// Kinds of things an import skips.
const (
	KindRepo     = "repository"
	KindBlob     = "blob"
	KindLink     = "link"
	KindManifest = "manifest"
	KindTag      = "tag"
)

// Skipped is one thing left out and why.
type Skipped struct {
	Kind   string // KindRepo, KindBlob, KindLink, KindManifest, KindTag
	Repo   string // "" for a blob
	Name   string // digest, tag or path
	Reason string
}

func (s Skipped) String() string {
	where := s.Name
	if s.Repo != "" {
		where = s.Repo + " " + s.Name
	}
	return fmt.Sprintf("skipped %s %s: %s", s.Kind, where, s.Reason)
}

// RepoResult is what one repository got.
type RepoResult struct {
	Repo                        string
	Tags, TagsPresent           int
	Manifests, ManifestsPresent int
	Skipped                     int
}

// Result sums up an import.
type Result struct {
	Repos                       int
	Tags, TagsPresent           int
	Manifests, ManifestsPresent int
	// Blobs new in the store, of them linked and copied, with their bytes;
	// BlobsPresent were there already and were not read again.
	Blobs, Linked, Copied int
	Bytes                 int64
	BlobsPresent          int
	Skipped               int
}

// ErrNotRegistryRoot: From is not a distribution storage root.
var ErrNotRegistryRoot = errors.New("not a registry:2/registry:3 storage root")

// FindRoot returns the docker/registry/v2 folder of a distribution storage
// root given as from (the rootdirectory, or the v2 folder itself).
func FindRoot(from string) (string, error) {
	fi, err := os.Stat(from)
	if err != nil {
		return "", err
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s is a file: %w", from, ErrNotRegistryRoot)
	}
	for _, c := range []string{filepath.Join(from, "docker", "registry", "v2"), from} {
		b, errB := os.Stat(filepath.Join(c, "blobs"))
		r, errR := os.Stat(filepath.Join(c, "repositories"))
		if errB == nil && b.IsDir() && errR == nil && r.IsDir() {
			return c, nil
		}
	}
	return "", fmt.Errorf("%s: %w: no docker/registry/v2/blobs and docker/registry/v2/repositories below it (give the filesystem driver's rootdirectory, /var/lib/registry in the registry image)", from, ErrNotRegistryRoot)
}

// blobState is what became of one blob.
type blobState struct {
	ok     bool
	size   int64
	reason string // why not ok
}

// repoLinks is what a repository's folder says.
type repoLinks struct {
	name      string
	layers    []digest.Digest
	revisions []digest.Digest
	tags      []tagLink
}

type tagLink struct {
	tag string
	d   digest.Digest
}

type importer struct {
	o    Options
	v2   string
	bi   storage.BlobImporter
	res  Result
	mu   sync.Mutex // guards blobs and res's blob counters
	blob map[digest.Digest]*blobState
	// reportMu serialises calls of o.Skip.
	reportMu sync.Mutex
}

// Run imports o.From into o.Store. It returns an error only for what
// stops the whole import (not a registry root, the store failing, ctx
// ending); everything else is skipped, reported through o.Skip and
// counted in Result.Skipped.
func Run(ctx context.Context, o Options) (*Result, error) {
	v2, err := FindRoot(o.From)
	if err != nil {
		return nil, err
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	im := &importer{o: o, v2: v2, blob: map[digest.Digest]*blobState{}}
	im.bi, _ = o.Store.(storage.BlobImporter)

	repos, err := im.scanRepos(ctx)
	if err != nil {
		return nil, err
	}
	// Blobs first, all repositories' at once (the most parallel), then
	// each repository's records: links, manifests, referrers, tags, in
	// that order, so that a crash never leaves a tag naming nothing.
	var need []digest.Digest
	seen := map[digest.Digest]bool{}
	for _, r := range repos {
		for _, l := range [][]digest.Digest{r.layers, r.revisions} {
			for _, d := range l {
				if !seen[d] {
					seen[d] = true
					need = append(need, d)
				}
			}
		}
	}
	seen = nil
	if err := im.importBlobs(ctx, need); err != nil {
		return nil, err
	}
	// Repositories are independent; their records are small fsynced
	// files, so several at once overlap the waits for the disk.
	if err := im.importRepos(ctx, repos); err != nil {
		return nil, err
	}
	return &im.res, nil
}

// importRepos runs importRepo for every repository, max(Workers, 4) at
// a time; the first error (the store failing, ctx ending) stops the rest.
func (im *importer) importRepos(ctx context.Context, repos []*repoLinks) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(im.o.Workers, 4))
	for _, r := range repos {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			rr, err := im.importRepo(gctx, r)
			if err != nil {
				return fmt.Errorf("repository %s: %w", r.name, err)
			}
			im.reportMu.Lock()
			defer im.reportMu.Unlock()
			im.res.Repos++
			if im.o.Repo != nil {
				im.o.Repo(rr)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

func (im *importer) skip(s Skipped) {
	im.reportMu.Lock()
	defer im.reportMu.Unlock()
	im.res.Skipped++
	if im.o.Skip != nil {
		im.o.Skip(s)
	}
}

// --- reading the registry:2 layout ------------------------------------------

// scanRepos walks repositories/: a folder is a repository when it has
// _manifests or _layers; other folders starting with '_' (_uploads) are
// not descended into. Unreadable folders are reported and left out.
func (im *importer) scanRepos(ctx context.Context) ([]*repoLinks, error) {
	base := filepath.Join(im.v2, "repositories")
	var repos []*repoLinks
	var walk func(dir, name string) error
	walk = func(dir, name string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			im.skip(Skipped{Kind: KindRepo, Repo: name, Name: dir, Reason: "cannot read folder: " + errText(err)})
			return nil
		}
		isRepo := false
		for _, e := range ents {
			n := e.Name()
			if n == "_manifests" || n == "_layers" {
				isRepo = true
			}
			if !e.IsDir() || strings.HasPrefix(n, "_") || strings.HasPrefix(n, ".") {
				continue
			}
			child := n
			if name != "" {
				child = name + "/" + n
			}
			if err := walk(filepath.Join(dir, n), child); err != nil {
				return err
			}
		}
		if isRepo && name != "" {
			if e := backend.ValidateName(name); e != nil {
				im.skip(Skipped{Kind: KindRepo, Repo: name, Name: dir, Reason: e.Message})
				return nil
			}
			repos = append(repos, im.readRepo(dir, name))
		}
		return nil
	}
	if err := walk(base, ""); err != nil {
		return nil, err
	}
	sort.Slice(repos, func(i, j int) bool { return repos[i].name < repos[j].name })
	return repos, nil
}

// readRepo reads a repository's _layers links, manifest revisions and
// tags. Bad and unreadable links are reported and left out.
func (im *importer) readRepo(dir, name string) *repoLinks {
	r := &repoLinks{name: name}
	r.layers = im.readDigestLinks(name, filepath.Join(dir, "_layers"), KindLink)
	r.revisions = im.readDigestLinks(name, filepath.Join(dir, "_manifests", "revisions"), KindManifest)
	tagsDir := filepath.Join(dir, "_manifests", "tags")
	ents, err := os.ReadDir(tagsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		im.skip(Skipped{Kind: KindTag, Repo: name, Name: tagsDir, Reason: "cannot read folder: " + errText(err)})
	}
	for _, e := range ents {
		tag := e.Name()
		if !backend.ValidTag(tag) {
			im.skip(Skipped{Kind: KindTag, Repo: name, Name: tag, Reason: "not a valid tag name"})
			continue
		}
		raw, err := os.ReadFile(filepath.Join(tagsDir, tag, "current", "link"))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				// registry:2 removes current/link when it deletes a tag
				continue
			}
			im.skip(Skipped{Kind: KindTag, Repo: name, Name: tag, Reason: "cannot read its link: " + errText(err)})
			continue
		}
		d, perr := backend.ParseDigest(strings.TrimSpace(string(raw)))
		if perr != nil {
			im.skip(Skipped{Kind: KindTag, Repo: name, Name: tag, Reason: "its link holds no valid digest: " + perr.Message})
			continue
		}
		r.tags = append(r.tags, tagLink{tag: tag, d: d})
	}
	return r
}

// readDigestLinks reads <dir>/<alg>/<hex>/link files; the link must name
// the digest its path does. A folder without a link is a deleted entry
// (registry:2 removes only the link file) and is passed over silently.
func (im *importer) readDigestLinks(repo, dir, kind string) []digest.Digest {
	algs, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			im.skip(Skipped{Kind: kind, Repo: repo, Name: dir, Reason: "cannot read folder: " + errText(err)})
		}
		return nil
	}
	var out []digest.Digest
	for _, a := range algs {
		hexes, err := os.ReadDir(filepath.Join(dir, a.Name()))
		if err != nil {
			im.skip(Skipped{Kind: kind, Repo: repo, Name: filepath.Join(dir, a.Name()), Reason: "cannot read folder: " + errText(err)})
			continue
		}
		for _, h := range hexes {
			want := a.Name() + ":" + h.Name()
			d, perr := backend.ParseDigest(want)
			if perr != nil {
				im.skip(Skipped{Kind: kind, Repo: repo, Name: want, Reason: perr.Message})
				continue
			}
			raw, err := os.ReadFile(filepath.Join(dir, a.Name(), h.Name(), "link"))
			if err != nil {
				if !errors.Is(err, os.ErrNotExist) {
					im.skip(Skipped{Kind: kind, Repo: repo, Name: want, Reason: "cannot read its link: " + errText(err)})
				}
				continue
			}
			if got := strings.TrimSpace(string(raw)); got != want {
				im.skip(Skipped{Kind: kind, Repo: repo, Name: want, Reason: fmt.Sprintf("its link says %q", clip(got))})
				continue
			}
			out = append(out, d)
		}
	}
	return out
}

// blobSrc is where the registry keeps blob d's content.
func (im *importer) blobSrc(d digest.Digest) string {
	h := d.Encoded()
	return filepath.Join(im.v2, "blobs", string(d.Algorithm()), h[:2], h, "data")
}

// --- blobs -------------------------------------------------------------------

// importBlobs imports need with o.Workers workers, each with its own
// read buffer; a failed blob is recorded (and reported) and the rest go on.
func (im *importer) importBlobs(ctx context.Context, need []digest.Digest) error {
	work := make(chan digest.Digest)
	var wg sync.WaitGroup
	if im.o.Progress != nil {
		every := im.o.ProgressEvery
		if every <= 0 {
			every = 10 * time.Second
		}
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					im.mu.Lock()
					done, bytes := len(im.blob), im.res.Bytes
					im.mu.Unlock()
					im.o.Progress(done, len(need), bytes)
				}
			}
		}()
	}
	for i := 0; i < im.o.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<20)
			for d := range work {
				im.ensureBlob(ctx, d, buf)
			}
		}()
	}
	var err error
feed:
	for _, d := range need {
		select {
		case work <- d:
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err == nil {
		err = ctx.Err()
	}
	return err
}

// ensureBlob imports blob d unless that was done (or tried) already in
// this run, and returns its state.
func (im *importer) ensureBlob(ctx context.Context, d digest.Digest, buf []byte) *blobState {
	im.mu.Lock()
	if st, ok := im.blob[d]; ok {
		im.mu.Unlock()
		return st
	}
	im.mu.Unlock()
	st := im.importBlob(ctx, d, buf)
	im.mu.Lock()
	if prev, ok := im.blob[d]; ok { // a worker raced us to it
		im.mu.Unlock()
		return prev
	}
	im.blob[d] = st
	im.mu.Unlock()
	if !st.ok && ctx.Err() == nil {
		im.skip(Skipped{Kind: KindBlob, Name: string(d), Reason: st.reason})
	}
	return st
}

func (im *importer) importBlob(ctx context.Context, d digest.Digest, buf []byte) *blobState {
	if size, err := im.o.Store.StatBlob(ctx, d); err == nil {
		im.mu.Lock()
		im.res.BlobsPresent++
		im.mu.Unlock()
		return &blobState{ok: true, size: size}
	}
	src := im.blobSrc(d)
	fi, err := os.Stat(src)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return &blobState{reason: "missing: the registry has a link to it but no content (" + src + ")"}
		}
		return &blobState{reason: "cannot read: " + errText(err)}
	}
	if !fi.Mode().IsRegular() {
		return &blobState{reason: src + " is not a regular file"}
	}
	var (
		linked bool
		size   int64
	)
	switch {
	case im.o.DryRun:
		size, err = hashFile(ctx, src, d, buf)
	case im.bi != nil:
		linked, size, err = im.bi.ImportBlob(ctx, d, src, !im.o.Copy, im.o.TrustDigests, buf)
	default:
		size, err = im.uploadBlob(ctx, d, src)
	}
	if err != nil {
		if errors.Is(err, storage.ErrDigestMismatch) {
			return &blobState{reason: "content does not match its digest (" + errText(err) + ")"}
		}
		return &blobState{reason: "cannot import: " + errText(err)}
	}
	im.mu.Lock()
	im.res.Blobs++
	im.res.Bytes += size
	if linked {
		im.res.Linked++
	} else if !im.o.DryRun {
		im.res.Copied++
	}
	im.mu.Unlock()
	return &blobState{ok: true, size: size}
}

// uploadBlob streams src through an upload session, for stores that
// cannot take a file directly; Commit checks the digest.
func (im *importer) uploadBlob(ctx context.Context, d digest.Digest, src string) (int64, error) {
	f, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	up, err := im.o.Store.NewUpload(ctx, "imported")
	if err != nil {
		return 0, err
	}
	defer up.Close()
	n, err := up.Append(ctx, f)
	if err != nil {
		_ = up.Cancel(ctx)
		return n, err
	}
	return n, up.Commit(ctx, d)
}

// hashFile checks that src hashes to d (a dry run's verification).
func hashFile(ctx context.Context, src string, d digest.Digest, buf []byte) (int64, error) {
	f, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h := d.Algorithm().Digester()
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		r, rerr := f.Read(buf)
		h.Hash().Write(buf[:r])
		n += int64(r)
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return n, rerr
		}
	}
	if got := h.Digest(); got != d {
		return n, fmt.Errorf("%s hashes to %s: %w", src, got, storage.ErrDigestMismatch)
	}
	return n, nil
}

// --- one repository's records --------------------------------------------------

type manifestInfo struct {
	d    digest.Digest
	mt   string
	m    *backend.Manifest
	data []byte
}

func (im *importer) importRepo(ctx context.Context, r *repoLinks) (RepoResult, error) {
	rr := RepoResult{Repo: r.name}
	skip := func(kind, name, reason string) {
		rr.Skipped++
		im.skip(Skipped{Kind: kind, Repo: r.name, Name: name, Reason: reason})
	}
	buf := make([]byte, 1<<20)
	linked := map[digest.Digest]bool{}
	link := func(d digest.Digest) error {
		if linked[d] {
			return nil
		}
		linked[d] = true
		_, err := im.putRecordOnce(ctx, r.name, layout.BlobLink(d), nil)
		return err
	}
	for _, d := range r.layers {
		if st := im.ensureBlob(ctx, d, buf); st.ok {
			if err := link(d); err != nil {
				return rr, err
			}
		}
	}

	// Read and check every revision; image manifests go in before the
	// indexes that list them.
	var images, indexes []*manifestInfo
	for _, d := range r.revisions {
		st := im.ensureBlob(ctx, d, buf)
		if !st.ok {
			skip(KindManifest, string(d), "its content is not available: "+st.reason)
			continue
		}
		mi, reason := im.readManifest(ctx, d)
		if reason != "" {
			skip(KindManifest, string(d), reason)
			continue
		}
		if backend.IsIndex(mi.mt) {
			indexes = append(indexes, mi)
		} else {
			images = append(images, mi)
		}
	}
	have := map[digest.Digest]bool{} // manifests this repository now holds
	for _, mi := range images {
		if reason := im.checkImage(ctx, mi, buf); reason != "" {
			skip(KindManifest, string(mi.d), reason)
			continue
		}
		for _, c := range append([]backend.Descriptor{*mi.m.Config}, mi.m.Layers...) {
			if im.blobOK(c.Digest) {
				if err := link(c.Digest); err != nil {
					return rr, err
				}
			}
		}
		present, err := im.putManifest(ctx, r.name, mi)
		if err != nil {
			return rr, err
		}
		countManifest(&rr, present)
		have[mi.d] = true
	}
	// Indexes may list indexes: take in what is complete until a round
	// adds nothing; the rest lists something missing.
	for len(indexes) > 0 {
		var rest []*manifestInfo
		for _, mi := range indexes {
			if missing := im.missingChildren(ctx, r.name, mi, have); missing != "" {
				rest = append(rest, mi)
				continue
			}
			present, err := im.putManifest(ctx, r.name, mi)
			if err != nil {
				return rr, err
			}
			countManifest(&rr, present)
			have[mi.d] = true
		}
		if len(rest) == len(indexes) {
			for _, mi := range rest {
				skip(KindManifest, string(mi.d), "it lists manifest "+im.missingChildren(ctx, r.name, mi, have)+", which is not in the repository (missing or skipped)")
			}
			break
		}
		indexes = rest
	}

	for _, t := range r.tags {
		if !have[t.d] && !im.hasManifest(ctx, r.name, t.d) {
			skip(KindTag, t.tag, "it points at manifest "+string(t.d)+", which is not in the repository (missing or skipped)")
			continue
		}
		present, err := im.putRecordOnce(ctx, r.name, layout.Tag(t.tag), []byte(t.d))
		if err != nil {
			return rr, err
		}
		if present {
			rr.TagsPresent++
		} else {
			rr.Tags++
		}
	}
	im.mu.Lock()
	im.res.Tags += rr.Tags
	im.res.TagsPresent += rr.TagsPresent
	im.res.Manifests += rr.Manifests
	im.res.ManifestsPresent += rr.ManifestsPresent
	im.mu.Unlock()
	return rr, nil
}

func countManifest(rr *RepoResult, present bool) {
	if present {
		rr.ManifestsPresent++
	} else {
		rr.Manifests++
	}
}

// readManifest reads and parses manifest d; a non-empty reason says why
// it cannot be imported.
func (im *importer) readManifest(ctx context.Context, d digest.Digest) (*manifestInfo, string) {
	var data []byte
	var err error
	if im.o.DryRun {
		data, err = readSmall(im.blobSrc(d), backend.MaxManifestSize)
	} else {
		data, err = storage.ReadBlob(ctx, im.o.Store, d, backend.MaxManifestSize)
	}
	if err != nil {
		return nil, "cannot read it: " + errText(err)
	}
	var head struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
	}
	if json.Unmarshal(data, &head) == nil && (head.SchemaVersion == 1 || strings.HasPrefix(head.MediaType, "application/vnd.docker.distribution.manifest.v1")) {
		return nil, "Docker schema 1 manifest: wharf (like registry:3 and current clients) does not serve schema 1; pull it and push it again with a current client to convert it"
	}
	m, mt, e := backend.ParseManifest("", data)
	if e != nil {
		return nil, "not a manifest wharf accepts: " + e.Message
	}
	return &manifestInfo{d: d, mt: mt, m: m, data: data}, ""
}

// checkImage: every blob an image manifest uses must be available with
// the size the manifest gives; a blob linked nowhere in the repository is
// imported now (registry:2 would not serve it, but the manifest names it).
func (im *importer) checkImage(ctx context.Context, mi *manifestInfo, buf []byte) string {
	descs := append([]backend.Descriptor{*mi.m.Config}, mi.m.Layers...)
	for i, c := range descs {
		if i > 0 && c.IsNonDistributable() {
			continue
		}
		st := im.ensureBlob(ctx, c.Digest, buf)
		if !st.ok {
			return "it uses blob " + string(c.Digest) + ", which is not available: " + st.reason
		}
		if st.size != c.Size {
			return fmt.Sprintf("it gives blob %s size %d, but the blob has %d bytes", c.Digest, c.Size, st.size)
		}
	}
	return ""
}

func (im *importer) blobOK(d digest.Digest) bool {
	im.mu.Lock()
	defer im.mu.Unlock()
	st, ok := im.blob[d]
	return ok && st.ok
}

// missingChildren returns the first manifest an index lists that the
// repository does not hold, "" if it holds them all.
func (im *importer) missingChildren(ctx context.Context, repo string, mi *manifestInfo, have map[digest.Digest]bool) string {
	for _, c := range mi.m.Manifests {
		if !have[c.Digest] && !im.hasManifest(ctx, repo, c.Digest) {
			return string(c.Digest)
		}
	}
	return ""
}

func (im *importer) hasManifest(ctx context.Context, repo string, d digest.Digest) bool {
	_, err := im.o.Store.GetRecord(ctx, repo, layout.Manifest(d))
	return err == nil
}

// putManifest writes the manifest's revision record and, for a manifest
// with a subject, its referrer record (content is in the store already).
func (im *importer) putManifest(ctx context.Context, repo string, mi *manifestInfo) (present bool, err error) {
	present, err = im.putRecordOnce(ctx, repo, layout.Manifest(mi.d), []byte(mi.mt))
	if err != nil || mi.m.Subject == nil {
		return present, err
	}
	desc := backend.Descriptor{
		MediaType:    mi.mt,
		Digest:       mi.d,
		Size:         int64(len(mi.data)),
		ArtifactType: mi.m.ArtifactType,
		Annotations:  mi.m.Annotations,
	}
	if desc.ArtifactType == "" && mi.m.Config != nil {
		desc.ArtifactType = mi.m.Config.MediaType
	}
	raw, err := json.Marshal(desc)
	if err != nil {
		return present, err
	}
	_, err = im.putRecordOnce(ctx, repo, layout.Referrer(mi.m.Subject.Digest, mi.d), raw)
	return present, err
}

// putRecordOnce writes a record unless it holds value already, and says
// whether it did; a dry run writes nothing.
func (im *importer) putRecordOnce(ctx context.Context, repo, key string, value []byte) (present bool, err error) {
	if old, err := im.o.Store.GetRecord(ctx, repo, key); err == nil && bytes.Equal(old, value) {
		return true, nil
	}
	if im.o.DryRun {
		return false, nil
	}
	if err := im.o.Store.PutRecord(ctx, repo, key, value); err != nil {
		return false, fmt.Errorf("write %s: %w", key, err)
	}
	return false, nil
}

func readSmall(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return data, nil
}

// errText is an error's message without Go's wrapping noise.
func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Path + ": " + pe.Err.Error()
	}
	return err.Error()
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
