package ui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/layout"
)

// Store is what the UI reads of a site's store: records, blobs (manifests
// and configs) and the times of records (last push). It never writes;
// deletes go through Config.Delete, the API's own path. The record keys
// are package layout's, shared by the registry and the cache (a tag holds
// the digest as text in the registry, a JSON record with the digest and
// when it was checked in the cache).
type Store interface {
	storage.RecordReader
	storage.BlobReader
	storage.Times
}

// maxConfigSize bounds the image config blobs the UI reads (they are small
// JSON documents; anything bigger is not an image config worth showing).
const maxConfigSize = 4 << 20

// browser reads what the pages show from one site's store. Manifests and
// configs are immutable (named by digest), so their parsed summaries are
// kept in an LRU; tags, records and times are read from the store on every
// page, so a page never shows a deleted tag.
type browser struct {
	st    Store
	cache *lru.Cache[digest.Digest, *summary]
}

func newBrowser(st Store, size int) *browser {
	c, _ := lru.New[digest.Digest, *summary](size) // size > 0 always
	return &browser{st: st, cache: c}
}

// summary is the parsed form of one manifest (image, index or artifact).
type summary struct {
	Digest       digest.Digest
	MediaType    string
	Size         int64 // of the manifest itself
	ArtifactType string
	Config       *backend.Descriptor
	Layers       []backend.Descriptor
	Manifests    []backend.Descriptor
	Subject      *backend.Descriptor
	Annotations  map[string]string
	Image        *imageConfig // nil unless Config is an image config that could be read
}

// IsIndex reports whether the manifest lists other manifests.
func (s *summary) IsIndex() bool { return backend.IsIndex(s.MediaType) || len(s.Manifests) > 0 }

// imageConfig is the part of an image config blob the pages show.
type imageConfig struct {
	Created      time.Time `json:"created"`
	Architecture string    `json:"architecture"`
	OS           string    `json:"os"`
	Variant      string    `json:"variant"`
	Config       struct {
		Entrypoint   []string            `json:"Entrypoint"`
		Cmd          []string            `json:"Cmd"`
		Env          []string            `json:"Env"`
		ExposedPorts map[string]struct{} `json:"ExposedPorts"`
		Labels       map[string]string   `json:"Labels"`
		WorkingDir   string              `json:"WorkingDir"`
		User         string              `json:"User"`
	} `json:"config"`
	History []struct {
		Created    time.Time `json:"created"`
		CreatedBy  string    `json:"created_by"`
		Comment    string    `json:"comment"`
		EmptyLayer bool      `json:"empty_layer"`
	} `json:"history"`
}

// Ports lists the exposed ports, sorted.
func (c *imageConfig) Ports() []string {
	out := make([]string, 0, len(c.Config.ExposedPorts))
	for p := range c.Config.ExposedPorts {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func isImageConfig(mt string) bool {
	return mt == "application/vnd.oci.image.config.v1+json" || mt == "application/vnd.docker.container.image.v1+json"
}

// manifest returns the summary of manifest d of repo, or storage.ErrNotFound
// when the repository does not hold it.
func (b *browser) manifest(ctx context.Context, repo string, d digest.Digest) (*summary, error) {
	mt, err := b.st.GetRecord(ctx, repo, layout.Manifest(d))
	if err != nil {
		return nil, err
	}
	return b.content(ctx, d, string(mt))
}

// content parses manifest blob d (through the LRU).
func (b *browser) content(ctx context.Context, d digest.Digest, mediaType string) (*summary, error) {
	if s, ok := b.cache.Get(d); ok {
		return s, nil
	}
	data, err := storage.ReadBlob(ctx, b.st, d, backend.MaxManifestSize)
	if err != nil {
		return nil, err
	}
	var m backend.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", d, err)
	}
	s := &summary{
		Digest: d, MediaType: mediaType, Size: int64(len(data)),
		ArtifactType: m.ArtifactType, Config: m.Config, Layers: m.Layers,
		Manifests: m.Manifests, Subject: m.Subject, Annotations: m.Annotations,
	}
	if s.MediaType == "" {
		s.MediaType = m.MediaType
	}
	keep := true
	if m.Config != nil && isImageConfig(m.Config.MediaType) && m.Config.Size <= maxConfigSize {
		raw, err := storage.ReadBlob(ctx, b.st, m.Config.Digest, maxConfigSize)
		if err == nil {
			var ic imageConfig
			if json.Unmarshal(raw, &ic) == nil {
				s.Image = &ic
			}
		}
		// a cache may hold a manifest whose config nobody pulled yet: read
		// again next time instead of remembering the gap
		keep = !errors.Is(err, storage.ErrNotFound)
	}
	if keep {
		b.cache.Add(d, s)
	}
	return s, nil
}

// total is the compressed size of everything a pull of s fetches: the
// config and the layers of an image; for an index, every listed manifest
// with its own content (children not in the store count by their
// descriptor's size only).
func (b *browser) total(ctx context.Context, repo string, s *summary) int64 {
	n := s.Size
	if s.Config != nil {
		n += s.Config.Size
	}
	for _, l := range s.Layers {
		n += l.Size
	}
	for _, c := range s.Manifests {
		if cs, err := b.manifest(ctx, repo, c.Digest); err == nil && !cs.IsIndex() {
			n += b.total(ctx, repo, cs)
		} else {
			n += c.Size
		}
	}
	return n
}

// blobsOf adds to set every blob digest and size a pull of s fetches (the
// repository's size counts each blob once however many tags share it).
func (b *browser) blobsOf(ctx context.Context, repo string, s *summary, set map[digest.Digest]int64, depth int) {
	set[s.Digest] = s.Size
	if s.Config != nil {
		set[s.Config.Digest] = s.Config.Size
	}
	for _, l := range s.Layers {
		set[l.Digest] = l.Size
	}
	for _, c := range s.Manifests {
		if depth > 0 {
			if cs, err := b.manifest(ctx, repo, c.Digest); err == nil {
				b.blobsOf(ctx, repo, cs, set, depth-1)
				continue
			}
		}
		set[c.Digest] = c.Size
	}
}

// tagRef is where a tag points, read from its record.
type tagRef struct {
	Name    string
	Digest  digest.Digest
	Pushed  time.Time // the record's modification time: pushed (registry) or last pulled (cache)
	Checked time.Time // cache only: when the upstream last confirmed the tag
}

// readTag reads a tag record in either layout (digest text or the cache's
// JSON record) and its modification time.
func (b *browser) readTag(ctx context.Context, repo, tag string) (tagRef, error) {
	t, err := b.tagDigest(ctx, repo, tag)
	if err != nil {
		return t, err
	}
	if mt, err := b.st.StatRecord(ctx, repo, layout.Tag(tag)); err == nil {
		t.Pushed = mt
	}
	return t, nil
}

// tagDigest reads where a tag points (no time: one read, no stat).
func (b *browser) tagDigest(ctx context.Context, repo, tag string) (tagRef, error) {
	raw, err := b.st.GetRecord(ctx, repo, layout.Tag(tag))
	if err != nil {
		return tagRef{}, err
	}
	t := tagRef{Name: tag}
	txt := strings.TrimSpace(string(raw))
	if strings.HasPrefix(txt, "{") {
		var rec struct {
			Digest  digest.Digest `json:"digest"`
			Checked time.Time     `json:"checked"`
		}
		if err := json.Unmarshal(raw, &rec); err != nil {
			return t, fmt.Errorf("tag %s: %w", tag, err)
		}
		t.Digest, t.Checked = rec.Digest, rec.Checked
	} else {
		t.Digest = digest.Digest(txt)
	}
	if t.Digest.Validate() != nil {
		return t, fmt.Errorf("tag %s holds a bad digest", tag)
	}
	return t, nil
}

// repoInfo is one row of the repositories page.
type repoInfo struct {
	Name     string
	Tags     int
	Size     int64
	NoSize   bool // more tags than sizeTagLimit: the size was not summed
	LastPush time.Time
}

// sizeTagLimit is how many tags a repository may have for the
// repositories page to sum its size (reading every tag and manifest);
// beyond it the row shows the last push only (one stat per tag).
const sizeTagLimit = 500

// repo summarises one repository: tag count, last push and the size of
// the distinct blobs its tags reach.
func (b *browser) repo(ctx context.Context, name string) (repoInfo, error) {
	ri := repoInfo{Name: name}
	tags, err := layout.Tags(ctx, b.st, name)
	if err != nil {
		return ri, err
	}
	ri.Tags = len(tags)
	if len(tags) > sizeTagLimit {
		ri.NoSize = true
		for _, tg := range tags {
			if mt, err := b.st.StatRecord(ctx, name, layout.Tag(tg)); err == nil && mt.After(ri.LastPush) {
				ri.LastPush = mt
			}
		}
		return ri, nil
	}
	set := map[digest.Digest]int64{}
	for _, tg := range tags {
		t, err := b.readTag(ctx, name, tg)
		if err != nil {
			continue // deleted meanwhile, or unreadable: the tags page says more
		}
		if t.Pushed.After(ri.LastPush) {
			ri.LastPush = t.Pushed
		}
		if s, err := b.manifest(ctx, name, t.Digest); err == nil {
			b.blobsOf(ctx, name, s, set, 1)
		}
	}
	for _, n := range set {
		ri.Size += n
	}
	return ri, nil
}

// exists reports whether repo holds any tag or manifest.
func (b *browser) exists(ctx context.Context, repo string) (bool, error) {
	for _, dir := range []string{layout.TagsDir, layout.ManifestsDir} {
		l, err := b.st.ListRecords(ctx, repo, dir)
		if err != nil {
			return false, err
		}
		if len(l) > 0 {
			return true, nil
		}
	}
	return false, nil
}

// tagsOf lists those of the tags names of repo that point at d (one read
// each).
func (b *browser) tagsOf(ctx context.Context, repo string, d digest.Digest, names []string) []string {
	var out []string
	for _, n := range names {
		if t, err := b.tagDigest(ctx, repo, n); err == nil && t.Digest == d {
			out = append(out, n)
		}
	}
	return out
}

// referrers lists the descriptors that name d as their subject, sorted by
// artifact type.
func (b *browser) referrers(ctx context.Context, repo string, d digest.Digest) []backend.Descriptor {
	refs, err := layout.ReferrersOfSubject(ctx, b.st, repo, d)
	if err != nil {
		return nil
	}
	var out []backend.Descriptor
	for _, ref := range refs {
		raw, err := b.st.GetRecord(ctx, repo, layout.Referrer(d, ref))
		if err != nil {
			continue
		}
		var desc backend.Descriptor
		if json.Unmarshal(raw, &desc) == nil && desc.Digest.Validate() == nil {
			out = append(out, desc)
		}
	}
	slices.SortStableFunc(out, func(a, b backend.Descriptor) int { return strings.Compare(a.ArtifactType, b.ArtifactType) })
	return out
}
