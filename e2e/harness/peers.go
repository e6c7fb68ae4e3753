package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// InCI reports whether the CI environment variable is set to a true value.
// Under CI a missing peer is a failure, not a skip.
func InCI() bool {
	switch strings.ToLower(strings.TrimSpace(os.Getenv("CI"))) {
	case "", "0", "false", "no", "off":
		return false
	}
	return true
}

// MissingPeer ends the test because a real peer (a tool, a daemon, a port)
// is not available. Without CI it skips with a loud message; with CI set it
// fails, so that a green CI run means the real-client tests ran.
func MissingPeer(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := "!!!!! REAL-PEER TEST NOT RUN: " + sprintf(format, args...) +
		" (run .ci/install to get every peer; with CI=true this is a failure) !!!!!"
	if InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Require returns the absolute path of an executable tool, looked up in
// PATH and then in $(go env GOPATH)/bin (where `go install` puts crane and
// pebble). A missing tool ends the test through MissingPeer.
func Require(t testing.TB, tool string) string {
	t.Helper()
	p, err := LookTool(tool)
	if err != nil {
		MissingPeer(t, "%s not found: %v", tool, err)
	}
	return p
}

// LookTool finds an executable like Require but returns an error instead of
// ending the test.
func LookTool(tool string) (string, error) {
	if p, err := exec.LookPath(tool); err == nil {
		return p, nil
	}
	for _, dir := range goBinDirs() {
		p := filepath.Join(dir, tool)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return exec.LookPath(tool)
}

// goBinDirs lists where `go install` may have put a binary.
func goBinDirs() []string {
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if gp := os.Getenv("GOPATH"); gp != "" {
		for _, p := range filepath.SplitList(gp) {
			dirs = append(dirs, filepath.Join(p, "bin"))
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	return dirs
}

// RequireRoot ends the test through MissingPeer unless it runs as root
// (dockerd and podman's vfs storage need it).
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		MissingPeer(t, "%s needs root", why)
	}
}
