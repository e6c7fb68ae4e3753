package sweep

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/layout"
)

// memStore is a Store in memory with explicit times, so that the walk's
// decisions can be checked without a clock (the registry's and the
// cache's tests run the same walk on the local file system).
type memStore struct {
	mu      sync.Mutex
	blobs   map[digest.Digest]memItem
	records map[string]map[string]memItem // repo -> key -> item
	now     time.Time                     // what a touch sets
	// onDelete runs before a DeleteBlobIfOlder decides (tests: a touch
	// racing the sweep).
	onDelete func(digest.Digest)
}

type memItem struct {
	data  []byte
	mtime time.Time
}

func newMem(now time.Time) *memStore {
	return &memStore{blobs: map[digest.Digest]memItem{}, records: map[string]map[string]memItem{}, now: now}
}

func (m *memStore) putBlob(data []byte, at time.Time) digest.Digest {
	d := digest.FromBytes(data)
	m.blobs[d] = memItem{data, at}
	return d
}

func (m *memStore) putRecord(repo, key string, v []byte, at time.Time) {
	if m.records[repo] == nil {
		m.records[repo] = map[string]memItem{}
	}
	m.records[repo][key] = memItem{v, at}
}

// memBlob is a stored blob; bytes.Reader brings Read, Seek and Size.
type memBlob struct {
	*bytes.Reader
}

var _ storage.Blob = memBlob{}

func (b memBlob) Close() error { return nil }

func (m *memStore) StatBlob(_ context.Context, d digest.Digest) (int64, error) {
	bi, err := m.StatBlobInfo(context.Background(), d)
	return bi.Size, err
}

func (m *memStore) OpenBlob(_ context.Context, d digest.Digest) (storage.Blob, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[d]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return memBlob{bytes.NewReader(b.data)}, nil
}

func (m *memStore) ListBlobs(_ context.Context, fn func(storage.BlobInfo) error) error {
	m.mu.Lock()
	var l []storage.BlobInfo
	for d, b := range m.blobs {
		l = append(l, storage.BlobInfo{Digest: d, Size: int64(len(b.data)), ModTime: b.mtime})
	}
	m.mu.Unlock()
	for _, b := range l {
		if err := fn(b); err != nil {
			return err
		}
	}
	return nil
}

func (m *memStore) GetRecord(_ context.Context, repo, key string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.records[repo][key]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return r.data, nil
}

func (m *memStore) ListRecords(_ context.Context, repo, dir string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[string]bool{}
	for k := range m.records[repo] {
		if rest, ok := strings.CutPrefix(k, dir+"/"); ok {
			name, _, _ := strings.Cut(rest, "/")
			seen[name] = true
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

func (m *memStore) ListRepos(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for r, recs := range m.records {
		if len(recs) > 0 {
			out = append(out, r)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (m *memStore) StatBlobInfo(_ context.Context, d digest.Digest) (storage.BlobInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[d]
	if !ok {
		return storage.BlobInfo{}, storage.ErrNotFound
	}
	return storage.BlobInfo{Digest: d, Size: int64(len(b.data)), ModTime: b.mtime}, nil
}

func (m *memStore) StatRecord(_ context.Context, repo, key string) (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.records[repo][key]
	if !ok {
		return time.Time{}, storage.ErrNotFound
	}
	return r.mtime, nil
}

func (m *memStore) TouchBlob(_ context.Context, d digest.Digest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[d]
	if !ok {
		return storage.ErrNotFound
	}
	b.mtime = m.now
	m.blobs[d] = b
	return nil
}

func (m *memStore) TouchRecord(_ context.Context, repo, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.records[repo][key]
	if !ok {
		return storage.ErrNotFound
	}
	r.mtime = m.now
	m.records[repo][key] = r
	return nil
}

func (m *memStore) DeleteBlobIfOlder(_ context.Context, d digest.Digest, cutoff time.Time) (bool, error) {
	if m.onDelete != nil {
		m.onDelete(d)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[d]
	if !ok {
		return false, storage.ErrNotFound
	}
	if !b.mtime.Before(cutoff) {
		return false, nil
	}
	delete(m.blobs, d)
	return true, nil
}

func (m *memStore) DeleteRecordIfOlder(_ context.Context, repo, key string, cutoff time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.records[repo][key]
	if !ok {
		return false, storage.ErrNotFound
	}
	if !r.mtime.Before(cutoff) {
		return false, nil
	}
	delete(m.records[repo], key)
	return true, nil
}

var _ Store = (*memStore)(nil)

// image stores a config, n layers and a manifest naming them, all at t,
// and returns the manifest's and the blobs' digests.
func (m *memStore) image(t *testing.T, name string, n int, at time.Time) (digest.Digest, []digest.Digest) {
	t.Helper()
	cfg := m.putBlob([]byte(`{"config":"`+name+`"}`), at)
	man := backend.Manifest{SchemaVersion: 2, MediaType: backend.MediaTypeOCIManifest,
		Config: &backend.Descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: cfg, Size: 1}}
	blobs := []digest.Digest{cfg}
	for i := 0; i < n; i++ {
		l := m.putBlob([]byte(name+" layer "+string(rune('a'+i))), at)
		man.Layers = append(man.Layers, backend.Descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: l, Size: 1})
		blobs = append(blobs, l)
	}
	return m.putBlob(mustJSON(t, man), at), blobs
}

func (m *memStore) index(t *testing.T, children []digest.Digest, at time.Time) digest.Digest {
	t.Helper()
	idx := backend.Manifest{SchemaVersion: 2, MediaType: backend.MediaTypeOCIIndex}
	for _, c := range children {
		idx.Manifests = append(idx.Manifests, backend.Descriptor{MediaType: backend.MediaTypeOCIManifest, Digest: c, Size: 1})
	}
	return m.putBlob(mustJSON(t, idx), at)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func set(ds ...digest.Digest) map[digest.Digest]bool {
	out := map[digest.Digest]bool{}
	for _, d := range ds {
		out[d] = true
	}
	return out
}

// TestKeep: what marking reaches from the roots, by Reach.
func TestKeep(t *testing.T) {
	ctx := context.Background()
	old := time.Unix(1000, 0)
	m := newMem(time.Unix(5000, 0))
	imgA, blobsA := m.image(t, "a", 2, old)
	imgB, blobsB := m.image(t, "b", 1, old)
	idx := m.index(t, []digest.Digest{imgA, imgB}, old)
	sig, blobsSig := m.image(t, "signature", 1, old) // a referrer of imgA
	orphanRef, _ := m.image(t, "orphan", 1, old)     // names imgA, no revision
	bad := m.putBlob([]byte("{not json"), old)
	refs := map[digest.Digest][]digest.Digest{imgA: {sig, orphanRef}}
	isRev := set(imgA, imgB, idx, sig, bad)
	all := func(ds ...[]digest.Digest) []digest.Digest {
		var out []digest.Digest
		for _, l := range ds {
			out = append(out, l...)
		}
		return out
	}

	for _, tc := range []struct {
		name       string
		roots      []digest.Digest
		reach      Reach
		wantKept   []digest.Digest
		wantMarked []digest.Digest
		wantErr    error
		unreadable int
	}{
		{
			name: "index with children and referrers (gc)", roots: []digest.Digest{idx},
			reach:      Reach{Index: true, Referrers: refs, Revision: func(d digest.Digest) bool { return isRev[d] }},
			wantKept:   []digest.Digest{idx, imgA, imgB, sig},
			wantMarked: all([]digest.Digest{idx, imgA, imgB, sig}, blobsA, blobsB, blobsSig),
		},
		{
			name: "index without children (eviction)", roots: []digest.Digest{idx},
			reach:      Reach{},
			wantKept:   []digest.Digest{idx},
			wantMarked: []digest.Digest{idx},
		},
		{
			name: "image only", roots: []digest.Digest{imgB},
			reach:      Reach{Index: true, Referrers: refs},
			wantKept:   []digest.Digest{imgB},
			wantMarked: all([]digest.Digest{imgB}, blobsB),
		},
		{
			name: "referrers without a revision filter", roots: []digest.Digest{imgA},
			reach:      Reach{Referrers: refs},
			wantKept:   []digest.Digest{imgA, sig, orphanRef},
			wantMarked: nil, // checked by kept only
		},
		{
			name: "content gone marks only itself", roots: []digest.Digest{digest.FromString("gone")},
			reach:      Reach{Index: true},
			wantKept:   []digest.Digest{digest.FromString("gone")},
			wantMarked: []digest.Digest{digest.FromString("gone")},
		},
		{
			name: "unreadable stops gc", roots: []digest.Digest{imgB, bad},
			reach:   Reach{Index: true},
			wantErr: ErrUnreadable,
		},
		{
			name: "unreadable counted by eviction", roots: []digest.Digest{bad, imgB},
			reach:      Reach{},
			wantKept:   []digest.Digest{bad, imgB},
			wantMarked: all([]digest.Digest{bad, imgB}, blobsB),
			unreadable: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New(m, time.Unix(2000, 0), false)
			if _, _, err := r.ListBlobs(ctx); err != nil {
				t.Fatal(err)
			}
			n := 0
			if tc.unreadable > 0 {
				tc.reach.Unreadable = func(digest.Digest, error) { n++ }
			}
			also := map[digest.Digest]bool{}
			tc.reach.Also = also
			kept, err := r.Keep(ctx, tc.roots, tc.reach)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Keep: %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(kept) != len(tc.wantKept) {
				t.Errorf("kept %d manifests, want %d", len(kept), len(tc.wantKept))
			}
			for _, d := range tc.wantKept {
				if !kept[d] {
					t.Errorf("%s not kept", d)
				}
			}
			if tc.wantMarked != nil {
				if len(also) != len(set(tc.wantMarked...)) {
					t.Errorf("marked %d, want %d", len(also), len(set(tc.wantMarked...)))
				}
				for _, d := range tc.wantMarked {
					if !r.Marked(d) || !also[d] {
						t.Errorf("%s not marked (run %v, Also %v)", d, r.Marked(d), also[d])
					}
				}
			}
			if n != tc.unreadable {
				t.Errorf("unreadable %d, want %d", n, tc.unreadable)
			}
		})
	}
}

// TestSweepBlobs: a blob goes only when unmarked, not kept by the caller
// and old both when listed and at the delete; a dry run removes nothing.
func TestSweepBlobs(t *testing.T) {
	ctx := context.Background()
	old, cutoff, young := time.Unix(1000, 0), time.Unix(2000, 0), time.Unix(3000, 0)
	for _, dry := range []bool{false, true} {
		m := newMem(young)
		img, used := m.image(t, "used", 2, old)
		garbage := m.putBlob([]byte("garbage"), old)
		fresh := m.putBlob([]byte("fresh"), young)
		pinned := m.putBlob([]byte("pinned"), old)
		touched := m.putBlob([]byte("touched during the run"), old)
		vanished := m.putBlob([]byte("removed by someone else"), old)

		r := New(m, cutoff, dry)
		if _, total, err := r.ListBlobs(ctx); err != nil || total == 0 {
			t.Fatalf("ListBlobs: %d, %v", total, err)
		}
		if _, err := r.Keep(ctx, []digest.Digest{img}, Reach{}); err != nil {
			t.Fatal(err)
		}
		// after the listing: one blob is used again, one removed
		m.TouchBlob(ctx, touched)
		m.mu.Lock()
		delete(m.blobs, vanished)
		m.mu.Unlock()

		var removed, kept []digest.Digest
		err := r.SweepBlobs(ctx, func(d digest.Digest) bool { return d == pinned },
			func(b storage.BlobInfo) { removed = append(removed, b.Digest) },
			func(b storage.BlobInfo) { kept = append(kept, b.Digest) })
		if err != nil {
			t.Fatal(err)
		}
		if len(removed) != 1 || removed[0] != garbage {
			t.Errorf("dry=%v: removed %v, want only %s", dry, removed, garbage)
		}
		wantKept := set(append(used, img, fresh, pinned, touched)...)
		if len(kept) != len(wantKept) {
			t.Errorf("dry=%v: kept %v, want %v", dry, kept, wantKept)
		}
		for _, d := range kept {
			if !wantKept[d] {
				t.Errorf("dry=%v: kept %s", dry, d)
			}
		}
		_, err = m.StatBlobInfo(ctx, garbage)
		if dry && err != nil || !dry && !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("dry=%v: garbage after the sweep: %v", dry, err)
		}
	}
}

// TestSweepBlobsTouchAtTheDelete: a blob touched between the decision and
// the delete (a manifest PUT that starts using it) stays.
func TestSweepBlobsTouchAtTheDelete(t *testing.T) {
	ctx := context.Background()
	m := newMem(time.Unix(3000, 0))
	d := m.putBlob([]byte("about to be used"), time.Unix(1000, 0))
	m.onDelete = func(x digest.Digest) { m.TouchBlob(ctx, x) }
	r := New(m, time.Unix(2000, 0), false)
	if _, _, err := r.ListBlobs(ctx); err != nil {
		t.Fatal(err)
	}
	var removed int
	if err := r.SweepBlobs(ctx, nil, func(storage.BlobInfo) { removed++ }, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := m.StatBlobInfo(ctx, d); err != nil || removed != 0 {
		t.Fatalf("touched blob: removed %d, stat %v", removed, err)
	}
}

// TestRemoveRecordAndRecords: records listed with their times; a dry run
// looks only; a record written since the cutoff stays.
func TestRemoveRecordAndRecords(t *testing.T) {
	ctx := context.Background()
	old, cutoff, young := time.Unix(1000, 0), time.Unix(2000, 0), time.Unix(3000, 0)
	m := newMem(young)
	a, b := digest.FromString("a"), digest.FromString("b")
	m.putRecord("r", layout.Manifest(a), []byte("mt"), old)
	m.putRecord("r", layout.Manifest(b), []byte("mt"), young)
	m.putRecord("r", "manifests/sha256/not-hex", nil, old) // not the layout's: skipped

	recs, err := Records(ctx, m, "r", layout.ManifestsDir)
	if err != nil || len(recs) != 2 {
		t.Fatalf("Records = %v, %v", recs, err)
	}
	times := map[digest.Digest]time.Time{recs[0].Digest: recs[0].ModTime, recs[1].Digest: recs[1].ModTime}
	if !times[a].Equal(old) || !times[b].Equal(young) {
		t.Errorf("Records times %v", times)
	}
	for _, rec := range recs {
		if rec.Key != layout.Manifest(rec.Digest) {
			t.Errorf("Records key %q for %s", rec.Key, rec.Digest)
		}
	}

	dry := New(m, cutoff, true)
	if gone, err := dry.RemoveRecord(ctx, "r", layout.Manifest(a), cutoff); !gone || err != nil {
		t.Errorf("dry run on an old record: %v, %v", gone, err)
	}
	if _, err := m.StatRecord(ctx, "r", layout.Manifest(a)); err != nil {
		t.Errorf("dry run removed the record: %v", err)
	}
	real := New(m, cutoff, false)
	if gone, err := real.RemoveRecord(ctx, "r", layout.Manifest(b), cutoff); gone || err != nil {
		t.Errorf("young record: %v, %v", gone, err)
	}
	if gone, err := real.RemoveRecord(ctx, "r", layout.Manifest(a), cutoff); !gone || err != nil {
		t.Errorf("old record: %v, %v", gone, err)
	}
	if _, err := real.RemoveRecord(ctx, "r", layout.Manifest(a), cutoff); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("removed twice: %v", err)
	}
}

// TestRepos: every repository, the error names the repository, and a
// cancelled context stops the walk.
func TestRepos(t *testing.T) {
	m := newMem(time.Now())
	m.putRecord("a", layout.Tag("x"), nil, time.Now())
	m.putRecord("b/c", layout.Tag("x"), nil, time.Now())
	r := New(m, time.Time{}, false)
	var seen []string
	if err := r.Repos(context.Background(), func(n string) error { seen = append(seen, n); return nil }); err != nil || strings.Join(seen, ",") != "a,b/c" {
		t.Errorf("Repos: %v, %v", seen, err)
	}
	boom := errors.New("boom")
	if err := r.Repos(context.Background(), func(string) error { return boom }); !errors.Is(err, boom) || !strings.Contains(err.Error(), "repository a") {
		t.Errorf("Repos error: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Repos(ctx, func(string) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("Repos on a cancelled context: %v", err)
	}
	// the zero cutoff makes nothing old
	if r.Old(time.Unix(0, 0)) {
		t.Error("zero cutoff: something is old")
	}
}
