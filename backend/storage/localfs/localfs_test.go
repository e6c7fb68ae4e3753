package localfs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/storage"
)

func newStore(t *testing.T, root string) *Store {
	t.Helper()
	s, err := New(Options{Root: root, UploadTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestRecords(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, t.TempDir())
	if _, err := s.GetRecord(ctx, "a", "tags/x"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("missing record: %v", err)
	}
	for _, kv := range [][3]string{{"a", "tags/x", "1"}, {"a", "tags/y", "2"}, {"a/b", "tags/z", "3"}, {"a/b/c", "blobs/sha256/ff", ""}} {
		if err := s.PutRecord(ctx, kv[0], kv[1], []byte(kv[2])); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutRecord(ctx, "a", "tags/x", []byte("new")); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.GetRecord(ctx, "a", "tags/x"); string(v) != "new" {
		t.Fatalf("overwrite: %q", v)
	}
	if l, _ := s.ListRecords(ctx, "a", "tags"); strings.Join(l, ",") != "x,y" {
		t.Fatalf("list: %v", l)
	}
	if l, _ := s.ListRecords(ctx, "a", "nothing"); len(l) != 0 {
		t.Fatalf("list of absent dir: %v", l)
	}
	repos, err := s.ListRepos(ctx)
	if err != nil || strings.Join(repos, ",") != "a,a/b,a/b/c" {
		t.Fatalf("repos %v %v", repos, err)
	}
	if err := s.DeleteRecord(ctx, "a/b", "tags/z"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRecord(ctx, "a/b", "tags/z"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if repos, _ := s.ListRepos(ctx); strings.Join(repos, ",") != "a,a/b/c" {
		t.Fatalf("repos after delete %v", repos)
	}
	// keys and names that could escape the root are refused
	for _, bad := range [][2]string{{"../x", "tags/a"}, {"a", "../../etc"}, {"a", "tags/.."}, {"_a", "tags/x"}, {"a", ""}} {
		if err := s.PutRecord(ctx, bad[0], bad[1], nil); err == nil {
			t.Errorf("PutRecord(%q, %q) accepted", bad[0], bad[1])
		}
	}
	// no temporary files are left behind
	if ents, _ := os.ReadDir(filepath.Join(s.root, dirTmp)); len(ents) != 0 {
		t.Fatalf("%d files left in tmp", len(ents))
	}
}

func TestPutBlobChecksDigest(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, t.TempDir())
	data := []byte("manifest")
	if err := s.PutBlob(ctx, digest.FromString("other"), data); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("mismatch: %v", err)
	}
	d := digest.SHA512.FromBytes(data)
	if err := s.PutBlob(ctx, d, data); err != nil {
		t.Fatal(err)
	}
	if err := s.PutBlob(ctx, d, data); err != nil { // again: no-op
		t.Fatal(err)
	}
	b, err := s.OpenBlob(ctx, d)
	if err != nil || b.Size() != int64(len(data)) {
		t.Fatalf("open %v", err)
	}
	b.Close()
	if err := s.DeleteBlob(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StatBlob(ctx, d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("stat after delete: %v", err)
	}
}

// TestUploadExpiry: a session idle past the TTL is removed; one in use
// or recently used is kept.
func TestUploadExpiry(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, t.TempDir())
	mk := func() string {
		u, err := s.NewUpload(ctx, "r")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.Append(ctx, strings.NewReader("abc")); err != nil {
			t.Fatal(err)
		}
		u.Close()
		return u.ID()
	}
	old, fresh, held := mk(), mk(), mk()
	past := time.Now().Add(-2 * time.Hour)
	for _, id := range []string{old, held} {
		for _, f := range []string{"state", "data", ""} {
			os.Chtimes(filepath.Join(s.uploadDir(id), f), past, past)
		}
	}
	h, err := s.OpenUpload(ctx, "r", held)
	if err != nil {
		t.Fatal(err)
	}
	s.expireUploads(time.Now())
	h.Close()
	if _, err := s.OpenUpload(ctx, "r", old); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("expired upload still there: %v", err)
	}
	if _, err := os.Stat(s.uploadDir(old)); !os.IsNotExist(err) {
		t.Fatalf("expired upload's files remain: %v", err)
	}
	for _, id := range []string{fresh, held} {
		u, err := s.OpenUpload(ctx, "r", id)
		if err != nil {
			t.Fatalf("upload %s lost: %v", id, err)
		}
		u.Close()
	}
}

// TestUploadRehash: a session whose state file is gone or ahead of the
// data (power loss) is rebuilt from the data itself.
func TestUploadRehash(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := newStore(t, root)
	u, _ := s.NewUpload(ctx, "r")
	u.Append(ctx, strings.NewReader("hello "))
	id := u.ID()
	u.Close()
	s.Close()
	// the state claims more than the data holds
	dataPath := filepath.Join(root, dirUploads, id, "data")
	os.Truncate(dataPath, 3)
	s2 := newStore(t, root)
	u2, err := s2.OpenUpload(ctx, "r", id)
	if err != nil {
		t.Fatal(err)
	}
	if u2.Size() != 3 {
		t.Fatalf("size %d, want 3", u2.Size())
	}
	u2.Append(ctx, strings.NewReader("lo world"))
	if err := u2.Commit(ctx, digest.FromString("hello world")); err != nil {
		t.Fatalf("commit after rehash: %v", err)
	}
	u2.Close()
}

// TestDiskFull runs the store on a tiny tmpfs (needs root; skipped
// otherwise): a full disk is ErrNoSpace, the session keeps what it had,
// and no blob appears.
func TestDiskFull(t *testing.T) {
	dir := t.TempDir()
	if err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", dir).Run(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	ctx := context.Background()
	s := newStore(t, dir)
	u, err := s.NewUpload(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	big := bytes.Repeat([]byte("z"), 3<<20)
	n, err := u.Append(ctx, bytes.NewReader(big))
	t.Logf("append: %d %v", n, err)
	if !errors.Is(err, storage.ErrNoSpace) {
		t.Fatalf("append to full disk: %v", err)
	}
	if u.Size() != n || n == 0 || n >= int64(len(big)) {
		t.Fatalf("size %d after %d bytes appended", u.Size(), n)
	}
	fi, _ := os.Stat(filepath.Join(dir, dirUploads, u.ID(), "data"))
	if fi.Size() != n {
		t.Fatalf("data file %d bytes, session says %d", fi.Size(), n)
	}
	if err := u.Commit(ctx, digest.FromBytes(big)); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("commit of partial upload: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, dirBlobs)); len(ents) != 0 {
		t.Fatalf("blob directory not empty")
	}
	// once space is back, records work again
	if err := s.PutRecord(ctx, "r", "tags/t", []byte("x")); err != nil {
		t.Fatalf("record after freeing space: %v", err)
	}
}

// TestAppendModes: chunks of awkward sizes end up byte-exact whether
// written through the page cache or with O_DIRECT (which needs aligned
// blocks and falls back where the file system refuses it).
func TestAppendModes(t *testing.T) {
	ctx := context.Background()
	var all []byte
	sizes := []int{1000, 5000, bufSize + 3, 4096, 7, 3*bufSize - 100, 0, 12345}
	for i, n := range sizes {
		all = append(all, bytes.Repeat([]byte{byte(i + 1), byte(n)}, n/2+1)[:n]...)
	}
	for _, direct := range []bool{false, true} {
		t.Run(map[bool]string{false: "buffered", true: "direct"}[direct], func(t *testing.T) {
			s, err := New(Options{Root: t.TempDir(), DirectIO: direct})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			u, err := s.NewUpload(ctx, "r")
			if err != nil {
				t.Fatal(err)
			}
			off := 0
			for _, n := range sizes {
				got, err := u.Append(ctx, bytes.NewReader(all[off:off+n]))
				if err != nil || got != int64(n) {
					t.Fatalf("append %d: %d %v", n, got, err)
				}
				off += n
			}
			d := digest.FromBytes(all)
			if err := u.Commit(ctx, d); err != nil {
				t.Fatal(err)
			}
			u.Close()
			b, err := os.ReadFile(s.blobPath(d))
			if err != nil || !bytes.Equal(b, all) {
				t.Fatalf("stored blob differs (%v)", err)
			}
		})
	}
}

// storage.ReadBlob on a real store: the bytes, ErrTooLarge past the
// bound, ErrNotFound for a missing blob.
func TestReadBlob(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, t.TempDir())
	data := []byte(`{"schemaVersion":2}`)
	d := digest.FromBytes(data)
	if err := s.PutBlob(ctx, d, data); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		d       digest.Digest
		max     int64
		want    []byte
		wantErr error
	}{
		{d, int64(len(data)), data, nil},
		{d, int64(len(data)) - 1, nil, storage.ErrTooLarge},
		{digest.FromString("absent"), 100, nil, storage.ErrNotFound},
	} {
		got, err := storage.ReadBlob(ctx, s, tc.d, tc.max)
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) || string(got) != string(tc.want) {
			t.Errorf("ReadBlob(%s, %d) = %q, %v; want %q, %v", tc.d, tc.max, got, err, tc.want, tc.wantErr)
		}
	}
}
