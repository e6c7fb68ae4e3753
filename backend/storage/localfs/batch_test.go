package localfs

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestDeleteRecordsIfOlder: old records go (and the folders they leave
// empty), a rewritten one stays, a missing one is not removed, and a
// touch at the last moment keeps a record, as with DeleteRecordIfOlder.
func TestDeleteRecordsIfOlder(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := newStore(t, root)
	old := time.Now().Add(-3 * time.Hour)
	for _, k := range []string{"tags/a", "tags/b", "tags/c", "referrers/sha256/x/y"} {
		if err := s.PutRecord(ctx, "app", k, []byte("v")); err != nil {
			t.Fatal(err)
		}
		p, _ := s.recordPath("app", k)
		os.Chtimes(p, old, old)
	}
	cut := old.Add(time.Nanosecond)
	// b is pushed again after the decision
	if err := s.PutRecord(ctx, "app", "tags/b", []byte("new")); err != nil {
		t.Fatal(err)
	}
	got, err := s.DeleteRecordsIfOlder(ctx, "app", []string{"tags/a", "tags/b", "tags/gone", "referrers/sha256/x/y"}, []time.Time{cut, cut, cut, cut})
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, false, false, true}; !slices.Equal(got, want) {
		t.Errorf("removed %v, want %v", got, want)
	}
	tags, _ := s.ListRecords(ctx, "app", "tags")
	if !slices.Equal(tags, []string{"b", "c"}) {
		t.Errorf("tags left %v", tags)
	}
	if _, err := os.Stat(filepath.Join(root, "repositories", "app", "_referrers", "sha256")); !os.IsNotExist(err) {
		t.Errorf("empty referrer folders left: %v", err)
	}
	// a touch between the rename and the check keeps the record
	s.afterGCRename = func(moved string) { now := time.Now(); os.Chtimes(moved, now, now) }
	got, err = s.DeleteRecordsIfOlder(ctx, "app", []string{"tags/c"}, []time.Time{cut})
	if err != nil || got[0] {
		t.Errorf("touched record: removed %v, %v", got, err)
	}
	if v, err := s.GetRecord(ctx, "app", "tags/c"); err != nil || string(v) != "v" {
		t.Errorf("touched record after: %q %v", v, err)
	}
}
