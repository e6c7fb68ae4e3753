package cache_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// fleetConfig is one mirror host for two upstreams (the default one is
// "docker.io"); ghcr.io needs a login, given by password_file.
const fleetConfig = `data_dir = "{{.DataDir}}"

[listen]
http  = "{{.HTTP}}"
https = ""
admin = "{{.Admin}}"

[log]
level = "debug"

[[site]]
host    = "127.0.0.1"
backend = "cache"
tls     = "off"
[site.cache]
upstream = "{{index .Vars "hub"}}"
ttl      = "1h"
{{index .Vars "extra"}}
[site.cache.upstreams]
"docker.io" = "{{index .Vars "hub"}}"
"ghcr.io"   = "{{index .Vars "ghcr"}}"
[site.cache.credentials."ghcr.io"]
username      = "fleet"
password_file = "{{index .Vars "pwfile"}}"
`

// fleetUpstreams starts two docker-registry processes standing in for
// Docker Hub and ghcr.io (the latter behind htpasswd) and wharf in front
// of both.
type fleet struct {
	hub, ghcr *harness.DockerRegistry
	w         *harness.Wharf
	ghcrAuth  remote.Option
}

func startFleet(t *testing.T, extra string) *fleet {
	t.Helper()
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("fleet-secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	pw := filepath.Join(dir, "ghcr.password")
	if err := os.WriteFile(htpasswd, []byte("fleet:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pw, []byte("fleet-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := &fleet{
		hub: harness.StartDockerRegistry(t, ""),
		ghcr: harness.StartDockerRegistry(t, fmt.Sprintf(`auth:
  htpasswd:
    realm: ghcr-standin
    path: %s
`, htpasswd)),
		ghcrAuth: remote.WithAuth(&authn.Basic{Username: "fleet", Password: "fleet-secret"}),
	}
	f.w = harness.StartWharf(t, fleetConfig, harness.WithVars(map[string]any{
		"hub": f.hub.URL(), "ghcr": f.ghcr.URL(), "pwfile": pw, "extra": extra,
	}))
	return f
}

func push(t *testing.T, ref string, img v1.Image, opts ...remote.Option) {
	t.Helper()
	if err := remote.Write(harness.Ref(t, ref), img, harness.RemoteOptions(opts...)...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

// upstreamGETs counts the GETs docker-registry logged for a repository.
func upstreamGETs(t *testing.T, r *harness.DockerRegistry, repo string) int {
	t.Helper()
	re := regexp.MustCompile(`http\.request\.method=GET .*http\.request\.uri="/v2/` + regexp.QuoteMeta(repo) + `/(manifests|blobs)/`)
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

// containerd is a private containerd started for one test: its own
// root, state and socket under a short temp folder.
type containerd struct {
	sock, hosts string
	ctr         string
}

func startContainerd(t *testing.T) *containerd {
	t.Helper()
	bin := harness.Require(t, "containerd")
	ctr := harness.Require(t, "ctr")
	harness.RequireRoot(t, "containerd with its own root and state")
	dir, err := os.MkdirTemp("", "ctd-") // a socket path has at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	c := &containerd{sock: filepath.Join(dir, "c.sock"), hosts: filepath.Join(dir, "hosts"), ctr: ctr}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc", c.sock+".debug")
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &harness.Process{
		Name:    "containerd",
		Path:    bin,
		Args:    []string{"--config", path},
		Dir:     dir,
		LogPath: filepath.Join(dir, "containerd.log"),
		Ready: func() error {
			conn, err := net.Dial("unix", c.sock)
			if err != nil {
				return err
			}
			return conn.Close()
		},
	}
	harness.StartProcess(t, p)
	return c
}

// mirror writes hosts.toml for registry so that containerd pulls it from
// wharf (which sees ?ns=<registry>); the real registry stays the server.
func (c *containerd) mirror(t *testing.T, registry, server, wharf string) {
	t.Helper()
	dir := filepath.Join(c.hosts, registry)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	toml := fmt.Sprintf("server = %q\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", server, wharf)
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (c *containerd) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.ctr, append([]string{"--address", c.sock, "--namespace", "wharf-e2e"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// pull runs ctr images pull through the hosts dir and returns the
// image's target digest as containerd recorded it.
func (c *containerd) pull(t *testing.T, ref string) string {
	t.Helper()
	if out, err := c.run(t, "images", "pull", "--hosts-dir", c.hosts, "--snapshotter", "native", ref); err != nil {
		t.Fatalf("ctr images pull %s: %v\n%s", ref, err, out)
	}
	out, err := c.run(t, "images", "ls", "name=="+ref)
	if err != nil {
		t.Fatalf("ctr images ls: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`sha256:[0-9a-f]{64}`).FindString(out)
	if m == "" {
		t.Fatalf("no digest for %s in:\n%s", ref, out)
	}
	return m
}

// TestContainerdFleet: containerd with hosts.toml mirrors for docker.io
// and ghcr.io, both pointing at one wharf host, pulls images of both
// upstreams, including one repository name that exists on both with
// different content. The ns values reach the right upstream (counted in
// the upstreams' logs), the ghcr stand-in's htpasswd login is wharf's
// (from password_file), and an unconfigured registry is refused.
func TestContainerdFleet(t *testing.T) {
	f := startFleet(t, "")
	ctd := startContainerd(t)
	hubImg := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 256<<10)
	ghImg := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 2, 256<<10)
	sameHub := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 1, 64<<10)
	sameGh := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 1, 64<<10)
	push(t, f.hub.Addr()+"/library/fleet-alpine:3", hubImg)
	push(t, f.hub.Addr()+"/library/same:v1", sameHub)
	push(t, f.ghcr.Addr()+"/owner/fleet-app:1", ghImg, f.ghcrAuth)
	push(t, f.ghcr.Addr()+"/library/same:v1", sameGh, f.ghcrAuth)

	ctd.mirror(t, "docker.io", "https://registry-1.docker.io", f.w.Addr())
	ctd.mirror(t, "ghcr.io", "https://ghcr.io", f.w.Addr())

	digestOf := func(img v1.Image) string {
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d.String()
	}
	for _, c := range []struct {
		ref string
		img v1.Image
	}{
		{"docker.io/library/fleet-alpine:3", hubImg},
		{"ghcr.io/owner/fleet-app:1", ghImg},
		{"docker.io/library/same:v1", sameHub},
		{"ghcr.io/library/same:v1", sameGh},
	} {
		if got := ctd.pull(t, c.ref); got != digestOf(c.img) {
			t.Fatalf("%s: containerd has %s, the upstream %s", c.ref, got, digestOf(c.img))
		}
	}
	hubCounts := map[string]int{"library/fleet-alpine": upstreamGETs(t, f.hub, "library/fleet-alpine"), "owner/fleet-app": upstreamGETs(t, f.hub, "owner/fleet-app")}
	ghCounts := map[string]int{"library/fleet-alpine": upstreamGETs(t, f.ghcr, "library/fleet-alpine"), "owner/fleet-app": upstreamGETs(t, f.ghcr, "owner/fleet-app")}
	// manifest + config + 2 layers, each from its own upstream only
	if hubCounts["library/fleet-alpine"] != 4 || hubCounts["owner/fleet-app"] != 0 || ghCounts["owner/fleet-app"] != 4 || ghCounts["library/fleet-alpine"] != 0 {
		t.Fatalf("upstream GETs: docker.io stand-in %v, ghcr.io stand-in %v", hubCounts, ghCounts)
	}
	if upstreamGETs(t, f.hub, "library/same") == 0 || upstreamGETs(t, f.ghcr, "library/same") == 0 {
		t.Fatal("library/same was not fetched from both upstreams")
	}
	// containerd asked with the registry in ?ns=, not in the path.
	if !strings.Contains(f.w.Log(), `"path":"/v2/owner/fleet-app/manifests/`) {
		t.Fatalf("wharf's access log has no ns-form request for owner/fleet-app")
	}

	// The catalog keeps the upstreams apart.
	resp, err := http.Get(f.w.URL() + "/v2/_catalog")
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	for _, want := range []string{`"docker.io/library/fleet-alpine"`, `"ghcr.io/owner/fleet-app"`, `"docker.io/library/same"`, `"ghcr.io/library/same"`} {
		if !strings.Contains(body, want) {
			t.Fatalf("catalog %s lacks %s", body, want)
		}
	}

	// A registry that is not configured: 404 naming the configured ones.
	resp, err = http.Get(f.w.URL() + "/v2/library/fleet-alpine/manifests/3?ns=quay.io")
	if err != nil {
		t.Fatal(err)
	}
	body = readAll(t, resp)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "docker.io, ghcr.io") {
		t.Fatalf("ns=quay.io: %d %s", resp.StatusCode, body)
	}
	ctd.mirror(t, "quay.io", "https://quay.invalid", f.w.Addr())
	if out, err := ctd.run(t, "images", "pull", "--hosts-dir", ctd.hosts, "--snapshotter", "native", "quay.io/library/fleet-alpine:3"); err == nil {
		t.Fatalf("containerd pulled an unconfigured registry through wharf:\n%s", out)
	}

	// Metrics name each upstream.
	metrics := adminMetrics(t, f.w)
	for _, want := range []string{
		`wharf_cache_requests_total{kind="blob",result="miss",site="127.0.0.1",upstream="docker.io"}`,
		`wharf_cache_requests_total{kind="blob",result="miss",site="127.0.0.1",upstream="ghcr.io"}`,
		`wharf_cache_upstream_bytes_total{site="127.0.0.1",upstream="ghcr.io"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("/metrics lacks %s:\n%s", want, grepLines(metrics, "wharf_cache_"))
		}
	}

	// podman: a registries.conf mirror with the registry in the path.
	podman := harness.Podman(t)
	conf := fmt.Sprintf(`unqualified-search-registries = []
[[registry]]
prefix = "ghcr.io"
location = "ghcr.io"
[[registry.mirror]]
location = "%s/ghcr.io"
insecure = true
`, f.w.Addr())
	if err := os.WriteFile(filepath.Join(podman.ConfigDir, "registries.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	before := upstreamGETs(t, f.ghcr, "owner/fleet-app")
	podman.Must(t, "pull", "ghcr.io/owner/fleet-app:1")
	out := podman.Must(t, "image", "inspect", "--format", "{{.Digest}}", "ghcr.io/owner/fleet-app:1")
	if strings.TrimSpace(out) != digestOf(ghImg) {
		t.Fatalf("podman has %s, want %s", out, digestOf(ghImg))
	}
	if after := upstreamGETs(t, f.ghcr, "owner/fleet-app"); after != before {
		t.Fatalf("podman's pull through the mirror went upstream again (%d -> %d GETs); the ns and path forms should share records", before, after)
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := bufio.NewReader(resp.Body).WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func adminMetrics(t *testing.T, w *harness.Wharf) string {
	t.Helper()
	resp, err := http.Get("http://" + w.AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return readAll(t, resp)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func metricValue(t *testing.T, metrics, series string) float64 {
	t.Helper()
	for _, l := range strings.Split(metrics, "\n") {
		if rest, ok := strings.CutPrefix(l, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			return v
		}
	}
	t.Fatalf("no %s in /metrics:\n%s", series, grepLines(metrics, "wharf_cache_"))
	return 0
}

// TestMaxSizeHeld: a mirror with max_size pulls 25 images (about 1 MiB
// each) one after the other with crane; after each pull the cache settles
// within max_size (its size gauge and the bytes on disk). Image 0, whose
// pull began (manifest fetched) before the others, is not evicted under
// it: its layers are still served with the upstream gone. wharf gc
// -dry-run then has nothing to do.
func TestMaxSizeHeld(t *testing.T) {
	const maxSize = 8 << 20
	f := startFleet(t, `max_size = "8MiB"`)
	crane := harness.Crane(t)
	const n = 25
	imgs := make([]v1.Image, n)
	for i := range imgs {
		imgs[i] = harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 1, 1<<20)
		push(t, fmt.Sprintf("%s/library/budget%d:v1", f.hub.Addr(), i), imgs[i])
	}
	root := filepath.Join(f.w.Config.DataDir, "cache", "127.0.0.1")
	ref := func(i int) string { return fmt.Sprintf("%s/library/budget%d:v1", f.w.Addr(), i) }

	crane.Must(t, "pull", "--insecure", ref(0), filepath.Join(t.TempDir(), "0.tar"))
	// image 0's pull begins: its manifest is fetched, its layers not yet
	m0, err := remote.Get(harness.Ref(t, ref(0)), harness.RemoteOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < n; i++ {
		crane.Must(t, "pull", "--insecure", ref(i), filepath.Join(t.TempDir(), "x.tar"))
		settled := false
		for wait := 0; wait < 300 && !settled; wait++ { // bounds a hang, not a speed
			met := adminMetrics(t, f.w)
			settled = metricValue(t, met, `wharf_cache_size_bytes{site="127.0.0.1"}`) <= maxSize && liveBlobBytes(t, root) <= maxSize
			if !settled {
				time.Sleep(100 * time.Millisecond)
			}
		}
		if !settled {
			t.Fatalf("after pull %d the cache holds %d bytes, max_size %d", i, liveBlobBytes(t, root), maxSize)
		}
	}
	met := adminMetrics(t, f.w)
	if metricValue(t, met, `wharf_cache_evictions_total{site="127.0.0.1"}`) == 0 || metricValue(t, met, `wharf_cache_max_size_bytes{site="127.0.0.1"}`) != maxSize {
		t.Fatalf("metrics:\n%s", grepLines(met, "wharf_cache_"))
	}
	// Image 0's pull goes on with the upstream gone.
	f.hub.Stop(t)
	img0, err := m0.Image()
	if err != nil {
		t.Fatal(err)
	}
	if err := harness.CompareImages(img0, imgs[0], harness.Exact); err != nil {
		t.Fatalf("image 0 after 24 other pulls: %v", err)
	}
	out := wharfGC(t, f.w, "-dry-run")
	if !strings.Contains(out, "would remove 0 tags, 0 manifests, 0 blobs") || !strings.Contains(out, "to keep within max_size 8MiB") {
		t.Fatalf("gc -dry-run:\n%s", out)
	}
}

// liveBlobBytes is blobBytes while wharf may be evicting: a file removed
// during the walk is not counted.
func liveBlobBytes(t *testing.T, root string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(filepath.Join(root, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		n += fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
