package registry

import digest "github.com/opencontainers/go-digest"

// Record keys of the registry's storage layout, exported for tools that
// write a registry root without going through the HTTP API (wharf import,
// package importer), so that both always agree on the layout.

// BlobRecordKey is the record that lets a repository use blob d.
func BlobRecordKey(d digest.Digest) string { return blobKey(d) }

// ManifestRecordKey is the record saying a repository holds manifest d;
// its value is the manifest's media type.
func ManifestRecordKey(d digest.Digest) string { return manifestKey(d) }

// TagRecordKey is the record of a tag; its value is the digest it names.
func TagRecordKey(tag string) string { return tagKey(tag) }

// ReferrerRecordKey is the record listing manifest d as a referrer of
// subject; its value is d's descriptor as JSON.
func ReferrerRecordKey(subject, d digest.Digest) string { return referrerKey(subject, d) }
