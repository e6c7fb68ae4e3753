package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// commandTimeout bounds one client command so that a hung client fails the
// test instead of eating the CI budget. It is not a speed assertion.
const commandTimeout = 5 * time.Minute

// Tool is a command-line client (docker, podman, skopeo, crane) with its own
// environment and leading arguments, isolated from the host's and other
// tests' configuration and credentials.
type Tool struct {
	// Name labels log lines.
	Name string
	// Path is the executable.
	Path string
	// Prefix goes before the arguments of every call (e.g. podman's --root).
	Prefix []string
	// Env is added to the test's environment.
	Env []string
	// Dir is the working directory of every call.
	Dir string
	// ConfigDir is the tool's private folder (DOCKER_CONFIG, auth file...).
	ConfigDir string
}

// Command returns an unstarted command for args, for callers that need to
// run it asynchronously (the crash test) or feed stdin (login).
func (c *Tool) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.Path, append(append([]string{}, c.Prefix...), args...)...)
	cmd.Env = append(os.Environ(), c.Env...)
	cmd.Dir = c.Dir
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// Run runs the tool with args and returns its combined output. The error
// includes the command line and the output.
func (c *Tool) Run(t testing.TB, args ...string) (string, error) {
	t.Helper()
	return c.RunStdin(t, "", args...)
}

// RunStdin is Run with stdin.
func (c *Tool) RunStdin(t testing.TB, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := c.Command(ctx, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	t.Logf("$ %s %s", c.Name, strings.Join(args, " "))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", c.Name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Must runs the tool and fails the test if it exits non-zero.
func (c *Tool) Must(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.Run(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Crane returns crane with a private DOCKER_CONFIG. Pass --insecure for
// plain-HTTP registries.
func Crane(t testing.TB) *Tool {
	t.Helper()
	path := Require(t, "crane")
	dir := t.TempDir()
	return &Tool{
		Name: "crane", Path: path, ConfigDir: dir, Dir: dir,
		Env: []string{"DOCKER_CONFIG=" + dir},
	}
}

// containersFiles writes a signature policy that accepts anything and an
// empty registries.conf, so skopeo and podman behave the same on every
// machine, and returns the environment that points at them.
func containersFiles(t testing.TB, dir string) (policy string, env []string) {
	t.Helper()
	policy = filepath.Join(dir, "policy.json")
	regs := filepath.Join(dir, "registries.conf")
	auth := filepath.Join(dir, "auth.json")
	files := map[string]string{
		policy: `{"default":[{"type":"insecureAcceptAnything"}]}` + "\n",
		regs:   "unqualified-search-registries = []\n",
		auth:   `{"auths":{}}` + "\n",
	}
	for p, s := range files {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatalf("write %s: %v", p, err)
		}
	}
	return policy, []string{
		"CONTAINERS_REGISTRIES_CONF=" + regs,
		"REGISTRY_AUTH_FILE=" + auth,
		"TMPDIR=" + dir,
		"DOCKER_CONFIG=" + dir,
	}
}

// Skopeo returns skopeo with a private policy, registries.conf and auth
// file. Pass --src-tls-verify=false / --dest-tls-verify=false for plain HTTP.
func Skopeo(t testing.TB) *Tool {
	t.Helper()
	path := Require(t, "skopeo")
	dir := t.TempDir()
	policy, env := containersFiles(t, dir)
	return &Tool{
		Name: "skopeo", Path: path, ConfigDir: dir, Dir: dir,
		Prefix: []string{"--policy", policy},
		Env:    env,
	}
}

// Podman returns podman with vfs storage in private temp folders (root,
// runroot, tmpdir), its own auth file and registries.conf. Pass
// --tls-verify=false for plain HTTP.
func Podman(t testing.TB) *Tool {
	t.Helper()
	path := Require(t, "podman")
	RequireRoot(t, "podman with private storage")
	// podman refuses a runroot longer than 50 bytes: keep the folder short.
	dir, err := os.MkdirTemp("", "wp-")
	if err != nil {
		t.Fatalf("podman dir: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("remove podman folder: %v", err)
		}
	})
	_, env := containersFiles(t, dir)
	for _, d := range []string{"root", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatalf("podman dir: %v", err)
		}
	}
	return &Tool{
		Name: "podman", Path: path, ConfigDir: dir, Dir: dir,
		Prefix: []string{
			"--root", filepath.Join(dir, "root"),
			"--runroot", filepath.Join(dir, "run"),
			"--tmpdir", filepath.Join(dir, "tmp"),
			"--storage-driver", "vfs",
			"--events-backend", "file",
			"--cgroup-manager", "cgroupfs",
		},
		Env: env,
	}
}

// Login runs `<tool> login` for host with the password on stdin (docker,
// podman and skopeo take the same flags; add "--tls-verify=false" in extra
// for podman or skopeo on plain HTTP). It returns the output and error so
// tests can check both successful and refused logins.
func Login(t testing.TB, tool *Tool, host, user, password string, extra ...string) (string, error) {
	t.Helper()
	args := append([]string{"login", "-u", user, "--password-stdin"}, extra...)
	return tool.RunStdin(t, password+"\n", append(args, host)...)
}
