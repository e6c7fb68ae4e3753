package harness

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ImageFormat selects the media types of a generated image.
type ImageFormat int

// Image formats: Docker schema 2 (what `docker push` writes) and OCI.
const (
	DockerFormat ImageFormat = iota
	OCIFormat
)

// RandomImage returns a new image of `layers` layers of random content,
// each about layerSize bytes (random bytes do not compress, so pushes move
// about layers*layerSize bytes), for the given platform ("linux/amd64").
// Every call makes different content.
func RandomImage(t testing.TB, format ImageFormat, platform string, layers int, layerSize int64) v1.Image {
	t.Helper()
	img, err := randomImage(format, platform, layers, layerSize)
	if err != nil {
		t.Fatalf("random image: %v", err)
	}
	return img
}

func randomImage(format ImageFormat, platform string, layers int, layerSize int64) (v1.Image, error) {
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		return nil, fmt.Errorf("platform %q: %w", platform, err)
	}
	layerType := types.DockerLayer
	if format == OCIFormat {
		layerType = types.OCILayer
	}
	cfg := &v1.ConfigFile{
		Architecture: p.Architecture,
		OS:           p.OS,
		Variant:      p.Variant,
		Created:      v1.Time{Time: time.Now().UTC().Truncate(time.Second)},
		Config:       v1.Config{Cmd: []string{"/bin/true"}, Env: []string{"PATH=/bin"}},
		RootFS:       v1.RootFS{Type: "layers"},
	}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if format == OCIFormat {
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	for i := 0; i < layers; i++ {
		l, err := random.Layer(layerSize, layerType)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		img, err = mutate.Append(img, mutate.Addendum{Layer: l, History: v1.History{CreatedBy: fmt.Sprintf("wharf e2e layer %d", i)}})
		if err != nil {
			return nil, fmt.Errorf("append layer %d: %w", i, err)
		}
	}
	return img, nil
}

// RandomIndex returns an OCI image index with one random OCI image per
// platform ("linux/amd64", "linux/arm64/v8", ...), each child's descriptor
// carrying its platform.
func RandomIndex(t testing.TB, platforms []string, layers int, layerSize int64) v1.ImageIndex {
	t.Helper()
	var idx v1.ImageIndex = empty.Index
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	for _, ps := range platforms {
		img, err := randomImage(OCIFormat, ps, layers, layerSize)
		if err != nil {
			t.Fatalf("random index: %v", err)
		}
		p, err := v1.ParsePlatform(ps)
		if err != nil {
			t.Fatalf("platform %q: %v", ps, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        plainDescriptor{img},
			Descriptor: v1.Descriptor{Platform: p, MediaType: types.OCIManifestSchema1},
		})
	}
	return idx
}

// WriteDockerArchive saves img as a `docker save`-style tarball tagged tag
// (what `docker load`, `podman load` and `crane push` read) and returns its
// path.
func WriteDockerArchive(t testing.TB, img v1.Image, tag string) string {
	t.Helper()
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatalf("tag %q: %v", tag, err)
	}
	path := filepath.Join(t.TempDir(), safeFileName(tag)+".tar")
	if err := tarball.WriteToFile(path, ref, img); err != nil {
		t.Fatalf("write docker archive: %v", err)
	}
	return path
}

// refNameAnnotation names an entry of an OCI layout's index.json, which is
// what skopeo's oci:DIR:NAME transport looks up.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// WriteOCILayout writes img (a v1.Image or v1.ImageIndex) to a new OCI
// image layout under the reference name refName and returns the folder.
// skopeo reads it as oci:DIR:refName.
func WriteOCILayout(t testing.TB, refName string, img any) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "oci")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatalf("new OCI layout: %v", err)
	}
	ann := layout.WithAnnotations(map[string]string{refNameAnnotation: refName})
	switch v := img.(type) {
	case v1.Image:
		err = p.AppendImage(v, ann)
	case v1.ImageIndex:
		err = p.AppendIndex(v, ann)
	default:
		t.Fatalf("WriteOCILayout: %T is neither an image nor an index", img)
	}
	if err != nil {
		t.Fatalf("write OCI layout: %v", err)
	}
	return dir
}

// ReadOCILayout returns the image or index named refName in an OCI layout
// folder (as written by skopeo or crane).
func ReadOCILayout(t testing.TB, dir, refName string) (v1.Descriptor, v1.ImageIndex) {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("read OCI layout %s: %v", dir, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatalf("read OCI layout index: %v", err)
	}
	for _, d := range im.Manifests {
		if refName == "" || d.Annotations[refNameAnnotation] == refName {
			return d, idx
		}
	}
	t.Fatalf("OCI layout %s has no entry named %q (%d entries)", dir, refName, len(im.Manifests))
	return v1.Descriptor{}, nil
}

func safeFileName(s string) string {
	return strings.NewReplacer("/", "_", ":", "_", "@", "_").Replace(s)
}

func mediaTypeOf(s string) types.MediaType { return types.MediaType(s) }

// plainDescriptor makes go-containerregistry describe an image in an index
// with mediaType, digest and size only. Without it the descriptor also gets
// an artifactType (the config media type), which older clients such as
// skopeo 1.9 drop when they re-serialize the index, changing its digest.
type plainDescriptor struct{ v1.Image }

// Descriptor implements partial.Describable.
func (p plainDescriptor) Descriptor() (*v1.Descriptor, error) {
	mt, err := p.MediaType()
	if err != nil {
		return nil, err
	}
	d, err := p.Digest()
	if err != nil {
		return nil, err
	}
	n, err := p.Size()
	if err != nil {
		return nil, err
	}
	return &v1.Descriptor{MediaType: mt, Digest: d, Size: n}, nil
}
