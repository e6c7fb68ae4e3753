// Package deploy tests the deployment files of issue #12 with the real
// tools: `make image` against the harness's private dockerd, the image run
// with --network host (docker push and pull through it, its HEALTHCHECK
// turning healthy) and in its own network namespace (non-root on port 80),
// `docker-compose config` on deploy/compose.yaml, and `systemd-analyze
// verify` on deploy/wharf.service.
package deploy

import (
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/e2e/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

var (
	imageOnce sync.Once
	imageTag  string
	imageErr  error
)

// buildImage runs `make image` once per test binary against the harness's
// dockerd (DOCKER_HOST) with a version unique to this run, and returns the
// image's tag.
func buildImage(t *testing.T, docker *harness.Tool) string {
	t.Helper()
	harness.Require(t, "make")
	imageOnce.Do(func() {
		b := make([]byte, 4)
		rand.Read(b)
		version := "e2e-" + hex.EncodeToString(b)
		cmd := exec.Command("make", "image", "VERSION="+version)
		cmd.Dir = moduleRoot(t)
		cmd.Env = append(os.Environ(), docker.Env...)
		out, err := cmd.CombinedOutput()
		t.Logf("make image VERSION=%s:\n%s", version, out)
		if err != nil {
			imageErr = fmt.Errorf("make image: %v\n%s", err, out)
			return
		}
		imageTag = "wharf:" + version
	})
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return imageTag
}

// waitHealthy polls the container's health status until it is healthy;
// the bound only turns a hang into a failure.
func waitHealthy(t *testing.T, docker *harness.Tool, name string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err := docker.Run(t, "inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}", name)
		if err == nil && strings.TrimSpace(out) == "running healthy" {
			return
		}
		if time.Now().After(deadline) || strings.HasPrefix(out, "exited") {
			logs, _ := docker.Run(t, "logs", name)
			health, _ := docker.Run(t, "inspect", "-f", "{{json .State.Health}}", name)
			t.Fatalf("container %s never became healthy: %s %v\nhealth: %s\nlogs:\n%s", name, out, err, health, logs)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func TestImage(t *testing.T) {
	docker := harness.Docker(t)
	tag := buildImage(t, docker)
	version := strings.TrimPrefix(tag, "wharf:")

	// What the image says about itself.
	var inspect []struct {
		Config struct {
			User         string
			ExposedPorts map[string]any
			Volumes      map[string]any
			Entrypoint   []string
			Cmd          []string
			Healthcheck  struct{ Test []string }
		}
		RootFS struct{ Layers []string }
	}
	if err := json.Unmarshal([]byte(docker.Must(t, "image", "inspect", tag)), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("image inspect: %v", err)
	}
	c := inspect[0].Config
	if c.User != "65532:65532" {
		t.Errorf("USER %q, want 65532:65532 (not root)", c.User)
	}
	for _, p := range []string{"80/tcp", "443/tcp"} {
		if _, ok := c.ExposedPorts[p]; !ok {
			t.Errorf("EXPOSE lacks %s: %v", p, c.ExposedPorts)
		}
	}
	if _, ok := c.Volumes["/var/lib/wharf"]; !ok {
		t.Errorf("VOLUME lacks /var/lib/wharf: %v", c.Volumes)
	}
	if h := strings.Join(c.Healthcheck.Test, " "); !strings.Contains(h, "wharf healthcheck -config /etc/wharf/gateway.toml") {
		t.Errorf("HEALTHCHECK %q", h)
	}
	if got := docker.Must(t, "image", "inspect", "-f", "{{.Id}}", "wharf:latest"); got != docker.Must(t, "image", "inspect", "-f", "{{.Id}}", tag) {
		t.Errorf("wharf:latest is not %s", tag)
	}
	// FROM scratch: a single layer with our four files, no shell.
	if n := len(inspect[0].RootFS.Layers); n > 4 {
		t.Errorf("%d layers; a FROM scratch image of a few COPYs has at most 4", n)
	}
	if out := docker.Must(t, "run", "--rm", "--network", "none", tag, "version"); !strings.Contains(out, "wharf "+version+" (commit ") {
		t.Errorf("wharf version in the image: %q, want version %s stamped", out, version)
	}
	if out, err := docker.Run(t, "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", tag, "-c", "true"); err == nil {
		t.Errorf("the image has a shell:\n%s", out)
	}

	t.Run("host network", func(t *testing.T) {
		httpAddr, adminAddr := harness.FreeAddr(t), harness.FreeAddr(t)
		dir := t.TempDir()
		os.Chmod(dir, 0o755)
		cfg := filepath.Join(dir, "gateway.toml")
		os.WriteFile(cfg, []byte(fmt.Sprintf(`data_dir = "/var/lib/wharf"
[listen]
http  = %q
https = ""
admin = %q
[[site]]
host    = "127.0.0.1"
backend = "registry"
tls     = "off"
`, httpAddr, adminAddr)), 0o644)
		name := "wharf-e2e-host-" + version
		vol := name + "-data"
		t.Cleanup(func() {
			docker.Run(t, "rm", "-f", name)
			docker.Run(t, "volume", "rm", "-f", vol)
		})
		// The interval is shortened for the test; the check is the image's.
		docker.Must(t, "run", "-d", "--name", name, "--network", "host",
			"--health-interval", "1s", "--health-start-period", "1s",
			"-v", vol+":/var/lib/wharf", "-v", cfg+":/etc/wharf/gateway.toml:ro", tag)
		waitHealthy(t, docker, name)

		img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 512<<10)
		local := "wharf-e2e.test/deploy-" + version + ":v1"
		ref := httpAddr + "/deploy/img:v1"
		docker.Must(t, "load", "-i", harness.WriteDockerArchive(t, img, local))
		docker.Must(t, "tag", local, ref)
		docker.Must(t, "push", ref)
		docker.Must(t, "rmi", ref, local)
		docker.Must(t, "pull", ref)
		harness.VerifyRemoteImage(t, ref, img, harness.Same{Config: true})
		logs := docker.Must(t, "logs", name)
		if !strings.Contains(logs, `"path":"/v2/deploy/img/manifests/v1"`) {
			t.Errorf("the push did not go through the container:\n%s", logs)
		}
	})

	t.Run("own network namespace, port 80 as non-root", func(t *testing.T) {
		// The image's own config: http ":80", admin 127.0.0.1:9100. In a
		// namespace of its own (here --network none) uid 65532 binds :80
		// without any capability, and the health check reaches the admin
		// listener inside it.
		name := "wharf-e2e-netns-" + version
		t.Cleanup(func() { docker.Run(t, "rm", "-f", "-v", name) })
		docker.Must(t, "run", "-d", "--name", name, "--network", "none", "--cap-drop", "ALL",
			"--health-interval", "1s", "--health-start-period", "1s", tag)
		waitHealthy(t, docker, name)
		if logs := docker.Must(t, "logs", name); strings.Contains(logs, "permission denied") {
			t.Errorf("bind failed:\n%s", logs)
		}
	})
}

// freePrivilegedPort finds a loopback port below 1024 that nothing holds.
func freePrivilegedPort(t *testing.T) string {
	t.Helper()
	for p := 1023; p > 900; p-- {
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		if harness.PortFree(addr) {
			return addr
		}
	}
	t.Fatal("no free port in 901-1023 on 127.0.0.1")
	return ""
}

// TestHostNetworkPrivilegedPort pins down what README.md says about
// --network host: Docker gives a non-root user no ambient capabilities,
// so --cap-add NET_BIND_SERVICE does not let uid 65532 bind below 1024
// (wharf exits with a clear error); --user 0 does.
func TestHostNetworkPrivilegedPort(t *testing.T) {
	docker := harness.Docker(t)
	tag := buildImage(t, docker)
	run := func(name string, extra ...string) string {
		addr := freePrivilegedPort(t)
		dir := t.TempDir()
		os.Chmod(dir, 0o755)
		cfg := filepath.Join(dir, "gateway.toml")
		os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir = \"/var/lib/wharf\"\n[listen]\nhttp = %q\nhttps = \"\"\nadmin = %q\n[[site]]\nhost = \"127.0.0.1\"\nbackend = \"registry\"\ntls = \"off\"\n", addr, harness.FreeAddr(t))), 0o644)
		t.Cleanup(func() { docker.Run(t, "rm", "-f", "-v", name) })
		args := append([]string{"run", "-d", "--name", name, "--network", "host", "--health-interval", "1s", "--health-start-period", "1s"}, extra...)
		docker.Must(t, append(args, "-v", cfg+":/etc/wharf/gateway.toml:ro", tag)...)
		return addr
	}
	suffix := strings.TrimPrefix(tag, "wharf:")
	capName := "wharf-e2e-cap-" + suffix
	addr := run(capName, "--cap-add", "NET_BIND_SERVICE")
	docker.Must(t, "wait", capName)
	if logs := docker.Must(t, "logs", capName); !strings.Contains(logs, "listen http "+addr) || !strings.Contains(logs, "permission denied") {
		t.Errorf("as uid 65532 with --cap-add NET_BIND_SERVICE on the host network, binding %s should fail with permission denied (README says so); logs:\n%s", addr, logs)
	}
	rootName := "wharf-e2e-root-" + suffix
	run(rootName, "--user", "0")
	waitHealthy(t, docker, rootName)
}

func TestComposeConfig(t *testing.T) {
	bin := harness.Require(t, "docker-compose")
	root := moduleRoot(t)
	dir := t.TempDir()
	// The compose file mounts ./gateway.toml next to it.
	compose, err := os.ReadFile(filepath.Join(root, "deploy", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "compose.yaml"), compose, 0o644)
	os.WriteFile(filepath.Join(dir, "gateway.toml"), nil, 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-f", "compose.yaml", "config")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	for _, want := range []string{"wharf-data:/var/lib/wharf", "/etc/wharf/gateway.toml:ro", "published: 443", "restart: unless-stopped"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("docker-compose config lacks %q:\n%s", want, out)
		}
	}
}

func TestSystemdUnit(t *testing.T) {
	bin := harness.Require(t, "systemd-analyze")
	root := moduleRoot(t)
	unit, err := os.ReadFile(filepath.Join(root, "deploy", "wharf.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"AmbientCapabilities=CAP_NET_BIND_SERVICE", "StateDirectory=wharf", "ExecReload=/bin/kill -HUP $MAINPID", "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes", "User=wharf"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("wharf.service lacks %s", want)
		}
	}
	// verify checks that ExecStart's program exists: point it at the
	// binary under test.
	wharf := harness.WharfBinary(t)
	verify := func(name, text string) (string, error) {
		dir := t.TempDir()
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(strings.ReplaceAll(text, "/usr/local/bin/wharf", wharf)), 0o644)
		out, err := exec.Command(bin, "verify", p).CombinedOutput()
		return string(out), err
	}
	if out, err := verify("wharf.service", string(unit)); err != nil || strings.Contains(out, "wharf.service") {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// and it does look: an unknown key in the unit is reported
	if out, _ := verify("wharf.service", strings.Replace(string(unit), "PrivateTmp=yes", "PrivateTmpp=yes", 1)); !strings.Contains(out, "PrivateTmpp") {
		t.Errorf("systemd-analyze verify did not report a misspelled key; is it checking at all?\n%s", out)
	}
}

// TestDist runs `make dist` with a version of its own: two static
// binaries with the version stamped, and a SHA256SUMS that sha256sum -c
// accepts.
func TestDist(t *testing.T) {
	harness.Require(t, "make")
	sha := harness.Require(t, "sha256sum")
	root := moduleRoot(t)
	b := make([]byte, 4)
	rand.Read(b)
	version := "e2e-" + hex.EncodeToString(b)
	cmd := exec.Command("make", "dist", "VERSION="+version)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make dist: %v\n%s", err, out)
	}
	dist := filepath.Join(root, "dist")
	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	check := exec.Command(sha, "-c", "SHA256SUMS")
	check.Dir = dist
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c SHA256SUMS: %v\n%s", err, out)
	}
	for arch, machine := range map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64} {
		name := "wharf-" + version + "-linux-" + arch
		if !strings.Contains(string(sums), "  "+name+"\n") {
			t.Errorf("SHA256SUMS lacks %s:\n%s", name, sums)
		}
		f, err := elf.Open(filepath.Join(dist, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if f.Machine != machine {
			t.Errorf("%s is for %v", name, f.Machine)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked (has an interpreter)", name)
			}
		}
		f.Close()
	}
	out, err := exec.Command(filepath.Join(dist, "wharf-"+version+"-linux-amd64"), "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "wharf "+version+" (commit ") {
		t.Errorf("wharf version: %q %v", out, err)
	}
}
