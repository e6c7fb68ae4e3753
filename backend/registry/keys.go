package registry

import (
	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/storage/layout"
)

// Record keys, kept as thin aliases of package layout (which owns them)
// for code written against them before layout existed (the storage
// migration). New code calls layout directly.

// BlobRecordKey is layout.BlobLink.
//
// Deprecated: use layout.BlobLink.
func BlobRecordKey(d digest.Digest) string { return layout.BlobLink(d) }

// ManifestRecordKey is layout.Manifest.
//
// Deprecated: use layout.Manifest.
func ManifestRecordKey(d digest.Digest) string { return layout.Manifest(d) }

// TagRecordKey is layout.Tag.
//
// Deprecated: use layout.Tag.
func TagRecordKey(tag string) string { return layout.Tag(tag) }

// ReferrerRecordKey is layout.Referrer.
//
// Deprecated: use layout.Referrer.
func ReferrerRecordKey(subject, d digest.Digest) string { return layout.Referrer(subject, d) }
