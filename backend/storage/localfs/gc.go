package localfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/storage"
)

// What garbage collection needs: blob listing and times, touching, and
// removal only of what nobody touched since a cutoff.
//
// A conditional removal renames the file into a fresh folder under tmp/,
// looks at its time there, and then deletes it or renames it back. A touch
// (utimensat by path) either reaches the file before the rename — the
// removal then sees the new time and puts the file back — or finds no file
// and fails with ErrNotFound, so the registry never goes on with a blob or
// record that is about to disappear. For the moment between the two
// renames a GET of that file answers 404.

// StatBlobInfo returns a blob's size and modification time.
func (s *Store) StatBlobInfo(_ context.Context, d digest.Digest) (storage.BlobInfo, error) {
	if d.Validate() != nil {
		return storage.BlobInfo{}, storage.ErrNotFound
	}
	fi, err := os.Stat(s.blobPath(d))
	if err != nil {
		return storage.BlobInfo{}, mapErr(err)
	}
	return storage.BlobInfo{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// TouchBlob sets a blob's modification time to now.
func (s *Store) TouchBlob(_ context.Context, d digest.Digest) error {
	if d.Validate() != nil {
		return storage.ErrNotFound
	}
	return s.touch(s.blobPath(d))
}

// TouchRecord sets a record's modification time to now.
func (s *Store) TouchRecord(_ context.Context, repo, key string) error {
	p, err := s.recordPath(repo, key)
	if err != nil {
		return err
	}
	return s.touch(p)
}

func (s *Store) touch(p string) error {
	now := time.Now()
	if err := os.Chtimes(p, now, now); err != nil {
		return mapErr(fmt.Errorf("touch: %w", err))
	}
	return nil
}

// StatRecord returns when a record was last written or touched.
func (s *Store) StatRecord(_ context.Context, repo, key string) (time.Time, error) {
	p, err := s.recordPath(repo, key)
	if err != nil {
		return time.Time{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return time.Time{}, mapErr(err)
	}
	return fi.ModTime(), nil
}

// DeleteBlobIfOlder removes a blob unless it was modified at or after
// cutoff.
func (s *Store) DeleteBlobIfOlder(_ context.Context, d digest.Digest, cutoff time.Time) (bool, error) {
	if d.Validate() != nil {
		return false, storage.ErrNotFound
	}
	p := s.blobPath(d)
	ok, err := s.removeIfOlder(p, cutoff)
	if ok {
		syncDir(filepath.Dir(p))
	}
	return ok, err
}

// DeleteRecordIfOlder removes a record unless it was written or touched at
// or after cutoff.
func (s *Store) DeleteRecordIfOlder(_ context.Context, repo, key string, cutoff time.Time) (bool, error) {
	p, err := s.recordPath(repo, key)
	if err != nil {
		return false, err
	}
	ok, err := s.removeIfOlder(p, cutoff)
	if ok {
		s.removeEmptyParents(repo, p)
	}
	return ok, err
}

func (s *Store) removeIfOlder(p string, cutoff time.Time) (bool, error) {
	// A folder of its own: its fresh time keeps cleanTmp (of any process
	// on this root) away from the file, however old the file is.
	dir, err := os.MkdirTemp(filepath.Join(s.root, dirTmp), "gc-*")
	if err != nil {
		return false, mapErr(fmt.Errorf("conditional delete: %w", err))
	}
	defer os.Remove(dir)
	return s.removeIfOlderVia(filepath.Join(dir, "f"), p, cutoff)
}

// removeIfOlderVia is removeIfOlder through the given name in a fresh
// folder under tmp/ (several removals may share one folder, one at a
// time).
func (s *Store) removeIfOlderVia(moved, p string, cutoff time.Time) (bool, error) {
	if err := os.Rename(p, moved); err != nil {
		return false, mapErr(err)
	}
	if s.afterGCRename != nil {
		s.afterGCRename(moved)
	}
	fi, err := os.Stat(moved)
	if err == nil && fi.ModTime().Before(cutoff) {
		if err := os.Remove(moved); err != nil {
			return false, fmt.Errorf("conditional delete: %w", err)
		}
		return true, nil
	}
	// touched meanwhile (or unreadable): put it back. A copy stored again
	// at p in the meantime has the same content (blobs) or is newer
	// (records): keep that one.
	if lerr := os.Link(moved, p); lerr != nil && !errors.Is(lerr, os.ErrExist) {
		return false, fmt.Errorf("conditional delete: restore %s: %w", p, lerr)
	}
	os.Remove(moved)
	if err != nil {
		return false, fmt.Errorf("conditional delete: %w", err)
	}
	return false, nil
}

// ListBlobs walks blobs/<alg>/<xx>/<hex>; files whose names are not a
// valid digest (or sit in the wrong <xx> folder) are not blobs and are
// skipped.
func (s *Store) ListBlobs(ctx context.Context, fn func(storage.BlobInfo) error) error {
	base := filepath.Join(s.root, dirBlobs)
	algs, err := os.ReadDir(base)
	if err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	for _, a := range algs {
		alg := digest.Algorithm(a.Name())
		if !a.IsDir() || !alg.Available() {
			continue
		}
		prefixes, err := os.ReadDir(filepath.Join(base, a.Name()))
		if err != nil {
			return fmt.Errorf("list blobs: %w", err)
		}
		for _, p := range prefixes {
			if err := ctx.Err(); err != nil {
				return err
			}
			if !p.IsDir() || len(p.Name()) != 2 {
				continue
			}
			ents, err := os.ReadDir(filepath.Join(base, a.Name(), p.Name()))
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					continue
				}
				return fmt.Errorf("list blobs: %w", err)
			}
			for _, e := range ents {
				name := e.Name()
				d := digest.NewDigestFromEncoded(alg, name)
				if !e.Type().IsRegular() || d.Validate() != nil || !strings.HasPrefix(name, p.Name()) {
					continue
				}
				fi, err := e.Info()
				if err != nil {
					if errors.Is(err, os.ErrNotExist) {
						continue // deleted meanwhile
					}
					return fmt.Errorf("list blobs: %w", err)
				}
				if err := fn(storage.BlobInfo{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
