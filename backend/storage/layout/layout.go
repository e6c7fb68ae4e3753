// Package layout owns the keys of the per-repository records that the
// registry, the cache, garbage collection, cache eviction, retention, the
// importer and the web UI read and write through storage.Records. No other
// package spells a record key or directory; they call the functions here,
// and Parse turns a key back into what it names.
//
//	key                                          value
//	blobs/<alg>/<hex>                            empty: the repository may use blob <alg>:<hex>
//	manifests/<alg>/<hex>                        the repository holds manifest (revision) <alg>:<hex>; its media type
//	tags/<tag>                                   registry: the digest the tag names; cache: JSON (upstream answer)
//	referrers/<alg>/<subject hex>/<alg>-<hex>    manifest <alg>:<hex> names the subject; its descriptor (JSON)
//
// How a store maps these keys onto files or objects (localfs prefixes the
// directories with "_" under repositories/<name>/, s3store puts them under
// its prefix) is the store's business; blob content and upload sessions
// are not records and are laid out by each store.
package layout

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/storage"
)

// The record directories directly below a repository.
const (
	BlobsDir     = "blobs"     // links to blobs the repository may use
	ManifestsDir = "manifests" // manifest revisions
	TagsDir      = "tags"      // tags
	ReferrersDir = "referrers" // referrers, by subject
)

// BlobLink is the record that lets a repository use blob d.
func BlobLink(d digest.Digest) string { return DigestKey(BlobsDir, d) }

// Manifest is the record saying a repository holds manifest d; its value
// is the manifest's media type.
func Manifest(d digest.Digest) string { return DigestKey(ManifestsDir, d) }

// Tag is the record of a tag.
func Tag(tag string) string { return TagsDir + "/" + tag }

// ReferrersOf is the directory of the referrer records of subject.
func ReferrersOf(subject digest.Digest) string { return DigestKey(ReferrersDir, subject) }

// Referrer is the record listing manifest d as a referrer of subject; its
// value is d's descriptor as JSON.
func Referrer(subject, d digest.Digest) string {
	return ReferrersOf(subject) + "/" + referrerName(d)
}

// DigestKey is the record of d in dir: BlobLink for BlobsDir, Manifest for
// ManifestsDir, ReferrersOf for ReferrersDir (for listings that walk one
// of them).
func DigestKey(dir string, d digest.Digest) string {
	return dir + "/" + string(d.Algorithm()) + "/" + d.Encoded()
}

// referrerName is the last element of a referrer record: one path
// element, so "<alg>-<hex>" (a digest's ":" is not portable in file names).
func referrerName(d digest.Digest) string { return string(d.Algorithm()) + "-" + d.Encoded() }

// Kind says what a record key names.
type Kind int

// Kinds of records.
const (
	KindBlobLink Kind = iota + 1
	KindManifest
	KindTag
	KindReferrer
)

var kindNames = [...]string{KindBlobLink: "blob link", KindManifest: "manifest", KindTag: "tag", KindReferrer: "referrer"}

func (k Kind) String() string {
	if k > 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Key is a parsed record key.
type Key struct {
	Kind    Kind
	Digest  digest.Digest // blob links, manifests, referrers (the referrer)
	Tag     string        // tags
	Subject digest.Digest // referrers
}

// String is the record key k names (the inverse of Parse).
func (k Key) String() string {
	switch k.Kind {
	case KindBlobLink:
		return BlobLink(k.Digest)
	case KindManifest:
		return Manifest(k.Digest)
	case KindTag:
		return Tag(k.Tag)
	case KindReferrer:
		return Referrer(k.Subject, k.Digest)
	}
	return ""
}

// ErrBadKey: Parse was given a key that the layout never writes.
var ErrBadKey = errors.New("not a record key of the layout")

// tagRE is the tag grammar of the OCI distribution spec; the router admits
// no other tag, so no other tag record is ever written.
var tagRE = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)

// ValidTag reports whether tag is a tag the layout can hold.
func ValidTag(tag string) bool { return tagRE.MatchString(tag) }

// Parse turns a record key back into what it names; ErrBadKey for anything
// BlobLink, Manifest, Tag or Referrer never return (including digests of
// algorithms not compiled in and non-canonical hex).
func Parse(key string) (Key, error) {
	dir, rest, _ := strings.Cut(key, "/")
	bad := func() (Key, error) { return Key{}, fmt.Errorf("%q: %w", clip(key), ErrBadKey) }
	switch dir {
	case TagsDir:
		if !ValidTag(rest) {
			return bad()
		}
		return Key{Kind: KindTag, Tag: rest}, nil
	case BlobsDir, ManifestsDir:
		d, ok := parseDigestPath(rest)
		if !ok {
			return bad()
		}
		kind := KindBlobLink
		if dir == ManifestsDir {
			kind = KindManifest
		}
		return Key{Kind: kind, Digest: d}, nil
	case ReferrersDir:
		i := strings.LastIndexByte(rest, '/')
		if i < 0 {
			return bad()
		}
		s, ok := parseDigestPath(rest[:i])
		if !ok {
			return bad()
		}
		d, ok := ParseReferrerName(rest[i+1:])
		if !ok {
			return bad()
		}
		return Key{Kind: KindReferrer, Digest: d, Subject: s}, nil
	}
	return bad()
}

// parseDigestPath parses "<alg>/<hex>".
func parseDigestPath(p string) (digest.Digest, bool) {
	alg, hex, ok := strings.Cut(p, "/")
	if !ok {
		return "", false
	}
	return ParseDigestName(alg, hex)
}

// ParseDigestName turns the two path elements "<alg>" and "<hex>" of a
// blob link, manifest or referrer subject into a digest; false if they
// are none the layout writes.
func ParseDigestName(alg, hex string) (digest.Digest, bool) {
	d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
	if strings.ContainsRune(alg, '/') || d.Validate() != nil {
		return "", false
	}
	return d, true
}

// ParseReferrerName turns the last element of a referrer record
// ("<alg>-<hex>") into the referrer's digest.
func ParseReferrerName(name string) (digest.Digest, bool) {
	alg, hex, ok := strings.Cut(name, "-")
	if !ok {
		return "", false
	}
	return ParseDigestName(alg, hex)
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// Digests lists the records dir/<alg>/<hex> of repo (dir is BlobsDir,
// ManifestsDir, or ReferrersDir for the subjects) as digests, in the
// store's order; names that are no valid digest are skipped (nothing
// writes them).
func Digests(ctx context.Context, st storage.RecordReader, repo, dir string) ([]digest.Digest, error) {
	algs, err := st.ListRecords(ctx, repo, dir)
	if err != nil {
		return nil, err
	}
	var out []digest.Digest
	for _, a := range algs {
		hexes, err := st.ListRecords(ctx, repo, dir+"/"+a)
		if err != nil {
			return nil, err
		}
		for _, h := range hexes {
			if d, ok := ParseDigestName(a, h); ok {
				out = append(out, d)
			}
		}
	}
	return out, nil
}

// Tags lists the tag names of repo, sorted.
func Tags(ctx context.Context, st storage.RecordReader, repo string) ([]string, error) {
	return st.ListRecords(ctx, repo, TagsDir)
}

// ReferrersOfSubject lists the manifests of repo that name subject.
func ReferrersOfSubject(ctx context.Context, st storage.RecordReader, repo string, subject digest.Digest) ([]digest.Digest, error) {
	names, err := st.ListRecords(ctx, repo, ReferrersOf(subject))
	if err != nil {
		return nil, err
	}
	out := make([]digest.Digest, 0, len(names))
	for _, n := range names {
		if d, ok := ParseReferrerName(n); ok {
			out = append(out, d)
		}
	}
	return out, nil
}

// Referrers lists every referrer record of repo: subject -> the manifests
// that name it.
func Referrers(ctx context.Context, st storage.RecordReader, repo string) (map[digest.Digest][]digest.Digest, error) {
	subjects, err := Digests(ctx, st, repo, ReferrersDir)
	if err != nil {
		return nil, err
	}
	out := make(map[digest.Digest][]digest.Digest, len(subjects))
	for _, s := range subjects {
		ds, err := ReferrersOfSubject(ctx, st, repo, s)
		if err != nil {
			return nil, err
		}
		if len(ds) > 0 {
			out[s] = ds
		}
	}
	return out, nil
}

// RepoExists reports whether repo holds a tag, a manifest or a blob link.
func RepoExists(ctx context.Context, st storage.RecordReader, repo string) (bool, error) {
	for _, dir := range []string{TagsDir, ManifestsDir, BlobsDir} {
		l, err := st.ListRecords(ctx, repo, dir)
		if err != nil {
			return false, err
		}
		if len(l) > 0 {
			return true, nil
		}
	}
	return false, nil
}
