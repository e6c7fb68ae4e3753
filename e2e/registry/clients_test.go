package registry_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/wharf-dev/wharf/e2e/harness"
)

var pushDigestRE = regexp.MustCompile(`digest: (sha256:[0-9a-f]{64})`)

// TestDockerPushPull: `docker push` a locally loaded multi-layer image, then
// remove it, `docker pull` it back and `docker save` it: same image ID
// (config bytes), same layer contents, and the digest docker printed is the
// one the registry serves.
func TestDockerPushPull(t *testing.T) {
	harness.ForEachTarget(t, func(t *testing.T, tg harness.Target) {
		docker := harness.Docker(t)
		reg := tg.Start(t)
		img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", imageLayers, layerSize)
		src := "wharf-e2e.test/" + repoName(t, "src") + ":v1"
		docker.Must(t, "load", "-i", harness.WriteDockerArchive(t, img, src))
		dst := reg.Addr() + "/" + repoName(t, "docker") + ":v1"
		docker.Must(t, "tag", src, dst)
		out := docker.Must(t, "push", dst)
		m := pushDigestRE.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("docker push printed no digest:\n%s", out)
		}
		// docker recompresses layers, so compare content and config, not
		// layer blobs.
		got := harness.VerifyRemoteImage(t, dst, img, harness.Same{Config: true})
		if got.String() != m[1] {
			t.Fatalf("docker push said %s, registry serves %s", m[1], got)
		}

		// Pushing the same image to a second repository: docker mounts the
		// layers it just pushed instead of uploading them again.
		mounted := reg.Addr() + "/" + repoName(t, "mounted") + ":v1"
		docker.Must(t, "tag", src, mounted)
		out = docker.Must(t, "push", mounted)
		if !strings.Contains(out, "Mounted from "+repoName(t, "docker")) {
			t.Errorf("second push did not mount the layers from %s:\n%s", repoName(t, "docker"), out)
		}
		if got2 := harness.VerifyRemoteImage(t, mounted, img, harness.Same{Config: true}); got2 != got {
			t.Errorf("mounted copy has digest %s, first push %s", got2, got)
		}

		cfgDigest := harness.MustDigestOf(t, img.ConfigName)
		docker.Must(t, "rmi", "-f", cfgDigest.String())
		if _, err := docker.Run(t, "image", "inspect", dst); err == nil {
			t.Fatalf("%s still present locally after rmi", dst)
		}
		docker.Must(t, "pull", dst)
		var inspect []struct {
			ID          string `json:"Id"`
			RepoDigests []string
			RootFS      struct{ Layers []string }
		}
		if err := json.Unmarshal([]byte(docker.Must(t, "image", "inspect", dst)), &inspect); err != nil || len(inspect) != 1 {
			t.Fatalf("docker image inspect: %v (%d results)", err, len(inspect))
		}
		if inspect[0].ID != cfgDigest.String() {
			t.Errorf("pulled image ID %s, pushed %s", inspect[0].ID, cfgDigest)
		}
		wantRepoDigest := reg.Addr() + "/" + repoName(t, "docker") + "@" + m[1]
		if !slices.Contains(inspect[0].RepoDigests, wantRepoDigest) {
			t.Errorf("pulled RepoDigests %v, want %s among them", inspect[0].RepoDigests, wantRepoDigest)
		}
		if got, want := inspect[0].RootFS.Layers, hashStrings(harness.DiffIDs(t, img)); !slices.Equal(got, want) {
			t.Errorf("pulled layers %v, want %v", got, want)
		}

		saved := filepath.Join(t.TempDir(), "saved.tar")
		docker.Must(t, "save", "-o", saved, dst)
		compareArchive(t, saved, dst, img)
	})
}

// TestPodmanPushPull: the same round trip with podman (vfs storage).
func TestPodmanPushPull(t *testing.T) {
	harness.ForEachTarget(t, func(t *testing.T, tg harness.Target) {
		podman := harness.Podman(t)
		reg := tg.Start(t)
		img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", imageLayers, layerSize)
		src := "wharf-e2e.test/" + repoName(t, "src") + ":v1"
		podman.Must(t, "load", "-i", harness.WriteDockerArchive(t, img, src))
		dst := reg.Addr() + "/" + repoName(t, "podman") + ":v1"
		podman.Must(t, "tag", src, dst)
		digestFile := filepath.Join(t.TempDir(), "digest")
		podman.Must(t, "push", "--tls-verify=false", "--digestfile", digestFile, dst)
		pushed, err := os.ReadFile(digestFile)
		if err != nil {
			t.Fatalf("podman push wrote no digest file: %v", err)
		}
		got := harness.VerifyRemoteImage(t, dst, img, harness.Same{Config: true})
		if got.String() != strings.TrimSpace(string(pushed)) {
			t.Fatalf("podman push said %s, registry serves %s", pushed, got)
		}

		cfgDigest := harness.MustDigestOf(t, img.ConfigName)
		podman.Must(t, "rmi", "-f", cfgDigest.Hex)
		if _, err := podman.Run(t, "image", "exists", dst); err == nil {
			t.Fatalf("%s still present locally after rmi", dst)
		}
		podman.Must(t, "pull", "--tls-verify=false", dst)
		out := strings.TrimSpace(podman.Must(t, "image", "inspect", "--format", "{{.Id}} {{.Digest}}", dst))
		if want := cfgDigest.Hex + " " + got.String(); out != want {
			t.Errorf("pulled image id/digest %q, want %q", out, want)
		}
		saved := filepath.Join(t.TempDir(), "saved.tar")
		podman.Must(t, "save", "--format", "docker-archive", "-o", saved, dst)
		compareArchive(t, saved, dst, img)
	})
}

// TestSkopeoPushPull: skopeo copies an OCI image from a layout to the
// registry and back to another layout; every byte (manifest, config, layer
// blobs) stays identical.
func TestSkopeoPushPull(t *testing.T) {
	harness.ForEachTarget(t, func(t *testing.T, tg harness.Target) {
		skopeo := harness.Skopeo(t)
		reg := tg.Start(t)
		img := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", imageLayers, layerSize)
		dir := harness.WriteOCILayout(t, "v1", img)
		dst := reg.Addr() + "/" + repoName(t, "skopeo") + ":v1"
		skopeo.Must(t, "copy", "--dest-tls-verify=false", "--preserve-digests", "oci:"+dir+":v1", "docker://"+dst)
		got := harness.VerifyRemoteImage(t, dst, img, harness.Exact)
		if want := harness.MustDigest(t, img); got != want {
			t.Fatalf("registry serves %s, pushed %s", got, want)
		}

		out := filepath.Join(t.TempDir(), "back")
		skopeo.Must(t, "copy", "--src-tls-verify=false", "--preserve-digests", "docker://"+dst, "oci:"+out+":back")
		compareLayout(t, out, "back", img)
	})
}

// TestCranePushPull: crane pushes a docker-archive tarball and pulls the
// image back as an OCI layout, byte-identical.
func TestCranePushPull(t *testing.T) {
	harness.ForEachTarget(t, func(t *testing.T, tg harness.Target) {
		crane := harness.Crane(t)
		reg := tg.Start(t)
		img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", imageLayers, layerSize)
		tar := harness.WriteDockerArchive(t, img, "wharf-e2e.test/crane:v1")
		dst := reg.Addr() + "/" + repoName(t, "crane") + ":v1"
		out := strings.TrimSpace(crane.Must(t, "push", "--insecure", tar, dst))
		want := harness.MustDigest(t, img)
		if !strings.HasSuffix(out, "@"+want.String()) {
			t.Fatalf("crane push printed %q, want a reference ending in @%s", out, want)
		}
		harness.VerifyRemoteImage(t, dst, img, harness.Exact)
		if d := strings.TrimSpace(crane.Must(t, "digest", "--insecure", dst)); d != want.String() {
			t.Fatalf("crane digest %s, want %s", d, want)
		}
		if tags := strings.Fields(crane.Must(t, "ls", "--insecure", reg.Addr()+"/"+repoName(t, "crane"))); !slices.Equal(tags, []string{"v1"}) {
			t.Errorf("tags %v, want [v1]", tags)
		}

		dir := filepath.Join(t.TempDir(), "pulled")
		crane.Must(t, "pull", "--insecure", "--format", "oci", dst, dir)
		compareLayout(t, dir, "", img)
	})
}

// compareArchive reads a docker-archive tarball written by `docker save` or
// `podman save` and compares its config and layer contents with want.
func compareArchive(t *testing.T, path, tag string, want v1.Image) {
	t.Helper()
	got, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatalf("read saved archive %s: %v", path, err)
	}
	if err := harness.CompareImages(got, want, harness.Same{Config: true}); err != nil {
		t.Fatalf("image pulled back as %s differs from the pushed one: %v", tag, err)
	}
}

// compareLayout reads the image named ref from an OCI layout and compares it
// with want byte for byte.
func compareLayout(t *testing.T, dir, ref string, want v1.Image) {
	t.Helper()
	desc, idx := harness.ReadOCILayout(t, dir, ref)
	got, err := idx.Image(desc.Digest)
	if err != nil {
		t.Fatalf("image %s in layout %s: %v", desc.Digest, dir, err)
	}
	if err := harness.CompareImages(got, want, harness.Exact); err != nil {
		t.Fatalf("image pulled back into %s differs from the pushed one: %v", dir, err)
	}
}

func hashStrings(hs []v1.Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	return out
}
