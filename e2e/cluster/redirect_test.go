package cluster_test

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// TestPullWithRedirect: with [site.registry.s3] redirect = true, crane
// and docker pull images through the balancer; every blob GET is
// answered 307 with a pre-signed URL and the clients fetch the bytes
// from versitygw (on 127.0.0.1, reachable by them), checked byte for
// byte (crane) and by image ID, which docker verifies against every
// layer (docker).
func TestPullWithRedirect(t *testing.T) {
	c := startClusterConfig(t, 2, config+"redirect = true\n")
	crane := harness.Crane(t)
	img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 3, 1<<20)
	ref := c.lb.Addr + "/redirect/app:v1"
	crane.Must(t, "push", "--insecure", harness.WriteDockerArchive(t, img, "wharf-e2e.test/redirect:v1"), ref)

	out := filepath.Join(t.TempDir(), "pulled.tar")
	crane.Must(t, "pull", "--insecure", ref, out)
	got, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := harness.CompareImages(got, img, harness.Same{Config: true, LayerBlobs: true}); err != nil {
		t.Fatalf("crane pulled through redirects: %v", err)
	}
	harness.VerifyRemoteImage(t, ref, img, harness.Exact)

	docker := harness.Docker(t)
	docker.Must(t, "pull", ref)
	want := harness.MustDigestOf(t, img.ConfigName).String()
	if id := strings.TrimSpace(docker.Must(t, "image", "inspect", "--format", "{{.Id}}", ref)); id != want {
		t.Fatalf("docker pulled image id %s, want %s", id, want)
	}
	docker.Must(t, "rmi", "-f", ref)

	// The blobs came from S3: wharf answered blob GETs with 307 and no
	// body, so the clients above read every layer and config from the
	// pre-signed URLs.
	redirected := regexp.MustCompile(`"method":"GET","path":"/v2/redirect/app/blobs/sha256:[0-9a-f]{64}","status":307`)
	n := 0
	for _, w := range c.instances {
		n += len(redirected.FindAllString(w.Log(), -1))
	}
	// crane, ggcr and docker each fetch the config and 3 layers.
	if n < 12 {
		t.Fatalf("wharf answered %d blob GETs with 307, want at least 12", n)
	}
}
