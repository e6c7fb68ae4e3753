// Package localfs is the local file system implementation of
// storage.Store. The on-disk layout is described in ../README.md.
//
// Every file that becomes visible is first written under tmp/ (same file
// system) and then renamed into place, so a crash at any point leaves either
// the old state or the new one. Upload sessions live under uploads/ until
// they are committed by a rename into blobs/.
package localfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend/storage"

	digest "github.com/opencontainers/go-digest"
)

// Options configures a Store.
type Options struct {
	// Root is the directory that holds everything; created if missing.
	Root string
	// UploadTTL is how long an upload session may stay idle before it is
	// removed; default 24h.
	UploadTTL time.Duration
	// SyncBlobs makes Commit fsync a blob's content before it becomes
	// visible, so a power loss cannot leave a blob that is named but
	// incomplete. Records are always synced.
	SyncBlobs bool
	// DirectIO writes uploads with O_DIRECT (whole aligned blocks),
	// bypassing the page cache. See ../README.md for when this helps.
	DirectIO bool
	// Logger receives background-work messages; zero value = quiet.
	Logger zerolog.Logger
}

// Store keeps registry data below one directory.
type Store struct {
	root      string
	ttl       time.Duration
	syncBlobs bool
	directIO  bool
	log       zerolog.Logger

	mu       sync.Mutex
	sessions map[string]*session // loaded upload sessions by id

	stop chan struct{}
	done chan struct{}

	// afterGCRename runs in a conditional delete between moving the file
	// away and looking at its time (tests: a touch or a push at that
	// moment).
	afterGCRename func(moved string)
}

var (
	_ storage.Store        = (*Store)(nil)
	_ storage.FileBlob     = (*Blob)(nil)
	_ storage.BlobImporter = (*Store)(nil)
)

const (
	dirBlobs   = "blobs"
	dirRepos   = "repositories"
	dirUploads = "uploads"
	dirTmp     = "tmp"

	// tmpMaxAge: files in tmp/ live for milliseconds (records and
	// manifests); older ones are leftovers of a crash.
	tmpMaxAge = 5 * time.Minute
)

// New opens (creating if needed) a store at o.Root, removes temporary files
// a crash may have left behind, and starts expiring abandoned uploads.
func New(o Options) (*Store, error) {
	if o.Root == "" {
		return nil, errors.New("localfs: empty root directory")
	}
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return nil, fmt.Errorf("localfs: root %q: %w", o.Root, err)
	}
	if o.UploadTTL <= 0 {
		o.UploadTTL = 24 * time.Hour
	}
	for _, d := range []string{dirBlobs, dirRepos, dirUploads, dirTmp} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, fmt.Errorf("localfs: create %s: %w", d, err)
		}
	}
	s := &Store{
		root:      root,
		ttl:       o.UploadTTL,
		syncBlobs: o.SyncBlobs,
		directIO:  o.DirectIO,
		log:       o.Logger,
		sessions:  map[string]*session{},
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	// Anything in tmp/ older than a few minutes is a write that never got
	// renamed into place: a process died in the middle of it. Younger
	// files may belong to a registry on the same root that is still
	// draining (a config reload opens a new one before closing the old).
	s.cleanTmp(tmpMaxAge)
	s.expireUploads(time.Now())
	go s.janitor()
	return s, nil
}

// Close stops the background expiry of uploads.
func (s *Store) Close() error {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	return nil
}

func (s *Store) janitor() {
	defer close(s.done)
	every := s.ttl / 4
	if every > 10*time.Minute {
		every = 10 * time.Minute
	}
	if every < time.Second {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.expireUploads(now)
			s.cleanTmp(tmpMaxAge)
		}
	}
}

// cleanTmp removes files in tmp/ older than age.
func (s *Store) cleanTmp(age time.Duration) {
	dir := filepath.Join(s.root, dirTmp)
	ents, err := os.ReadDir(dir)
	if err != nil {
		s.log.Warn().Err(err).Msg("localfs: list tmp")
		return
	}
	now := time.Now()
	for _, e := range ents {
		if age > 0 {
			fi, err := e.Info()
			if err != nil || now.Sub(fi.ModTime()) < age {
				continue
			}
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			s.log.Warn().Err(err).Str("file", e.Name()).Msg("localfs: remove temporary file")
		}
	}
}

// --- paths -----------------------------------------------------------------

func (s *Store) blobPath(d digest.Digest) string {
	h := d.Encoded()
	return filepath.Join(s.root, dirBlobs, string(d.Algorithm()), h[:2], h)
}

// validRepo is a defence in depth: the registry validates names already.
func validRepo(repo string) bool {
	if repo == "" || len(repo) > 255 {
		return false
	}
	for _, c := range strings.Split(repo, "/") {
		if c == "" || c[0] == '.' || c[0] == '_' || strings.ContainsAny(c, "\\\x00") {
			return false
		}
	}
	return true
}

// recordPath maps (repo, key) to a file: the key's first component gets a
// '_' prefix, which no repository name component can have, so the records
// of "a" never collide with the repository "a/b".
func (s *Store) recordPath(repo, key string) (string, error) {
	if !validRepo(repo) {
		return "", fmt.Errorf("invalid repository name %q: %w", repo, storage.ErrNotFound)
	}
	parts := strings.Split(key, "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." || p[0] == '.' || strings.ContainsAny(p, "\\\x00") {
			return "", fmt.Errorf("invalid record key %q: %w", key, storage.ErrNotFound)
		}
	}
	parts[0] = "_" + parts[0]
	return filepath.Join(s.root, dirRepos, filepath.FromSlash(repo), filepath.Join(parts...)), nil
}

// --- blobs -----------------------------------------------------------------

// StatBlob returns the size of a blob.
func (s *Store) StatBlob(_ context.Context, d digest.Digest) (int64, error) {
	if d.Validate() != nil {
		return 0, storage.ErrNotFound
	}
	fi, err := os.Stat(s.blobPath(d))
	if err != nil {
		return 0, mapErr(err)
	}
	return fi.Size(), nil
}

// Blob is an open blob file. File gives the *os.File so that a copy to a
// network connection can use sendfile.
type Blob struct {
	*os.File
	size int64
}

// OSFile returns the open file (for sendfile).
func (b *Blob) OSFile() *os.File { return b.File }

// Size is the blob's length.
func (b *Blob) Size() int64 { return b.size }

// OpenBlob opens a blob for reading; the result is a *Blob.
func (s *Store) OpenBlob(_ context.Context, d digest.Digest) (storage.Blob, error) {
	if d.Validate() != nil {
		return nil, storage.ErrNotFound
	}
	f, err := os.Open(s.blobPath(d))
	if err != nil {
		return nil, mapErr(err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat blob %s: %w", d, err)
	}
	return &Blob{File: f, size: fi.Size()}, nil
}

// PutBlob stores small content under its digest (checked).
func (s *Store) PutBlob(_ context.Context, d digest.Digest, data []byte) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("put blob: %w", err)
	}
	if d.Algorithm().FromBytes(data) != d {
		return storage.ErrDigestMismatch
	}
	p := s.blobPath(d)
	if s.touch(p) == nil {
		// already stored; the touch tells garbage collection it is in
		// use (see TouchBlob)
		return nil
	}
	return s.writeAtomic(p, data)
}

// DeleteBlob removes a blob from the global store.
func (s *Store) DeleteBlob(_ context.Context, d digest.Digest) error {
	if d.Validate() != nil {
		return storage.ErrNotFound
	}
	if err := os.Remove(s.blobPath(d)); err != nil {
		return mapErr(err)
	}
	return nil
}

// --- records ---------------------------------------------------------------

// GetRecord reads a record.
func (s *Store) GetRecord(_ context.Context, repo, key string) ([]byte, error) {
	p, err := s.recordPath(repo, key)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, mapErr(err)
	}
	return b, nil
}

// PutRecord writes a record atomically (temp file, fsync, rename, fsync of
// the directory).
func (s *Store) PutRecord(_ context.Context, repo, key string, value []byte) error {
	p, err := s.recordPath(repo, key)
	if err != nil {
		return err
	}
	return s.writeAtomic(p, value)
}

// DeleteRecord removes a record and the directories it leaves empty (up to
// the repository's own directory).
func (s *Store) DeleteRecord(_ context.Context, repo, key string) error {
	p, err := s.recordPath(repo, key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return mapErr(err)
	}
	s.removeEmptyParents(repo, p)
	return nil
}

// removeEmptyParents removes the directories that the removal of record
// file p left empty, up to (not including) the repository's own.
func (s *Store) removeEmptyParents(repo, p string) {
	stop := filepath.Join(s.root, dirRepos, filepath.FromSlash(repo))
	for d := filepath.Dir(p); len(d) > len(stop); d = filepath.Dir(d) {
		if os.Remove(d) != nil { // not empty
			break
		}
	}
	syncDir(filepath.Dir(p))
}

// ListRecords lists the names under dir, sorted.
func (s *Store) ListRecords(_ context.Context, repo, dir string) ([]string, error) {
	p, err := s.recordPath(repo, dir)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("list %s/%s: %w", repo, dir, err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		if n := e.Name(); n[0] != '.' {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names, nil
}

// ListRepos walks repositories/: a directory is a repository when it has a
// record directory (a child whose name starts with '_').
func (s *Store) ListRepos(ctx context.Context) ([]string, error) {
	base := filepath.Join(s.root, dirRepos)
	var repos []string
	var walk func(dir, name string) error
	walk = func(dir, name string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		isRepo := false
		for _, e := range ents {
			n := e.Name()
			if !e.IsDir() || n[0] == '.' {
				continue
			}
			if n[0] == '_' {
				isRepo = true
				continue
			}
			child := n
			if name != "" {
				child = name + "/" + n
			}
			if err := walk(filepath.Join(dir, n), child); err != nil {
				return err
			}
		}
		if isRepo && name != "" {
			repos = append(repos, name)
		}
		return nil
	}
	if err := walk(base, ""); err != nil {
		return nil, fmt.Errorf("list repositories: %w", err)
	}
	sort.Strings(repos)
	return repos, nil
}

// --- helpers ---------------------------------------------------------------

// writeAtomic writes data to path through a synced temporary file and a
// rename, then syncs the directory so the new name survives a power loss.
func (s *Store) writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Join(s.root, dirTmp), "w-*")
	if err != nil {
		return mapErr(fmt.Errorf("create temporary file: %w", err))
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return mapErr(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(fmt.Errorf("write %s: %w", path, err))
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("sync %s: %w", path, err))
	}
	if err := f.Chmod(0o644); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return mapErr(err)
	}
	// A folder that a record deletion (API or wharf gc) left empty may be
	// removed between mkdirAll and the rename: create it again and retry.
	for attempt := 0; ; attempt++ {
		err := s.mkdirAll(filepath.Dir(path))
		if err == nil {
			err = os.Rename(tmp, path)
			if err != nil {
				err = mapErr(fmt.Errorf("rename into %s: %w", path, err))
			}
		}
		if err == nil {
			break
		}
		if !errors.Is(err, storage.ErrNotFound) || attempt == 3 {
			os.Remove(tmp)
			return err
		}
	}
	syncDir(filepath.Dir(path))
	return nil
}

// mkdirAll creates dir and syncs the parents of directories it created.
func (s *Store) mkdirAll(dir string) error {
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	if err := s.mkdirAll(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return mapErr(fmt.Errorf("create directory: %w", err))
	}
	syncDir(filepath.Dir(dir))
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// mapErr turns file system errors into the storage package's errors.
func mapErr(err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %v", storage.ErrNotFound, err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%w: %v", storage.ErrNoSpace, err)
	}
	return err
}

var _ io.Closer = (*Store)(nil)
