package localfs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/storage"
)

// TestBlobTimes: what garbage collection relies on. ListBlobs sees every
// blob (and nothing else), TouchBlob, PutBlob of existing content and a
// Commit of existing content all refresh a blob's time, a Commit dates a
// new blob at the commit and not at its last chunk, and StatRecord tells
// when a record was written.
func TestBlobTimes(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := newStore(t, root)
	old := time.Now().Add(-3 * time.Hour)
	setOld := func(d digest.Digest) {
		t.Helper()
		if err := os.Chtimes(s.blobPath(d), old, old); err != nil {
			t.Fatal(err)
		}
	}
	fresh := func(d digest.Digest) bool {
		t.Helper()
		bi, err := s.StatBlobInfo(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		return time.Since(bi.ModTime) < time.Hour
	}

	a, b := []byte("manifest a"), []byte("layer b")
	da, db := digest.FromBytes(a), digest.FromBytes(b)
	if err := s.PutBlob(ctx, da, a); err != nil {
		t.Fatal(err)
	}
	u, err := s.NewUpload(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Append(ctx, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	// the last chunk was written long ago: the commit still dates the blob now
	if err := os.Chtimes(filepath.Join(s.uploadDir(u.ID()), "data"), old, old); err != nil {
		t.Fatal(err)
	}
	if err := u.Commit(ctx, db); err != nil {
		t.Fatal(err)
	}
	u.Close()
	if !fresh(db) {
		t.Error("a committed blob carries the time of its last chunk")
	}
	// not blobs: a stray file, a file in the wrong prefix folder
	os.WriteFile(filepath.Join(root, "blobs", "sha256", "README"), nil, 0o644)
	os.MkdirAll(filepath.Join(root, "blobs", "sha256", "zz"), 0o755)
	os.WriteFile(filepath.Join(root, "blobs", "sha256", "zz", db.Encoded()), nil, 0o644)

	var got []string
	if err := s.ListBlobs(ctx, func(bi storage.BlobInfo) error {
		got = append(got, string(bi.Digest))
		if want := map[digest.Digest]int64{da: int64(len(a)), db: int64(len(b))}[bi.Digest]; bi.Size != want {
			t.Errorf("%s: size %d, want %d", bi.Digest, bi.Size, want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	want := []string{string(da), string(db)}
	sort.Strings(want)
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("ListBlobs: %v, want %v", got, want)
	}

	setOld(da)
	if fresh(da) {
		t.Fatal("Chtimes did not age the blob")
	}
	if err := s.PutBlob(ctx, da, a); err != nil || !fresh(da) {
		t.Errorf("PutBlob of existing content: err %v, fresh %v", err, fresh(da))
	}
	setOld(db)
	if err := s.TouchBlob(ctx, db); err != nil || !fresh(db) {
		t.Errorf("TouchBlob: err %v, fresh %v", err, fresh(db))
	}
	setOld(db)
	u, _ = s.NewUpload(ctx, "r2")
	u.Append(ctx, bytes.NewReader(b))
	if err := u.Commit(ctx, db); err != nil || !fresh(db) {
		t.Errorf("Commit of existing content: err %v, fresh %v", err, fresh(db))
	}
	u.Close()
	if err := s.TouchBlob(ctx, digest.FromString("absent")); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("TouchBlob of an absent blob: %v", err)
	}
	if _, err := s.StatBlobInfo(ctx, "sha256:../../x"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("StatBlobInfo of a bad digest: %v", err)
	}

	before := time.Now().Add(-time.Second)
	if err := s.PutRecord(ctx, "r", "tags/x", []byte(da)); err != nil {
		t.Fatal(err)
	}
	if mt, err := s.StatRecord(ctx, "r", "tags/x"); err != nil || mt.Before(before) {
		t.Errorf("StatRecord: %v %v", mt, err)
	}
	if _, err := s.StatRecord(ctx, "r", "tags/none"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("StatRecord of an absent record: %v", err)
	}
}

// TestDeleteIfOlder: old blobs and records go, touched ones stay (also
// when the touch lands just before the file is moved away), a newer copy
// stored meanwhile wins over the one put back, and folders left empty by a
// record go too.
func TestDeleteIfOlder(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := newStore(t, root)
	old := time.Now().Add(-3 * time.Hour)
	cutoff := time.Now().Add(-time.Hour)
	data := []byte("blob")
	d := digest.FromBytes(data)
	put := func() {
		t.Helper()
		if err := s.PutBlob(ctx, d, data); err != nil {
			t.Fatal(err)
		}
	}
	put()
	if ok, err := s.DeleteBlobIfOlder(ctx, d, cutoff); ok || err != nil {
		t.Fatalf("fresh blob: removed %v, %v", ok, err)
	}
	os.Chtimes(s.blobPath(d), old, old)
	// a touch at the last moment (before the rename) keeps it
	s.afterGCRename = func(moved string) { now := time.Now(); os.Chtimes(moved, now, now) }
	if ok, err := s.DeleteBlobIfOlder(ctx, d, cutoff); ok || err != nil {
		t.Fatalf("blob touched at the last moment: removed %v, %v", ok, err)
	}
	if b, err := os.ReadFile(s.blobPath(d)); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("blob not put back: %q %v", b, err)
	}
	// a touch after the rename fails, so the caller knows it is gone
	os.Chtimes(s.blobPath(d), old, old)
	var touchErr error
	s.afterGCRename = func(string) { touchErr = s.TouchBlob(ctx, d) }
	if ok, err := s.DeleteBlobIfOlder(ctx, d, cutoff); !ok || err != nil {
		t.Fatalf("old blob: removed %v, %v", ok, err)
	}
	if !errors.Is(touchErr, storage.ErrNotFound) {
		t.Errorf("touch of a blob being removed: %v, want ErrNotFound", touchErr)
	}
	if _, err := s.StatBlob(ctx, d); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("removed blob still there: %v", err)
	}
	s.afterGCRename = nil
	if _, err := s.DeleteBlobIfOlder(ctx, d, cutoff); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("absent blob: %v", err)
	}

	// records: a newer value written while the old one is away wins
	key := "manifests/sha256/" + d.Encoded()
	s.PutRecord(ctx, "r", key, []byte("old"))
	p, _ := s.recordPath("r", key)
	os.Chtimes(p, old, old)
	s.afterGCRename = func(moved string) {
		now := time.Now()
		os.Chtimes(moved, now, now)
		s.PutRecord(ctx, "r", key, []byte("new"))
	}
	if ok, err := s.DeleteRecordIfOlder(ctx, "r", key, cutoff); ok || err != nil {
		t.Fatalf("touched record: removed %v, %v", ok, err)
	}
	if v, _ := s.GetRecord(ctx, "r", key); string(v) != "new" {
		t.Errorf("record after a racing write: %q, want the newer value", v)
	}
	s.afterGCRename = nil
	if err := s.TouchRecord(ctx, "r", key); err != nil {
		t.Fatal(err)
	}
	if mt, _ := s.StatRecord(ctx, "r", key); mt.Before(cutoff) {
		t.Errorf("TouchRecord left time %v", mt)
	}
	os.Chtimes(p, old, old)
	if ok, err := s.DeleteRecordIfOlder(ctx, "r", key, cutoff); !ok || err != nil {
		t.Fatalf("old record: removed %v, %v", ok, err)
	}
	if _, err := os.Stat(filepath.Join(root, "repositories", "r", "_manifests")); !os.IsNotExist(err) {
		t.Errorf("empty record folder left behind: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "tmp")); len(ents) != 0 {
		t.Errorf("conditional deletes left %d entries in tmp/", len(ents))
	}
	if err := s.TouchRecord(ctx, "r", key); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("TouchRecord of an absent record: %v", err)
	}
}
