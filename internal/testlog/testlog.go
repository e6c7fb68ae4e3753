// Package testlog gives tests a zerolog.Logger that writes to the test's
// log and stops when the test's cleanup starts.
//
// Background work that a test starts (certmagic's certificate jobs, a
// cache's downloads, a server's connections) can log a moment after the
// test function has returned. zerolog's TestWriter then calls t.Log on a
// finished test, which the race detector reports as a data race and which
// fails the test. A logger from New drops such late lines instead.
package testlog

import (
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

// New returns a logger at level that writes each line to t.Log until the
// test's cleanup starts, and drops lines after that.
func New(t testing.TB, level zerolog.Level) zerolog.Logger {
	w := &writer{t: t}
	t.Cleanup(w.close)
	return zerolog.New(w).Level(level)
}

// writer forwards to t.Log under a lock that close also takes, so that no
// t.Log call can overlap or follow the end of the test.
type writer struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Helper()
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *writer) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}
