package registry

import (
	lru "github.com/hashicorp/golang-lru/v2"
	digest "github.com/opencontainers/go-digest"
)

// The cache keeps hot tag->digest answers and small manifests in memory so
// a manifest HEAD or GET costs no file system call. It is filled on reads
// and on pushes and cleared on deletes made through this process (one
// wharf process owns a root directory).
const (
	cacheTags            = 4096
	cacheManifests       = 512
	cacheMaxManifestSize = 64 << 10 // bigger manifests are read from disk each time (<= 32 MiB cached in all)
)

type cachedManifest struct {
	digest    digest.Digest
	mediaType string
	data      []byte
}

type cache struct {
	tags      *lru.Cache[string, digest.Digest]
	manifests *lru.Cache[string, *cachedManifest]
}

func newCache() *cache {
	t, _ := lru.New[string, digest.Digest](cacheTags)
	m, _ := lru.New[string, *cachedManifest](cacheManifests)
	return &cache{tags: t, manifests: m}
}

func (c *cache) tag(repo, tag string) (digest.Digest, bool) { return c.tags.Get(repo + ":" + tag) }
func (c *cache) setTag(repo, tag string, d digest.Digest)   { c.tags.Add(repo+":"+tag, d) }
func (c *cache) dropTag(repo, tag string)                   { c.tags.Remove(repo + ":" + tag) }

func (c *cache) manifest(repo string, d digest.Digest) (*cachedManifest, bool) {
	return c.manifests.Get(repo + "@" + string(d))
}

func (c *cache) setManifest(repo string, m *cachedManifest) {
	if len(m.data) <= cacheMaxManifestSize {
		c.manifests.Add(repo+"@"+string(m.digest), m)
	}
}

func (c *cache) dropManifest(repo string, d digest.Digest) {
	c.manifests.Remove(repo + "@" + string(d))
}
