// These tests run real clients through wharf's pull-through cache
// (a mirror site) in front of Debian's docker-registry: the mirror serves
// the upstream's bytes unchanged (same digests and media types), and keeps
// serving what it has cached when the upstream is gone, across a restart.
package cache_test

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wharf-dev/wharf/e2e/harness"
)

const mirrorConfig = `data_dir = "{{.DataDir}}"

[listen]
http  = "{{.HTTP}}"
https = ""
admin = ""

[[site]]
host    = "127.0.0.1"
backend = "cache"
tls     = "off"
[site.cache]
upstream = "{{.Vars.upstream}}"
ttl      = "168h"
`

func TestMirrorWithClients(t *testing.T) {
	crane := harness.Crane(t)
	skopeo := harness.Skopeo(t)
	docker := harness.Docker(t)
	podman := harness.Podman(t)
	up := harness.StartDockerRegistry(t, "")

	// The upstream holds a Docker schema 2 image and an OCI index.
	img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 3, 512<<10)
	crane.Must(t, "push", "--insecure", harness.WriteDockerArchive(t, img, "wharf-e2e.test/up:v1"), up.Addr()+"/lib/app:v1")
	idx := harness.RandomIndex(t, []string{"linux/amd64", "linux/arm64/v8"}, 1, 256<<10)
	crane.Must(t, "push", "--insecure", harness.WriteOCILayout(t, "multi", idx), up.Addr()+"/lib/multi:v1")
	imgDigest, idxDigest := harness.MustDigest(t, img), harness.MustDigest(t, idx)

	w := harness.StartWharf(t, mirrorConfig, harness.WithVars(map[string]any{"upstream": up.URL()}))
	app, multi := w.Addr()+"/lib/app:v1", w.Addr()+"/lib/multi:v1"

	// Through the mirror: byte-identical, digests and media types kept.
	harness.VerifyRemoteImage(t, app, img, harness.Exact)
	harness.VerifyRemoteIndex(t, multi, idx)
	if d := strings.TrimSpace(crane.Must(t, "digest", "--insecure", app)); d != imgDigest.String() {
		t.Errorf("crane digest through the mirror %s, upstream %s", d, imgDigest)
	}

	docker.Must(t, "pull", app)
	var inspect []struct {
		ID          string `json:"Id"`
		RepoDigests []string
	}
	if err := json.Unmarshal([]byte(docker.Must(t, "image", "inspect", app)), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("docker image inspect: %v", err)
	}
	if want := harness.MustDigestOf(t, img.ConfigName).String(); inspect[0].ID != want {
		t.Errorf("docker pulled image ID %s, want %s", inspect[0].ID, want)
	}
	if want := w.Addr() + "/lib/app@" + imgDigest.String(); !slices.Contains(inspect[0].RepoDigests, want) {
		t.Errorf("docker RepoDigests %v, want %s (the upstream digest)", inspect[0].RepoDigests, want)
	}

	podman.Must(t, "pull", "--tls-verify=false", multi) // picks linux/amd64 from the index
	if got := strings.TrimSpace(podman.Must(t, "image", "inspect", "--format", "{{.Digest}}", multi)); got != idxDigest.String() {
		t.Errorf("podman pulled %s through the mirror as %s, want the upstream index digest %s", multi, got, idxDigest)
	}

	out := filepath.Join(t.TempDir(), "multi")
	skopeo.Must(t, "copy", "--all", "--preserve-digests", "--src-tls-verify=false", "docker://"+multi, "oci:"+out+":multi")
	if desc, _ := harness.ReadOCILayout(t, out, "multi"); desc.Digest != idxDigest {
		t.Errorf("skopeo copied index %s through the mirror, upstream has %s", desc.Digest, idxDigest)
	}

	// A mirror takes no pushes.
	other := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 1, 16<<10)
	if out, err := crane.Run(t, "push", "--insecure", harness.WriteDockerArchive(t, other, "wharf-e2e.test/o:v1"), w.Addr()+"/lib/other:v1"); err == nil {
		t.Errorf("push to the mirror succeeded:\n%s", out)
	}

	// Upstream gone: what was pulled once still pulls, also after a restart
	// of wharf, by tag (inside the TTL) and by digest.
	if err := up.Stop(t); err != nil {
		t.Fatalf("stop upstream: %v", err)
	}
	for _, when := range []string{"upstream down", "upstream down and wharf restarted"} {
		if when != "upstream down" {
			w.Restart(t)
		}
		t.Logf("checking the mirror with %s", when)
		harness.VerifyRemoteImage(t, app, img, harness.Exact)
		harness.VerifyRemoteImage(t, w.Addr()+"/lib/app@"+imgDigest.String(), img, harness.Exact)
		harness.VerifyRemoteIndex(t, multi, idx)
		p := harness.Podman(t) // empty local store: every byte comes from wharf
		p.Must(t, "pull", "--tls-verify=false", app)
		if got := strings.TrimSpace(p.Must(t, "image", "inspect", "--format", "{{.Digest}}", app)); got != imgDigest.String() {
			t.Errorf("%s: podman pulled %s, want %s", when, got, imgDigest)
		}
	}
}
