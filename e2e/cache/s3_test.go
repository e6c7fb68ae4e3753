package cache_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// s3CacheConfig is a cache site for host 127.0.0.1 keeping its data in
// the bucket of a versitygw ([site.cache] storage = "s3"); every wharf
// started with it on the same versitygw shares one cache.
const s3CacheConfig = `data_dir = "{{.DataDir}}"

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
upstream = "{{.Vars.upstream}}"
ttl      = "168h"
storage  = "s3"
[site.cache.s3]
bucket          = "wharf"
endpoint        = "{{.Vars.endpoint}}"
path_style      = true
access_key_file = "{{.Vars.accessFile}}"
secret_key_file = "{{.Vars.secretFile}}"
`

// startS3Caches starts versitygw and n wharf instances whose cache site
// for upstream lives in its bucket.
func startS3Caches(t *testing.T, upstream string, n int) []*harness.Wharf {
	t.Helper()
	gw := harness.StartVersityGW(t, "wharf")
	dir := t.TempDir()
	vars := map[string]any{"upstream": upstream, "endpoint": gw.Endpoint,
		"accessFile": filepath.Join(dir, "access"), "secretFile": filepath.Join(dir, "secret")}
	for f, v := range map[string]string{"access": gw.AccessKey, "secret": gw.SecretKey} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var ws []*harness.Wharf
	for i := 0; i < n; i++ {
		ws = append(ws, harness.StartWharf(t, s3CacheConfig, harness.WithVars(vars)))
	}
	return ws
}

// upstreamBlobGETs counts the blob GETs docker-registry answered for a
// repository.
func upstreamBlobGETs(t *testing.T, r *harness.DockerRegistry, repo string) int {
	t.Helper()
	re := regexp.MustCompile(`http\.request\.method=GET .*http\.request\.uri="/v2/` + regexp.QuoteMeta(repo) + `/blobs/`)
	n := 0
	sc := bufio.NewScanner(strings.NewReader(r.Log()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "response completed") && re.MatchString(sc.Text()) {
			n++
		}
	}
	return n
}

// TestS3CacheSite: a cache site on S3 (versitygw) in front of Debian's
// docker-registry, served by two wharf instances with the same config.
// crane pulls an image through the first (cold: the layers are streamed
// to crane while they go to the bucket), docker pulls it through the
// second, which finds every blob in the bucket and asks the upstream for
// none. `wharf gc` then evicts the site in the bucket over a max_size,
// and the next pull fetches it again.
func TestS3CacheSite(t *testing.T) {
	crane := harness.Crane(t)
	docker := harness.Docker(t)
	up := harness.StartDockerRegistry(t, "")
	// layers above the 4 MiB the cache stores before answering
	img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 6<<20)
	crane.Must(t, "push", "--insecure", harness.WriteDockerArchive(t, img, "wharf-e2e.test/s3:v1"), up.Addr()+"/lib/app:v1")
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ws := startS3Caches(t, up.URL(), 2)
	first, second := ws[0].Addr()+"/lib/app:v1", ws[1].Addr()+"/lib/app:v1"

	crane.Must(t, "pull", "--insecure", first, filepath.Join(t.TempDir(), "app.tar"))
	harness.VerifyRemoteImage(t, first, img, harness.Exact)
	cold := upstreamBlobGETs(t, up, "lib/app")
	if cold != len(layers)+1 {
		t.Fatalf("%d upstream blob GETs for a cold pull of %d layers and a config", cold, len(layers))
	}

	docker.Must(t, "pull", second)
	var inspect []struct {
		ID string `json:"Id"`
	}
	if err := json.Unmarshal([]byte(docker.Must(t, "image", "inspect", second)), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("docker image inspect: %v", err)
	}
	if want := harness.MustDigestOf(t, img.ConfigName).String(); inspect[0].ID != want {
		t.Errorf("docker pulled image ID %s through the second instance, want %s", inspect[0].ID, want)
	}
	harness.VerifyRemoteImage(t, second, img, harness.Exact)
	if got := upstreamBlobGETs(t, up, "lib/app"); got != cold {
		t.Fatalf("the second instance asked the upstream for %d blobs; the bucket has them all", got-cold)
	}

	// `wharf gc` over a 1 KiB budget evicts the whole image from the bucket.
	cfg, err := os.ReadFile(ws[0].ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	gcCfg := filepath.Join(t.TempDir(), "gc.toml")
	if err := os.WriteFile(gcCfg, []byte(strings.Replace(string(cfg), "ttl      = \"168h\"\n", "ttl      = \"168h\"\nmax_size = \"1KiB\"\n", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	gc := exec.Command(harness.WharfBinary(t), "gc", "-config", gcCfg)
	var stderr strings.Builder
	gc.Stderr = &stderr
	outb, err := gc.Output()
	out := string(outb)
	t.Logf("wharf gc:\n%s%s", out, stderr.String())
	if err != nil {
		t.Fatalf("wharf gc: %v", err)
	}
	// two layers, the config and the manifest
	if !strings.Contains(out, "site 127.0.0.1 (s3://wharf/127.0.0.1): removed 1 tags, 1 manifests, 4 blobs") {
		t.Fatalf("wharf gc on the S3 cache site:\n%s", out)
	}
	harness.VerifyRemoteImage(t, second, img, harness.Exact)
	if got := upstreamBlobGETs(t, up, "lib/app"); got != 2*cold {
		t.Fatalf("after eviction the upstream served %d blob GETs, want %d (everything again)", got, 2*cold)
	}
	docker.Must(t, "image", "rm", second)
}

// TestS3CacheBigBlobFlatMemory: a 512 MiB blob pulled cold through a
// cache site on S3 by two clients at once (the first gets it as it goes
// to the bucket, the second reads the verified blob from the bucket),
// then through a second instance on the same bucket: every copy is
// intact, the upstream sent it once, and neither wharf's peak RSS grows
// with the blob (under 64 MiB).
func TestS3CacheBigBlobFlatMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("512 MiB test")
	}
	up := harness.StartDockerRegistry(t, "")
	const size = 512 << 20
	d := pushStreamedBlob(t, up.URL(), "big/blob", size)
	ws := startS3Caches(t, up.URL(), 2)
	get := func(w *harness.Wharf) error {
		resp, err := http.Get(w.URL() + "/v2/big/blob/blobs/" + d)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK || n != size {
			t.Errorf("status %d, %d bytes, %v", resp.StatusCode, n, err)
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d {
			t.Errorf("digest %s, want %s", got, d)
		}
		return nil
	}
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := get(ws[0]); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := get(ws[1]); err != nil {
		t.Fatal(err)
	}
	if n := upstreamBlobGETs(t, up, "big/blob"); n != 1 {
		t.Errorf("%d upstream GETs of the blob, want 1", n)
	}
	for i, w := range ws {
		rss := w.PeakRSS(t)
		t.Logf("wharf %d peak RSS after 512 MiB pulls on S3: %d MiB", i, rss>>20)
		if rss >= 64<<20 {
			t.Errorf("wharf %d: peak RSS %d MiB, want < 64 MiB", i, rss>>20)
		}
	}
}
