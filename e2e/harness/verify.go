package harness

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Same says how strictly CompareImages compares. Image content (the
// uncompressed bytes of every layer, in order) is always compared; the
// fields add byte identity of the encoded forms, which holds for clients
// that copy blobs unchanged (skopeo, crane) but not for ones that
// recompress layers (docker, podman).
type Same struct {
	// Manifest: the manifest bytes (hence digest) are identical.
	Manifest bool
	// LayerBlobs: every compressed layer blob has the same digest.
	LayerBlobs bool
	// Config: the config blob is byte-identical (docker and podman keep it:
	// it is their image ID).
	Config bool
}

// Exact is the strictest comparison: everything byte-identical.
var Exact = Same{Manifest: true, LayerBlobs: true, Config: true}

// CompareImages reads every blob of got (checking each against its digest
// while reading) and compares it with want. It returns nil when they match.
func CompareImages(got, want v1.Image, same Same) error {
	if same.Manifest {
		gm, err := got.RawManifest()
		if err != nil {
			return fmt.Errorf("got manifest: %w", err)
		}
		wm, err := want.RawManifest()
		if err != nil {
			return fmt.Errorf("want manifest: %w", err)
		}
		if !bytes.Equal(gm, wm) {
			return fmt.Errorf("manifests differ:\n got %s\nwant %s", gm, wm)
		}
	}
	gc, err := got.RawConfigFile()
	if err != nil {
		return fmt.Errorf("got config: %w", err)
	}
	gcn, err := got.ConfigName()
	if err != nil {
		return fmt.Errorf("got config name: %w", err)
	}
	if d := sha256Hash(gc); d != gcn {
		return fmt.Errorf("config blob hashes to %s, manifest says %s", d, gcn)
	}
	if same.Config {
		wcn, err := want.ConfigName()
		if err != nil {
			return fmt.Errorf("want config name: %w", err)
		}
		if gcn != wcn {
			return fmt.Errorf("config digest %s, want %s", gcn, wcn)
		}
	}
	gls, err := got.Layers()
	if err != nil {
		return fmt.Errorf("got layers: %w", err)
	}
	wls, err := want.Layers()
	if err != nil {
		return fmt.Errorf("want layers: %w", err)
	}
	if len(gls) != len(wls) {
		return fmt.Errorf("%d layers, want %d", len(gls), len(wls))
	}
	for i := range gls {
		if err := compareLayer(gls[i], wls[i], same.LayerBlobs); err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return nil
}

func compareLayer(got, want v1.Layer, sameBlob bool) error {
	gd, err := got.Digest()
	if err != nil {
		return fmt.Errorf("got digest: %w", err)
	}
	if sameBlob {
		wd, err := want.Digest()
		if err != nil {
			return fmt.Errorf("want digest: %w", err)
		}
		if gd != wd {
			return fmt.Errorf("blob digest %s, want %s", gd, wd)
		}
	}
	rc, err := got.Compressed()
	if err != nil {
		return fmt.Errorf("open blob %s: %w", gd, err)
	}
	h, n, err := hashReader(rc)
	if err != nil {
		return fmt.Errorf("read blob %s: %w", gd, err)
	}
	if gd.Algorithm == "sha256" && h != gd {
		return fmt.Errorf("blob %s has content hashing to %s (%d bytes)", gd, h, n)
	}
	wantDiff, err := want.DiffID()
	if err != nil {
		return fmt.Errorf("want diff id: %w", err)
	}
	rc, err = got.Uncompressed()
	if err != nil {
		return fmt.Errorf("open uncompressed %s: %w", gd, err)
	}
	h, _, err = hashReader(rc)
	if err != nil {
		return fmt.Errorf("read uncompressed %s: %w", gd, err)
	}
	if h != wantDiff {
		return fmt.Errorf("uncompressed content hashes to %s, want %s", h, wantDiff)
	}
	return nil
}

// CompareIndexes compares two image indexes: identical index manifests and
// every child image byte-identical.
func CompareIndexes(got, want v1.ImageIndex) error {
	gm, err := got.RawManifest()
	if err != nil {
		return fmt.Errorf("got index: %w", err)
	}
	wm, err := want.RawManifest()
	if err != nil {
		return fmt.Errorf("want index: %w", err)
	}
	if !bytes.Equal(gm, wm) {
		return fmt.Errorf("index manifests differ:\n got %s\nwant %s", gm, wm)
	}
	im, err := want.IndexManifest()
	if err != nil {
		return fmt.Errorf("want index manifest: %w", err)
	}
	for _, d := range im.Manifests {
		gi, err := got.Image(d.Digest)
		if err != nil {
			return fmt.Errorf("got child %s: %w", d.Digest, err)
		}
		wi, err := want.Image(d.Digest)
		if err != nil {
			return fmt.Errorf("want child %s: %w", d.Digest, err)
		}
		if err := CompareImages(gi, wi, Exact); err != nil {
			return fmt.Errorf("child %s (%v): %w", d.Digest, d.Platform, err)
		}
	}
	return nil
}

func hashReader(rc io.ReadCloser) (v1.Hash, int64, error) {
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return v1.Hash{}, n, err
	}
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}, n, nil
}

func sha256Hash(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// Ref parses an image reference to a plain-HTTP-capable name.Reference.
func Ref(t testing.TB, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure, name.StrictValidation)
	if err != nil {
		t.Fatalf("reference %q: %v", s, err)
	}
	return r
}

// RemoteOptions are the go-containerregistry options the harness uses:
// anonymous, a fresh transport (no pooled connections to a killed server).
// extra options come last, so they override these.
func RemoteOptions(extra ...remote.Option) []remote.Option {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return append([]remote.Option{remote.WithTransport(tr)}, extra...)
}

// TLSTransport is a fresh transport that trusts only roots (e.g. Pebble's
// issuing root), for proving certificate verification.
func TLSTransport(roots *x509.CertPool) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return tr
}

// RemoteImage fetches an image manifest from a registry (blobs are fetched
// lazily when compared).
func RemoteImage(t testing.TB, ref string, opts ...remote.Option) v1.Image {
	t.Helper()
	img, err := remote.Image(Ref(t, ref), RemoteOptions(opts...)...)
	if err != nil {
		t.Fatalf("fetch image %s: %v", ref, err)
	}
	return img
}

// VerifyRemoteImage fetches ref with go-containerregistry, reads every blob
// and compares it with want. It returns the manifest digest.
// Extra options (e.g. remote.WithTransport(TLSTransport(roots))) override
// the defaults.
func VerifyRemoteImage(t testing.TB, ref string, want v1.Image, same Same, opts ...remote.Option) v1.Hash {
	t.Helper()
	img := RemoteImage(t, ref, opts...)
	if err := CompareImages(img, want, same); err != nil {
		t.Fatalf("image %s in the registry is not what was pushed: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("digest of %s: %v", ref, err)
	}
	return d
}

// VerifyRemoteIndex fetches an index and all its children and compares them
// with want byte for byte.
func VerifyRemoteIndex(t testing.TB, ref string, want v1.ImageIndex, opts ...remote.Option) {
	t.Helper()
	idx, err := remote.Index(Ref(t, ref), RemoteOptions(opts...)...)
	if err != nil {
		t.Fatalf("fetch index %s: %v", ref, err)
	}
	if err := CompareIndexes(idx, want); err != nil {
		t.Fatalf("index %s in the registry is not what was pushed: %v", ref, err)
	}
}

// MustDigest returns an image's or index's manifest digest.
func MustDigest(t testing.TB, x interface{ Digest() (v1.Hash, error) }) v1.Hash {
	t.Helper()
	d, err := x.Digest()
	if err != nil {
		t.Fatalf("digest: %v", err)
	}
	return d
}

// DiffIDs returns an image's uncompressed layer digests from its config.
func DiffIDs(t testing.TB, img v1.Image) []v1.Hash {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cf.RootFS.DiffIDs
}

// MustDigestOf calls a digest-returning method (such as img.ConfigName) and
// fails the test on error.
func MustDigestOf(t testing.TB, f func() (v1.Hash, error)) v1.Hash {
	t.Helper()
	d, err := f()
	if err != nil {
		t.Fatalf("digest: %v", err)
	}
	return d
}
