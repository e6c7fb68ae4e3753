package cache

import (
	"archive/tar"
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// These tests run real programs: Debian's docker-registry (distribution
// 2.8) as the upstream, wharf itself (`wharf serve -config`) with a cache
// site in front of it, and crane and skopeo as clients.

// needTool finds a program or skips (fails under CI, where .ci/run
// installs everything).
func needTool(t *testing.T, name string, extra ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range extra {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed, and CI is set: .ci/run must install it", name)
	}
	t.Skipf("SKIPPING real-client test: %s is not installed (apt-get install docker-registry skopeo; go install github.com/google/go-containerregistry/cmd/crane@latest)", name)
	return ""
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proc is a program started by a test.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startProc(t *testing.T, logName string, name string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), logName)
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

// stop ends the program (by its own pid) and waits for it.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// peakRSS is the program's high-water mark of resident memory (VmHWM).
func (p *proc) peakRSS(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// waitHTTP waits until url answers 200 or the program exits.
func waitHTTP(t *testing.T, p *proc, url string) {
	t.Helper()
	for i := 0; ; i++ {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited:\n%s", p.cmd.Path, p.logText())
		default:
		}
		if i > 400 {
			t.Fatalf("%s does not answer: %v\n%s", url, err, p.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startDockerRegistry runs Debian's docker-registry with storage in a
// temporary folder and returns its host:port.
func startDockerRegistry(t *testing.T) (string, *proc) {
	t.Helper()
	bin := needTool(t, "docker-registry")
	addr := freeAddr(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n",
		filepath.Join(dir, "data"), addr)
	cfgFile := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "docker-registry.log", bin, "serve", cfgFile)
	waitHTTP(t, p, "http://"+addr+"/v2/")
	return addr, p
}

var buildOnce struct {
	sync.Once
	path string
	err  error
	out  []byte
}

// buildWharf builds cmd/wharf once per test binary.
func buildWharf(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wharf-cache-test-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "wharf")
		cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", buildOnce.path, "github.com/wharf-dev/wharf/cmd/wharf")
		buildOnce.out, buildOnce.err = cmd.CombinedOutput()
	})
	if buildOnce.err != nil {
		t.Fatalf("build wharf: %v\n%s", buildOnce.err, buildOnce.out)
	}
	return buildOnce.path
}

// startWharfCache runs `wharf serve -config` with one cache site (every
// host name, plain HTTP, no auth) for the upstream and returns host:port.
func startWharfCache(t *testing.T, upstream, dataDir string) (string, *proc) {
	t.Helper()
	bin := buildWharf(t)
	addr := freeAddr(t)
	cfg := fmt.Sprintf(`data_dir = %q
[listen]
http = %q
admin = ""
[log]
level = "debug"
[[site]]
host = "*"
backend = "cache"
tls = "off"
[site.cache]
upstream = %q
ttl = "1h"
`, dataDir, addr, upstream)
	cfgFile := filepath.Join(t.TempDir(), "gateway.toml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "wharf.log", bin, "serve", "-config", cfgFile)
	waitHTTP(t, p, "http://"+addr+"/v2/")
	return addr, p
}

func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// runToolTo runs a program with its standard output going to a file.
func runToolTo(t *testing.T, path string, name string, args ...string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stderr strings.Builder
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	cmd.Stdout, cmd.Stderr = f, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
}

// writeLayer writes a tar holding one file of n random bytes.
func writeLayer(t *testing.T, path string, n int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	if err := tw.WriteHeader(&tar.Header{Name: "random.bin", Mode: 0o644, Size: n, ModTime: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(tw, rand.Reader, n); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func fileDigest(t *testing.T, path string) digest.Digest {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := digest.SHA256.FromReader(f)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Images pushed to a real docker-registry pull through wharf's cache site
// with crane and skopeo with the same digests, manifests and layers, and
// pull again with the upstream stopped.
func TestRealClientsThroughWharf(t *testing.T) {
	if testing.Short() {
		t.Skip("real-client test")
	}
	crane := needTool(t, "crane", "/root/go/bin/crane", filepath.Join(os.Getenv("HOME"), "go", "bin", "crane"))
	skopeo := needTool(t, "skopeo")
	upAddr, upProc := startDockerRegistry(t)
	dir := t.TempDir()
	layer := filepath.Join(dir, "layer.tar")
	writeLayer(t, layer, 12<<20)

	// v1: Docker schema 2 (crane's default), v2: OCI
	runTool(t, crane, "append", "--insecure", "-f", layer, "-t", upAddr+"/team/app:v1")
	runTool(t, crane, "append", "--insecure", "--oci-empty-base", "-f", layer, "-t", upAddr+"/team/app:v2")

	wharfAddr, wharfProc := startWharfCache(t, "http://"+upAddr, filepath.Join(dir, "wharf-data"))

	want := map[string]string{}
	for _, tag := range []string{"v1", "v2"} {
		direct := runTool(t, crane, "manifest", "--insecure", upAddr+"/team/app:"+tag)
		want[tag] = direct
		via := runTool(t, crane, "manifest", "--insecure", wharfAddr+"/team/app:"+tag)
		if via != direct {
			t.Fatalf("%s: manifest through wharf differs:\n%s\ndirect:\n%s", tag, via, direct)
		}
		dd := runTool(t, crane, "digest", "--insecure", upAddr+"/team/app:"+tag)
		vd := runTool(t, crane, "digest", "--insecure", wharfAddr+"/team/app:"+tag)
		if dd != vd || !strings.HasPrefix(dd, "sha256:") {
			t.Fatalf("%s: digest through wharf %s, direct %s", tag, vd, dd)
		}
		want[tag+"@"] = dd
	}
	if !strings.Contains(want["v1"], "application/vnd.docker.distribution.manifest.v2+json") || !strings.Contains(want["v2"], "application/vnd.oci.image.manifest.v1+json") {
		t.Fatalf("test images are not one Docker schema 2 and one OCI manifest:\n%s\n%s", want["v1"], want["v2"])
	}

	pull := func(round string) {
		t.Helper()
		for _, tag := range []string{"v1", "v2"} {
			var m struct {
				Layers []struct {
					Digest digest.Digest `json:"digest"`
				} `json:"layers"`
			}
			if err := json.Unmarshal([]byte(want[tag]), &m); err != nil || len(m.Layers) != 1 {
				t.Fatalf("manifest %s: %v", want[tag], err)
			}
			layerDigest := m.Layers[0].Digest
			// crane: the (compressed) layer comes out byte for byte
			out := filepath.Join(dir, round+"-"+tag+"-layer.tar.gz")
			runToolTo(t, out, crane, "blob", "--insecure", wharfAddr+"/team/app@"+string(layerDigest))
			if got := fileDigest(t, out); got != layerDigest {
				t.Fatalf("%s %s: crane blob digest %s, want %s", round, tag, got, layerDigest)
			}
			ref := wharfAddr + "/team/app:" + tag
			if got := runTool(t, crane, "digest", "--insecure", ref); got != want[tag+"@"] {
				t.Fatalf("%s %s: crane digest %s, want %s", round, tag, got, want[tag+"@"])
			}
			tarball := filepath.Join(dir, round+"-"+tag+"-crane.tar")
			runTool(t, crane, "pull", "--insecure", "--format", "tarball", ref, tarball)

			// skopeo: copy to a dir: keeps the manifest bytes and blobs
			dst := filepath.Join(dir, round+"-"+tag+"-skopeo")
			runTool(t, skopeo, "copy", "--src-tls-verify=false", "docker://"+ref, "dir:"+dst)
			raw, err := os.ReadFile(filepath.Join(dst, "manifest.json"))
			if err != nil {
				t.Fatal(err)
			}
			if string(raw) != want[tag] && strings.TrimSpace(string(raw)) != want[tag] {
				t.Fatalf("%s %s: skopeo's manifest differs:\n%s", round, tag, raw)
			}
			if got := digest.FromBytes(raw); string(got) != want[tag+"@"] {
				t.Fatalf("%s %s: skopeo manifest digest %s, want %s", round, tag, got, want[tag+"@"])
			}
			if got := fileDigest(t, filepath.Join(dst, layerDigest.Encoded())); got != layerDigest {
				t.Fatalf("%s %s: skopeo layer digest %s", round, tag, got)
			}
			insp := runTool(t, skopeo, "inspect", "--tls-verify=false", "--raw", "docker://"+ref)
			if insp != want[tag] {
				t.Fatalf("%s %s: skopeo inspect --raw differs", round, tag)
			}
		}
	}
	pull("online")
	// a push is refused with a clear message
	cmd := exec.Command(crane, "append", "--insecure", "-f", layer, "-t", wharfAddr+"/team/app:v3")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "read-only mirror") {
		t.Fatalf("push to the mirror: %v\n%s", err, out)
	}

	// The upstream goes away: everything pulled before still pulls.
	upProc.stop()
	if resp, err := http.Get("http://" + upAddr + "/v2/"); err == nil {
		resp.Body.Close()
		t.Fatal("upstream still answers")
	}
	pull("offline")
	if tags := runTool(t, crane, "ls", "--insecure", wharfAddr+"/team/app"); tags != "v1\nv2" {
		t.Fatalf("offline tag list %q", tags)
	}
	if cat := runTool(t, crane, "catalog", "--insecure", wharfAddr); cat != "team/app" {
		t.Fatalf("catalog %q", cat)
	}
	t.Logf("wharf peak RSS after pulls of a 12 MiB layer: %d MiB", wharfProc.peakRSS(t)>>20)
	if strings.Contains(wharfProc.logText(), "panic") {
		t.Fatalf("wharf log has a panic:\n%s", wharfProc.logText())
	}
}

// A 1 GiB layer streams through the cache (miss: upstream -> store and
// client at once; hit: from the store) in flat memory.
func TestRealOneGiBBlobMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB test")
	}
	upAddr, _ := startDockerRegistry(t)
	dir := t.TempDir()
	const size = 1 << 30
	// Push the blob straight to the registry (monolithic POST), streaming
	// it from a hashing writer so the test does not hold it either.
	d := pushRandomBlob(t, "http://"+upAddr, "big/blob", size)
	wharfAddr, wharfProc := startWharfCache(t, "http://"+upAddr, filepath.Join(dir, "wharf-data"))
	for _, round := range []string{"miss", "hit"} {
		resp, err := http.Get("http://" + wharfAddr + "/v2/big/blob/blobs/" + string(d))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || n != size {
			t.Fatalf("%s: status %d, %d bytes, %v", round, resp.StatusCode, n, err)
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != string(d) {
			t.Fatalf("%s: digest %s, want %s", round, got, d)
		}
		rss := wharfProc.peakRSS(t)
		t.Logf("wharf peak RSS after the 1 GiB %s: %d MiB", round, rss>>20)
		if rss >= 64<<20 {
			t.Fatalf("peak RSS %d MiB >= 64 MiB", rss>>20)
		}
	}
}

// pushRandomBlob uploads size random bytes monolithically and returns the
// digest.
func pushRandomBlob(t *testing.T, base, repo string, size int64) digest.Digest {
	t.Helper()
	// First pass: hash a seeded stream; second: send the same stream.
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, newPRNG(seed), size); err != nil {
		t.Fatal(err)
	}
	d := digest.Digest("sha256:" + hex.EncodeToString(h.Sum(nil)))
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
	req, err := http.NewRequest("PUT", loc+sep+"digest="+string(d), io.LimitReader(newPRNG(seed), size))
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

// newPRNG is a fast deterministic byte stream for a seed.
func newPRNG(seed [32]byte) io.Reader { return mrand.NewChaCha8(seed) }
