package localfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/wharf-dev/wharf/backend/storage"
)

// DeleteRecordsIfOlder is DeleteRecordIfOlder for many records of one
// repository (retention removing thousands of tags): each record is
// removed under the same conditions and with the same atomicity against
// a rewrite or touch, but every directory touched is synced once at the
// end instead of once per record. removed[i] says whether keys[i] went;
// a record that does not exist is reported as not removed, no error.
// On an error the records before it are removed (and synced).
func (s *Store) DeleteRecordsIfOlder(_ context.Context, repo string, keys []string, cutoffs []time.Time) ([]bool, error) {
	removed := make([]bool, len(keys))
	if len(keys) == 0 {
		return removed, nil
	}
	// one folder of its own for the whole batch (see removeIfOlder)
	tmp, err := os.MkdirTemp(filepath.Join(s.root, dirTmp), "gc-*")
	if err != nil {
		return removed, mapErr(fmt.Errorf("conditional delete: %w", err))
	}
	defer os.Remove(tmp)
	moved := filepath.Join(tmp, "f")
	dirs := map[string]bool{}
	defer func() {
		for d := range dirs {
			syncDir(d)
		}
	}()
	stop := filepath.Join(s.root, dirRepos, filepath.FromSlash(repo))
	for i, key := range keys {
		p, err := s.recordPath(repo, key)
		if err != nil {
			return removed, err
		}
		ok, err := s.removeIfOlderVia(moved, p, cutoffs[i])
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return removed, err
		}
		if !ok {
			continue
		}
		removed[i] = true
		d := filepath.Dir(p)
		for ; len(d) > len(stop); d = filepath.Dir(d) {
			if os.Remove(d) != nil { // not empty
				break
			}
		}
		dirs[d] = true
	}
	return removed, nil
}
