package harness

import (
	"fmt"
	"os"
	"sync"
	"testing"
)

// binary-wide state: things built or started once per test binary and torn
// down by Main. This is the harness's only package-level state.
var (
	mainMu       sync.Mutex
	mainActive   bool
	mainCleanups []func()
)

// Main runs the tests of a package and then tears down what the harness
// started once for the whole binary (the wharf build, dockerd). Use it as
//
//	func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
func Main(m *testing.M) int {
	mainMu.Lock()
	mainActive = true
	mainMu.Unlock()
	code := m.Run()
	mainMu.Lock()
	cleanups := mainCleanups
	mainCleanups = nil
	mainMu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	return code
}

// requireMain fails the test if the package's TestMain does not use Main,
// since binary-wide resources would then leak.
func requireMain(t testing.TB) {
	t.Helper()
	mainMu.Lock()
	defer mainMu.Unlock()
	if !mainActive {
		t.Fatal("harness: this test binary's TestMain must call harness.Main(m)")
	}
}

// atExit registers f to run when Main returns (call requireMain first).
func atExit(f func()) {
	mainMu.Lock()
	defer mainMu.Unlock()
	mainCleanups = append(mainCleanups, f)
}

// logf prints a harness message outside any test (during teardown).
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "harness: "+format+"\n", args...)
}

// BinaryTempDir makes a temp folder that lives as long as the test binary
// (for tools built once per binary) and is removed when Main returns.
func BinaryTempDir(t testing.TB, pattern string) (string, error) {
	t.Helper()
	requireMain(t)
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", err
	}
	atExit(func() { _ = os.RemoveAll(dir) })
	return dir, nil
}
