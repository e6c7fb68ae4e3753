package layout

import (
	"context"
	"errors"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/storage/localfs"
)

var (
	d256 = digest.FromString("a")
	d512 = digest.SHA512.FromString("b")
)

func TestKeysRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want Key
	}{
		{BlobLink(d256), Key{Kind: KindBlobLink, Digest: d256}},
		{BlobLink(d512), Key{Kind: KindBlobLink, Digest: d512}},
		{Manifest(d256), Key{Kind: KindManifest, Digest: d256}},
		{Tag("latest"), Key{Kind: KindTag, Tag: "latest"}},
		{Tag("_v1.2-rc.3"), Key{Kind: KindTag, Tag: "_v1.2-rc.3"}},
		{Tag(strings.Repeat("x", 128)), Key{Kind: KindTag, Tag: strings.Repeat("x", 128)}},
		{Referrer(d256, d512), Key{Kind: KindReferrer, Subject: d256, Digest: d512}},
	} {
		got, err := Parse(tc.key)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.key, err)
			continue
		}
		if got != tc.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tc.key, got, tc.want)
		}
		if s := got.String(); s != tc.key {
			t.Errorf("Parse(%q).String() = %q", tc.key, s)
		}
	}
}

// The keys are the on-disk and in-bucket format: they must never change.
func TestKeysAreStable(t *testing.T) {
	hex := d256.Encoded()
	for got, want := range map[string]string{
		BlobLink(d256):       "blobs/sha256/" + hex,
		Manifest(d256):       "manifests/sha256/" + hex,
		Tag("v1"):            "tags/v1",
		ReferrersOf(d256):    "referrers/sha256/" + hex,
		Referrer(d256, d256): "referrers/sha256/" + hex + "/sha256-" + hex,
	} {
		if got != want {
			t.Errorf("key %q, want %q", got, want)
		}
	}
}

func TestParseRejects(t *testing.T) {
	hex := d256.Encoded()
	for _, key := range []string{
		"",
		"tags",
		"tags/",
		"tags/a/b",
		"tags/-x",
		"tags/" + strings.Repeat("x", 129),
		"blobs/sha256",
		"blobs/sha256/",
		"blobs/sha256/" + strings.ToUpper(hex),
		"blobs/sha256/" + hex[:63],
		"blobs/md5/" + hex,
		"blobs/sha256/" + hex + "/x",
		"manifests//" + hex,
		"referrers/sha256/" + hex,
		"referrers/sha256/" + hex + "/sha256:" + hex,
		"referrers/sha256/" + hex + "/sha256-" + hex + "/x",
		"uploads/abc/data",
		"_tags/latest",
	} {
		if k, err := Parse(key); !errors.Is(err, ErrBadKey) {
			t.Errorf("Parse(%q) = %+v, %v; want ErrBadKey", key, k, err)
		}
	}
}

// FuzzParse: whatever Parse accepts, it gives back the same key, and the
// key built from the result parses to the same result.
func FuzzParse(f *testing.F) {
	f.Add(BlobLink(d256))
	f.Add(Referrer(d256, d512))
	f.Fuzz(func(t *testing.T, key string) {
		k, err := Parse(key)
		if err != nil {
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("Parse(%q): %v, not ErrBadKey", key, err)
			}
			return
		}
		if s := k.String(); s != key {
			t.Fatalf("Parse(%q).String() = %q", key, s)
		}
		k2, err := Parse(k.String())
		if err != nil || k2 != k {
			t.Fatalf("Parse(Parse(%q).String()) = %+v, %v; want %+v", key, k2, err, k)
		}
	})
}

// The listing helpers against a real store: what the key functions write,
// the listings find again.
func TestListings(t *testing.T) {
	ctx := context.Background()
	st, err := localfs.New(localfs.Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	other := digest.FromString("other")
	put := func(key string) {
		t.Helper()
		if err := st.PutRecord(ctx, "a/b", key, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	put(BlobLink(d256))
	put(BlobLink(d512))
	put(Manifest(d256))
	put(Tag("v1"))
	put(Tag("v2"))
	put(Referrer(d256, d512))
	put(Referrer(d256, other))

	blobs, err := Digests(ctx, st, "a/b", BlobsDir)
	if err != nil || len(blobs) != 2 {
		t.Fatalf("Digests(blobs) = %v, %v", blobs, err)
	}
	if got := map[digest.Digest]bool{blobs[0]: true, blobs[1]: true}; !got[d256] || !got[d512] {
		t.Errorf("Digests(blobs) = %v", blobs)
	}
	if ms, err := Digests(ctx, st, "a/b", ManifestsDir); err != nil || len(ms) != 1 || ms[0] != d256 {
		t.Errorf("Digests(manifests) = %v, %v", ms, err)
	}
	if tags, err := Tags(ctx, st, "a/b"); err != nil || strings.Join(tags, ",") != "v1,v2" {
		t.Errorf("Tags = %v, %v", tags, err)
	}
	refs, err := Referrers(ctx, st, "a/b")
	if err != nil || len(refs) != 1 || len(refs[d256]) != 2 {
		t.Fatalf("Referrers = %v, %v", refs, err)
	}
	if ok, err := RepoExists(ctx, st, "a/b"); !ok || err != nil {
		t.Errorf("RepoExists(a/b) = %v, %v", ok, err)
	}
	if ok, err := RepoExists(ctx, st, "nothing"); ok || err != nil {
		t.Errorf("RepoExists(nothing) = %v, %v", ok, err)
	}
	if ds, err := Digests(ctx, st, "nothing", ManifestsDir); err != nil || len(ds) != 0 {
		t.Errorf("Digests of an absent repository = %v, %v", ds, err)
	}
}
