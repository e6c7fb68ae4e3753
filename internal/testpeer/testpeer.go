// Package testpeer decides what a test does when a real peer it drives
// (pebble, crane, curl, docker-registry, nginx, htpasswd) is missing: on a
// developer's machine it skips with a loud line; with CI set it fails, so a
// green CI always means the real-client tests ran.
package testpeer

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Missing skips (developer machine) or fails (CI) the test because a real
// peer is not available; the message says what to install.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set but a real peer is missing: %s (.ci/install installs it)", msg)
		return
	}
	t.Skipf("!!!!! REAL-PEER TEST NOT RUN: %s (run .ci/install)", msg)
}

// Need returns the path of an executable or calls Missing.
func Need(t testing.TB, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s not found: %s", name, install)
	}
	return p
}
