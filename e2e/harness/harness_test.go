package harness

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The comparisons must catch differences, or the e2e tests would pass on a
// registry that returns the wrong bytes.
func TestCompareImages(t *testing.T) {
	img := RandomImage(t, DockerFormat, "linux/amd64", 2, 4<<10)
	other := RandomImage(t, DockerFormat, "linux/amd64", 2, 4<<10)
	oneLayer := RandomImage(t, DockerFormat, "linux/amd64", 1, 4<<10)
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	corrupt, err := mutate.AppendLayers(RandomImage(t, DockerFormat, "linux/amd64", 0, 0), ls[0], lyingLayer{ls[1]})
	if err != nil {
		t.Fatal(err)
	}
	ociCopy := mutate.MediaType(img, types.OCIManifestSchema1) // same content, other manifest bytes

	tests := []struct {
		name    string
		got     v1.Image
		same    Same
		wantErr string
	}{
		{"identical", img, Exact, ""},
		{"other content", other, Same{}, "uncompressed content"},
		{"other config", other, Same{Config: true}, "config digest"},
		{"layer count", oneLayer, Same{}, "layers, want"},
		{"corrupt blob", corrupt, Same{}, "hashing to"},
		{"manifest bytes differ", ociCopy, Exact, "manifests differ"},
		{"content equal is enough", ociCopy, Same{LayerBlobs: true, Config: true}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CompareImages(tc.got, img, tc.same)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected difference: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestCompareIndexes(t *testing.T) {
	idx := RandomIndex(t, []string{"linux/amd64", "linux/arm64/v8"}, 1, 4<<10)
	if err := CompareIndexes(idx, idx); err != nil {
		t.Fatalf("index differs from itself: %v", err)
	}
	other := RandomIndex(t, []string{"linux/amd64", "linux/arm64/v8"}, 1, 4<<10)
	if err := CompareIndexes(other, idx); err == nil {
		t.Fatal("two random indexes compared equal")
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		if d.ArtifactType != "" || d.Platform == nil {
			t.Errorf("child descriptor %+v: want a platform and no artifactType", d)
		}
	}
}

// lyingLayer serves different bytes than its digest says.
type lyingLayer struct{ v1.Layer }

func (l lyingLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader([]byte("not the layer"))), nil
}

func TestProcStatusBytes(t *testing.T) {
	n, err := procStatusBytes(os.Getpid(), "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	if n < 1<<20 {
		t.Fatalf("VmHWM of the test binary = %d bytes, want at least 1 MiB", n)
	}
	if _, err := procStatusBytes(os.Getpid(), "NoSuchField"); err == nil {
		t.Fatal("missing field: want an error")
	}
}

func TestProcCPUTime(t *testing.T) {
	// Burn some CPU so the figure is not zero.
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	d, err := procCPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if d <= 0 {
		t.Fatalf("CPU time of a busy test binary = %s, want > 0", d)
	}
}

func TestTargets(t *testing.T) {
	tests := []struct {
		env  string
		want []string
	}{
		{"", []string{"wharf", "wharf-proxy"}},
		{"wharf", []string{"wharf"}},
		{"docker-registry", []string{"docker-registry"}},
		{"docker-registry, wharf", []string{"docker-registry", "wharf"}},
		{"wharf-s3", []string{"wharf-s3"}},
		{"wharf-s3-redirect", []string{"wharf-s3-redirect"}},
		{"all", []string{"wharf", "wharf-proxy", "docker-registry", "wharf-s3", "wharf-s3-redirect"}},
	}
	for _, tc := range tests {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv("WHARF_E2E_TARGETS", tc.env)
			var got []string
			for _, tg := range Targets(t) {
				got = append(got, tg.Name)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("targets %v, want %v", got, tc.want)
			}
		})
	}
}

func TestInCI(t *testing.T) {
	for env, want := range map[string]bool{"": false, "false": false, "0": false, "true": true, "1": true, "yes": true} {
		t.Setenv("CI", env)
		if got := InCI(); got != want {
			t.Errorf("CI=%q: InCI() = %v, want %v", env, got, want)
		}
	}
}

func TestLayoutRoundTrip(t *testing.T) {
	img := RandomImage(t, OCIFormat, "linux/arm64/v8", 2, 4<<10)
	dir := WriteOCILayout(t, "v1", img)
	desc, idx := ReadOCILayout(t, dir, "v1")
	got, err := idx.Image(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := CompareImages(got, img, Exact); err != nil {
		t.Fatalf("layout round trip: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		t.Fatalf("not an OCI layout: %v", err)
	}
}
