package registry

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/localfs"
)

// flakyStore is a store whose blob reads fail with ErrUnavailable while
// down is set, as the S3 store's do when S3 keeps answering SlowDown.
type flakyStore struct {
	storage.Store
	down atomic.Bool
}

func (f *flakyStore) unavailable() error {
	return fmt.Errorf("s3: %w: SlowDown (after 10 tries)", storage.ErrUnavailable)
}

func (f *flakyStore) OpenBlob(ctx context.Context, d digest.Digest) (storage.Blob, error) {
	if f.down.Load() {
		return nil, f.unavailable()
	}
	return f.Store.OpenBlob(ctx, d)
}

func (f *flakyStore) NewUpload(ctx context.Context, repo string) (storage.Upload, error) {
	if f.down.Load() {
		return nil, f.unavailable()
	}
	return f.Store.NewUpload(ctx, repo)
}

func (f *flakyStore) PutRecord(ctx context.Context, repo, key string, value []byte) error {
	if f.down.Load() {
		return f.unavailable()
	}
	return f.Store.PutRecord(ctx, repo, key, value)
}

func (f *flakyStore) StatBlob(ctx context.Context, d digest.Digest) (int64, error) {
	if f.down.Load() {
		return 0, f.unavailable()
	}
	return f.Store.StatBlob(ctx, d)
}

// TestStorageUnavailable: a store that is temporarily unavailable gives
// the client 503 UNAVAILABLE with Retry-After (GET and HEAD), not a
// 500; once it is back the blob is served.
func TestStorageUnavailable(t *testing.T) {
	fs, err := localfs.New(localfs.Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	st := &flakyStore{Store: fs}
	e := newEnv(t, Options{Store: st})
	d := e.pushBlob("a/b", []byte("content"))
	m := e.image("a/b", "layer")
	st.down.Store(true)
	for _, m := range []string{"GET", "HEAD"} {
		r := e.do(m, "/v2/a/b/blobs/"+string(d), nil)
		code := "UNAVAILABLE"
		if m == "HEAD" {
			code = "" // no body
		}
		e.expect(r, http.StatusServiceUnavailable, code)
		if r.header.Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", m)
		}
	}
	// The write paths too: starting an upload, storing a manifest.
	for _, c := range []struct {
		method, path string
		body         []byte
		hdr          []string
	}{
		{"POST", "/v2/a/b/blobs/uploads/", nil, nil},
		{"PUT", "/v2/a/b/manifests/v1", m, []string{"Content-Type: " + backend.MediaTypeOCIManifest}},
	} {
		r := e.do(c.method, c.path, c.body, c.hdr...)
		e.expect(r, http.StatusServiceUnavailable, "UNAVAILABLE")
	}
	st.down.Store(false)
	r := e.do("GET", "/v2/a/b/blobs/"+string(d), nil)
	e.expect(r, http.StatusOK, "")
	if string(r.body) != "content" {
		t.Fatalf("body %q", r.body)
	}
}
