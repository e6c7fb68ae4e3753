package registry

import (
	lru "github.com/hashicorp/golang-lru/v2"
	digest "github.com/opencontainers/go-digest"
)

// The cache keeps the bytes of recently used small manifests, keyed by
// digest, so a manifest GET or HEAD reads two small record files (tag,
// revision link) and no manifest file. Content under a digest never
// changes, so the cache can never be stale; tags and links are always read
// from the store, so several Registry values on one root (a config reload
// opens the new one before the old one has drained) always agree.
const (
	cacheManifests       = 1024
	cacheMaxManifestSize = 32 << 10 // bigger manifests are read from disk each time (<= 32 MiB cached in all)
)

type cachedManifest struct {
	digest    digest.Digest
	mediaType string
	data      []byte
}

type cache struct {
	content *lru.Cache[digest.Digest, []byte]
}

func newCache() *cache {
	c, _ := lru.New[digest.Digest, []byte](cacheManifests)
	return &cache{content: c}
}

func (c *cache) get(d digest.Digest) ([]byte, bool) { return c.content.Get(d) }

func (c *cache) add(d digest.Digest, data []byte) {
	if len(data) <= cacheMaxManifestSize {
		c.content.Add(d, data)
	}
}
