package harness

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Dockerd is the test binary's private Docker daemon (Debian's docker.io):
// vfs storage, no iptables, no bridge, its own socket, data-root and
// exec-root in a short temp folder, and its own containerd that it starts
// and stops itself.
type Dockerd struct {
	// Host is the DOCKER_HOST value ("unix:///tmp/.../docker.sock").
	Host string
	// Dir holds socket, data-root, exec-root, pid file and log.
	Dir  string
	proc *Process
}

var (
	dockerdOnce sync.Once
	dockerd     *Dockerd
	dockerdErr  error
)

// StartDockerd returns the binary-wide dockerd, starting it on first use.
// It runs until Main returns. Docker treats 127.0.0.0/8 as insecure
// registries, so pushes to plain-HTTP loopback registries work.
func StartDockerd(t testing.TB) *Dockerd {
	t.Helper()
	path := Require(t, "dockerd")
	Require(t, "containerd")
	Require(t, "runc")
	dockerCLI(t)
	RequireRoot(t, "dockerd")
	requireMain(t)
	dockerdOnce.Do(func() { dockerd, dockerdErr = startDockerd(path) })
	if dockerdErr != nil {
		t.Fatalf("start dockerd: %v", dockerdErr)
	}
	return dockerd
}

func startDockerd(path string) (*Dockerd, error) {
	// unix socket paths are limited to 108 bytes: keep the folder short.
	dir, err := os.MkdirTemp("", "wd-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	d := &Dockerd{Host: "unix://" + filepath.Join(dir, "docker.sock"), Dir: dir}
	daemonJSON := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(daemonJSON, []byte("{}\n"), 0o644); err != nil {
		return nil, fmt.Errorf("daemon.json: %w", err)
	}
	sock := filepath.Join(dir, "docker.sock")
	ns := "wharf-e2e-" + filepath.Base(dir)
	d.proc = &Process{
		Name: "dockerd",
		Path: path,
		Args: []string{
			"--config-file", daemonJSON,
			"-H", d.Host,
			"--data-root", filepath.Join(dir, "root"),
			"--exec-root", filepath.Join(dir, "exec"),
			"--pidfile", filepath.Join(dir, "docker.pid"),
			"--storage-driver", "vfs",
			"--iptables=false",
			"--ip-forward=false",
			"--ip-masq=false",
			"--bridge=none",
			"--userland-proxy=false",
			// If a system containerd runs, dockerd uses it instead of
			// starting its own; private namespaces keep parallel test
			// binaries' daemons apart there.
			"--containerd-namespace", ns,
			"--containerd-plugins-namespace", ns + "-plugins",
		},
		Dir:     dir,
		LogPath: filepath.Join(dir, "dockerd.log"),
		Ready:   func() error { return pingDocker(sock) },
	}
	// The daemon outlives any one test, so it is started outside
	// StartProcess and stopped by Main.
	ft := &fatalCatcher{}
	func() {
		defer func() { _ = recover() }()
		d.proc.Start(ft)
	}()
	atExit(func() { d.stop() })
	if ft.err != nil {
		return nil, ft.err
	}
	return d, nil
}

// stop shuts dockerd down (it stops its containerd) and removes its folder.
func (d *Dockerd) stop() {
	p := d.proc
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(stopTimeout):
			logf("dockerd ignored SIGTERM; killing it")
			_ = cmd.Process.Kill()
			<-done
		}
	}
	if os.Getenv("WHARF_E2E_LOGS") != "" {
		logf("dockerd log:\n%s", p.LogTail(64<<10))
	}
	// dockerd leaves the host network's namespace file bind-mounted
	// under exec/netns after a container ran with --network host.
	if ents, err := os.ReadDir(filepath.Join(d.Dir, "exec", "netns")); err == nil {
		for _, e := range ents {
			_ = syscall.Unmount(filepath.Join(d.Dir, "exec", "netns", e.Name()), syscall.MNT_DETACH)
		}
	}
	if err := os.RemoveAll(d.Dir); err != nil {
		logf("remove dockerd folder: %v", err)
	}
}

// LogTail returns the end of dockerd's log.
func (d *Dockerd) LogTail(n int64) string { return d.proc.LogTail(n) }

// pingDocker asks the API on a unix socket for /_ping.
func pingDocker(sock string) error {
	c := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}
	resp, err := c.Get("http://docker/_ping")
	if err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ping: %s", resp.Status)
	}
	return nil
}

// Client returns the docker CLI talking to this daemon, with its own
// DOCKER_CONFIG temp folder (so `docker login` writes there).
func (d *Dockerd) Client(t testing.TB) *Tool {
	t.Helper()
	dir := t.TempDir()
	return &Tool{
		Name: "docker", Path: dockerCLI(t), ConfigDir: dir, Dir: dir,
		Env: []string{"DOCKER_HOST=" + d.Host, "DOCKER_CONFIG=" + dir},
	}
}

// Docker starts (or reuses) the binary-wide dockerd and returns a docker CLI
// for it with a fresh DOCKER_CONFIG.
func Docker(t testing.TB) *Tool {
	t.Helper()
	return StartDockerd(t).Client(t)
}

// dockerCLI prefers Debian's /usr/bin/docker, which matches its dockerd.
func dockerCLI(t testing.TB) string {
	t.Helper()
	const debian = "/usr/bin/docker"
	if st, err := os.Stat(debian); err == nil && st.Mode()&0o111 != 0 {
		return debian
	}
	return Require(t, "docker")
}

// fatalCatcher is a testing.TB stand-in used where no test owns the work
// (starting a binary-wide daemon): it turns Fatal into an error.
type fatalCatcher struct {
	testing.TB
	err error
}

func (f *fatalCatcher) Helper()                           {}
func (f *fatalCatcher) Logf(format string, args ...any)   {}
func (f *fatalCatcher) Errorf(format string, args ...any) { f.fail(format, args...) }
func (f *fatalCatcher) Fatalf(format string, args ...any) { f.fail(format, args...); panic(f) }
func (f *fatalCatcher) Fatal(args ...any)                 { f.fail("%s", fmt.Sprint(args...)); panic(f) }
func (f *fatalCatcher) fail(format string, args ...any) {
	if f.err == nil {
		f.err = fmt.Errorf(format, args...)
	}
}
