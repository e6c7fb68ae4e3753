// Package cache_test runs real clients (docker, podman, skopeo, crane and
// go-containerregistry) against wharf's cache backend: `wharf serve` with a
// backend = "cache" site whose upstream is Debian's docker-registry.
package cache_test

import (
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/wharf-dev/wharf/e2e/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// cacheConfig is one plain-HTTP cache site for host 127.0.0.1, no auth.
const cacheConfig = `data_dir = "{{.DataDir}}"

[listen]
http  = "{{.HTTP}}"
https = ""
admin = ""

[log]
level = "debug"

[[site]]
host    = "127.0.0.1"
backend = "cache"
tls     = "off"
[site.cache]
upstream = "{{index .Vars "upstream"}}"
ttl      = "1h"
`

const (
	imageLayers = 3
	layerSize   = 1 << 20
)

// TestPullThroughCache: a Docker schema 2 image, an OCI image and a
// multi-platform OCI index are pushed to docker-registry; every client
// pulls them through wharf's cache site and gets the upstream's manifests
// and digests byte for byte. Then the upstream is stopped and every pull
// works again from the cache.
func TestPullThroughCache(t *testing.T) {
	up := harness.StartDockerRegistry(t, "")
	dockerImg := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", imageLayers, layerSize)
	ociImg := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", imageLayers, layerSize)
	idx := harness.RandomIndex(t, []string{"linux/amd64", "linux/arm64/v8"}, 2, 512<<10)
	push := func(ref string, x any) {
		t.Helper()
		var err error
		switch v := x.(type) {
		case v1.Image:
			err = remote.Write(harness.Ref(t, ref), v, harness.RemoteOptions()...)
		case v1.ImageIndex:
			err = remote.WriteIndex(harness.Ref(t, ref), v, harness.RemoteOptions()...)
		}
		if err != nil {
			t.Fatalf("push %s to the upstream: %v", ref, err)
		}
	}
	push(up.Addr()+"/team/app:docker", dockerImg)
	push(up.Addr()+"/team/app:oci", ociImg)
	push(up.Addr()+"/team/multi:v1", idx)

	w := harness.StartWharf(t, cacheConfig, harness.WithVars(map[string]any{"upstream": up.URL()}))
	crane := harness.Crane(t)
	skopeo := harness.Skopeo(t)

	// What the upstream serves, as crane sees it.
	wantManifest := map[string]string{}
	wantDigest := map[string]string{}
	for _, ref := range []string{"team/app:docker", "team/app:oci", "team/multi:v1"} {
		wantManifest[ref] = crane.Must(t, "manifest", "--insecure", up.Addr()+"/"+ref)
		wantDigest[ref] = strings.TrimSpace(crane.Must(t, "digest", "--insecure", up.Addr()+"/"+ref))
	}
	var mt struct {
		MediaType string `json:"mediaType"`
	}
	if err := json.Unmarshal([]byte(wantManifest["team/app:docker"]), &mt); err != nil || mt.MediaType != "application/vnd.docker.distribution.manifest.v2+json" {
		t.Fatalf("test image is not Docker schema 2: %q %v", mt.MediaType, err)
	}

	pullAll := func(t *testing.T) {
		// go-containerregistry: every blob read and checked, everything
		// byte-identical.
		harness.VerifyRemoteImage(t, w.Addr()+"/team/app:docker", dockerImg, harness.Exact)
		harness.VerifyRemoteImage(t, w.Addr()+"/team/app:oci", ociImg, harness.Exact)
		harness.VerifyRemoteIndex(t, w.Addr()+"/team/multi:v1", idx)

		for ref := range wantManifest {
			// crane: the same manifest bytes and digest, by tag and by digest
			if got := crane.Must(t, "manifest", "--insecure", w.Addr()+"/"+ref); got != wantManifest[ref] {
				t.Fatalf("crane manifest %s through wharf differs:\n%s\nupstream:\n%s", ref, got, wantManifest[ref])
			}
			if got := strings.TrimSpace(crane.Must(t, "digest", "--insecure", w.Addr()+"/"+ref)); got != wantDigest[ref] {
				t.Fatalf("crane digest %s through wharf %s, upstream %s", ref, got, wantDigest[ref])
			}
			byDigest := w.Addr() + "/" + strings.Split(ref, ":")[0] + "@" + wantDigest[ref]
			if got := crane.Must(t, "manifest", "--insecure", byDigest); got != wantManifest[ref] {
				t.Fatalf("crane manifest %s by digest differs", ref)
			}
			// skopeo: raw manifest, and a full copy keeping digests
			if got := skopeo.Must(t, "inspect", "--tls-verify=false", "--raw", "docker://"+w.Addr()+"/"+ref); strings.TrimSpace(got) != strings.TrimSpace(wantManifest[ref]) {
				t.Fatalf("skopeo inspect --raw %s differs", ref)
			}
			dst := filepath.Join(t.TempDir(), "oci")
			skopeo.Must(t, "copy", "--all", "--preserve-digests", "--src-tls-verify=false", "docker://"+w.Addr()+"/"+ref, "oci:"+dst+":x")
			desc, _ := harness.ReadOCILayout(t, dst, "x")
			if desc.Digest.String() != wantDigest[ref] {
				t.Fatalf("skopeo copy of %s has digest %s, upstream %s", ref, desc.Digest, wantDigest[ref])
			}
		}
	}
	t.Run("online", pullAll)

	// docker and podman pull through the mirror: same image ID (config).
	engines := func(t *testing.T) {
		t.Run("docker", func(t *testing.T) {
			docker := harness.Docker(t)
			ref := w.Addr() + "/team/app:docker"
			docker.Must(t, "pull", ref)
			want := harness.MustDigestOf(t, dockerImg.ConfigName).String()
			if id := strings.TrimSpace(docker.Must(t, "image", "inspect", "--format", "{{.Id}}", ref)); id != want {
				t.Fatalf("docker pulled image id %s, want %s", id, want)
			}
			docker.Must(t, "rmi", "-f", ref)
		})
		t.Run("podman", func(t *testing.T) {
			podman := harness.Podman(t)
			ref := w.Addr() + "/team/app:oci"
			podman.Must(t, "pull", "--tls-verify=false", ref)
			want := harness.MustDigestOf(t, ociImg.ConfigName).Hex
			if id := strings.TrimSpace(podman.Must(t, "image", "inspect", "--format", "{{.Id}}", ref)); id != want {
				t.Fatalf("podman pulled image id %s, want %s", id, want)
			}
		})
	}
	t.Run("engines-online", engines)

	// The upstream goes away: everything pulled before pulls again.
	up.Kill(t)
	t.Run("offline", pullAll)
	t.Run("engines-offline", engines)
	if tags := strings.Fields(crane.Must(t, "ls", "--insecure", w.Addr()+"/team/app")); strings.Join(tags, ",") != "docker,oci" {
		t.Fatalf("tags with the upstream down: %v", tags)
	}
	if cat := strings.Fields(crane.Must(t, "catalog", "--insecure", w.Addr())); strings.Join(cat, ",") != "team/app,team/multi" {
		t.Fatalf("catalog: %v", cat)
	}
	// something never pulled: a clear upstream error, not a hang or a 500
	out, err := crane.Run(t, "manifest", "--insecure", w.Addr()+"/team/other:v1")
	if err == nil || !strings.Contains(out, "unreachable") || !strings.Contains(out, "nothing usable is cached") {
		t.Fatalf("manifest never cached, upstream down: %v\n%s", err, out)
	}
	t.Logf("wharf peak RSS: %d MiB", w.PeakRSS(t)>>20)
}

// TestOneGiBBlobFlatMemory: a 1 GiB blob pulled through the cache site
// (a miss: upstream -> disk and client at once; then a hit from disk)
// arrives intact while wharf's peak RSS stays under 64 MiB.
func TestOneGiBBlobFlatMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB test")
	}
	up := harness.StartDockerRegistry(t, "")
	const size = 1 << 30
	d := pushStreamedBlob(t, up.URL(), "big/blob", size)
	w := harness.StartWharf(t, cacheConfig, harness.WithVars(map[string]any{"upstream": up.URL()}))
	for _, round := range []string{"miss", "hit"} {
		resp, err := http.Get(w.URL() + "/v2/big/blob/blobs/" + d)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || n != size {
			t.Fatalf("%s: status %d, %d bytes, %v", round, resp.StatusCode, n, err)
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d {
			t.Fatalf("%s: digest %s, want %s", round, got, d)
		}
		rss := w.PeakRSS(t)
		t.Logf("wharf peak RSS after the 1 GiB %s: %d MiB", round, rss>>20)
		if rss >= 64<<20 {
			t.Fatalf("peak RSS %d MiB after a 1 GiB %s, want < 64 MiB", rss>>20, round)
		}
	}
}

// pushStreamedBlob uploads size pseudo-random bytes to repo in one PUT,
// generating them twice (to hash, then to send) so nothing holds them.
func pushStreamedBlob(t *testing.T, base, repo string, size int64) string {
	t.Helper()
	var seed [32]byte
	if _, err := crand.Read(seed[:]); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, mrand.NewChaCha8(seed), size); err != nil {
		t.Fatal(err)
	}
	d := "sha256:" + hex.EncodeToString(h.Sum(nil))
	resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		t.Fatalf("start upload: %d", resp.StatusCode)
	}
	if !strings.HasPrefix(loc, "http") {
		loc = base + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, err := http.NewRequest("PUT", loc+sep+"digest="+d, io.LimitReader(mrand.NewChaCha8(seed), size))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
	return d
}
