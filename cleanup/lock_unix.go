//go:build unix

package cleanup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// LockFile is the name of the lock below data_dir that keeps two
// clean-ups (a scheduled run, `wharf gc`, another instance on the same
// data directory) from running at once.
const LockFile = "gc.lock"

// ErrBusy: another clean-up holds the lock.
var ErrBusy = errors.New("another gc is running on this data directory")

// Lock takes the data directory's gc lock without waiting (flock(2): the
// kernel drops it when the process dies, so a crash leaves no stale lock).
// The returned function releases it.
func Lock(dataDir string) (func(), error) {
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("gc lock: %w", err)
	}
	p := filepath.Join(dataDir, LockFile)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("gc lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (lock %s)", ErrBusy, p)
		}
		return nil, fmt.Errorf("gc lock %s: %w", p, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
