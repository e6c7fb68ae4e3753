package s3store

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/e2e/harness"
)

const bucket = "wharf-test"

// newStore opens a store on gw's bucket under prefix.
func newStore(t *testing.T, gw *harness.VersityGW, prefix string, mod func(*Options)) *Store {
	t.Helper()
	o := Options{
		Config:    Config{Bucket: bucket, Prefix: prefix, Endpoint: gw.Endpoint, PathStyle: true, Region: "us-east-1"},
		AccessKey: gw.AccessKey, SecretKey: gw.SecretKey, UploadTTL: time.Hour,
	}
	if mod != nil {
		mod(&o)
	}
	s, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRecords(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	ctx := context.Background()
	s := newStore(t, gw, "site.test", nil)
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
	if v, err := s.GetRecord(ctx, "a", "tags/x"); string(v) != "new" {
		t.Fatalf("overwrite: %q %v", v, err)
	}
	if l, err := s.ListRecords(ctx, "a", "tags"); strings.Join(l, ",") != "x,y" {
		t.Fatalf("list: %v %v", l, err)
	}
	if l, err := s.ListRecords(ctx, "a", "nothing"); len(l) != 0 || err != nil {
		t.Fatalf("list of absent dir: %v %v", l, err)
	}
	repos, err := s.ListRepos(ctx)
	if err != nil || strings.Join(repos, ",") != "a,a/b,a/b/c" {
		t.Fatalf("repos %v %v", repos, err)
	}
	// Another site in the same bucket sees none of it.
	other := newStore(t, gw, "other.test", nil)
	if repos, err := other.ListRepos(ctx); len(repos) != 0 || err != nil {
		t.Fatalf("other prefix sees %v %v", repos, err)
	}
	if err := s.DeleteRecord(ctx, "a/b", "tags/z"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRecord(ctx, "a/b", "tags/z"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	for _, bad := range [][2]string{{"_a", "tags/x"}, {"a/../b", "tags/x"}, {"a", "../x"}, {"a", "tags//x"}} {
		if err := s.PutRecord(ctx, bad[0], bad[1], nil); err == nil {
			t.Errorf("PutRecord(%q, %q) accepted", bad[0], bad[1])
		}
	}
}

// TestUploadAcrossInstances: a session started by one store continues on
// another (another wharf process) and commits there, for each way a
// commit assembles chunks.
func TestUploadAcrossInstances(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	ctx := context.Background()
	a := newStore(t, gw, "site.test", nil)
	b := newStore(t, gw, "site.test", nil)
	for _, tc := range []struct {
		name   string
		chunks []int
	}{
		{"one chunk (copy)", []int{3 << 20}},
		{"big chunks (compose)", []int{6 << 20, 5 << 20, 1000}},
		{"small chunks (stream)", []int{1000, 70000, 1, 300}},
		{"empty", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var all []byte
			u, err := a.NewUpload(ctx, "team/app")
			if err != nil {
				t.Fatal(err)
			}
			id := u.ID()
			u.Close()
			for i, n := range tc.chunks {
				st := []*Store{a, b}[i%2]
				u, err := st.OpenUpload(ctx, "team/app", id)
				if err != nil {
					t.Fatalf("chunk %d: open: %v", i, err)
				}
				if u.Size() != int64(len(all)) {
					t.Fatalf("chunk %d: session has %d bytes, want %d", i, u.Size(), len(all))
				}
				data := randomBytes(t, n)
				got, err := u.Append(ctx, bytes.NewReader(data))
				if err != nil || got != int64(n) {
					t.Fatalf("append %d: %d %v", i, got, err)
				}
				all = append(all, data...)
				u.Close()
			}
			if _, err := a.OpenUpload(ctx, "other/repo", id); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("session opened by another repository: %v", err)
			}
			u, err = b.OpenUpload(ctx, "team/app", id)
			if err != nil {
				t.Fatal(err)
			}
			d := digest.FromBytes(all)
			if err := u.Commit(ctx, d); err != nil {
				t.Fatal(err)
			}
			u.Close()
			got, err := storage.ReadBlob(ctx, a, d, 64<<20)
			if err != nil || !bytes.Equal(got, all) {
				t.Fatalf("read back: %d bytes (want %d) %v", len(got), len(all), err)
			}
			if _, err := a.OpenUpload(ctx, "team/app", id); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("session still there after commit: %v", err)
			}
		})
	}
}

func TestDigestMismatch(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	ctx := context.Background()
	s := newStore(t, gw, "", nil)
	u, err := s.NewUpload(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Append(ctx, strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}
	wrong := digest.FromString("other")
	if err := u.Commit(ctx, wrong); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("commit of wrong digest: %v", err)
	}
	if _, err := s.StatBlob(ctx, wrong); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("mismatched blob visible: %v", err)
	}
	if _, err := s.OpenUpload(ctx, "a", u.ID()); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("session kept after mismatch: %v", err)
	}
	if err := s.PutBlob(ctx, wrong, []byte("hello")); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("PutBlob of wrong digest: %v", err)
	}
}

// failingReader delivers n bytes and then fails like a client that went
// away.
type failingReader struct {
	r io.Reader
	n int
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("connection reset by peer")
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

// TestInterruptedAppend: a chunk whose client goes away is not recorded;
// the session keeps what was acknowledged and can be resumed.
func TestInterruptedAppend(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	ctx := context.Background()
	s := newStore(t, gw, "", nil)
	first := randomBytes(t, 1000)
	u, err := s.NewUpload(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Append(ctx, bytes.NewReader(first)); err != nil {
		t.Fatal(err)
	}
	second := randomBytes(t, 12<<20)
	n, err := u.Append(ctx, &failingReader{r: bytes.NewReader(second), n: 9 << 20})
	if !errors.Is(err, storage.ErrInterrupted) || n != 0 {
		t.Fatalf("interrupted append: %d %v", n, err)
	}
	u.Close()
	u, err = s.OpenUpload(ctx, "a", u.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if u.Size() != 1000 {
		t.Fatalf("size after interruption %d, want 1000", u.Size())
	}
	if _, err := u.Append(ctx, bytes.NewReader(second)); err != nil {
		t.Fatal(err)
	}
	all := append(first, second...)
	if err := u.Commit(ctx, digest.FromBytes(all)); err != nil {
		t.Fatal(err)
	}
	got, err := storage.ReadBlob(ctx, s, digest.FromBytes(all), 64<<20)
	if err != nil || !bytes.Equal(got, all) {
		t.Fatalf("read back %d bytes: %v", len(got), err)
	}
}

func TestBlobTimesAndConditionalDelete(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	ctx := context.Background()
	s := newStore(t, gw, "", nil)
	data := []byte(`{"k":"v"}`)
	d := digest.FromBytes(data)
	if err := s.PutBlob(ctx, d, data); err != nil {
		t.Fatal(err)
	}
	bi, err := s.StatBlobInfo(ctx, d)
	if err != nil || bi.Size != int64(len(data)) {
		t.Fatalf("stat: %+v %v", bi, err)
	}
	var listed []storage.BlobInfo
	if err := s.ListBlobs(ctx, func(b storage.BlobInfo) error { listed = append(listed, b); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0].Digest != d || listed[0].Size != int64(len(data)) {
		t.Fatalf("listed %+v", listed)
	}
	// Cutoff before the write: kept.
	if gone, err := s.DeleteBlobIfOlder(ctx, d, bi.ModTime.Add(-time.Hour)); gone || err != nil {
		t.Fatalf("young blob deleted: %v %v", gone, err)
	}
	// Cutoff in the future: deleted, and a later touch is told so.
	if gone, err := s.DeleteBlobIfOlder(ctx, d, time.Now().Add(time.Hour)); !gone || err != nil {
		t.Fatalf("old blob kept: %v %v", gone, err)
	}
	if err := s.TouchBlob(ctx, d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("touch of deleted blob: %v", err)
	}
	if _, err := s.DeleteBlobIfOlder(ctx, d, time.Now()); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("delete of absent blob: %v", err)
	}

	// Records follow the same rules.
	if err := s.PutRecord(ctx, "a", "manifests/sha256/aa", []byte("m")); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchRecord(ctx, "a", "manifests/sha256/aa"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StatRecord(ctx, "a", "manifests/sha256/aa"); err != nil {
		t.Fatal(err)
	}
	if gone, err := s.DeleteRecordIfOlder(ctx, "a", "manifests/sha256/aa", time.Now().Add(time.Hour)); !gone || err != nil {
		t.Fatalf("old record kept: %v %v", gone, err)
	}
	if err := s.TouchRecord(ctx, "a", "manifests/sha256/aa"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("touch of deleted record: %v", err)
	}
}

// TestTouchDuringDelete: a touch from another process that lands after
// gc looked at the times but before it finished keeps the blob.
func TestTouchDuringDelete(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	ctx := context.Background()
	gc := newStore(t, gw, "", nil)
	serving := newStore(t, gw, "", nil)
	data := randomBytes(t, 4096)
	d := digest.FromBytes(data)
	if err := gc.PutBlob(ctx, d, data); err != nil {
		t.Fatal(err)
	}
	var touchErr error
	gc.hook = func(step string) {
		if step == "moved aside" {
			touchErr = serving.TouchBlob(ctx, d)
		}
	}
	gone, err := gc.DeleteBlobIfOlder(ctx, d, time.Now().Add(time.Hour))
	if err != nil || gone {
		t.Fatalf("blob touched during delete was deleted: %v %v", gone, err)
	}
	// The touch ran while the blob was aside: it may say "not found"
	// (then the registry re-checks), but the blob is back either way.
	if touchErr != nil && !errors.Is(touchErr, storage.ErrNotFound) {
		t.Fatal(touchErr)
	}
	got, err := storage.ReadBlob(ctx, serving, d, 1<<20)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("blob after racing touch: %v", err)
	}
}

// TestBadBucketAndCredentials: start-up says which is wrong.
func TestBadBucketAndCredentials(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	for _, tc := range []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"no bucket", func(o *Options) { o.Bucket = "no-such-bucket" }, "does not exist"},
		{"wrong secret", func(o *Options) { o.SecretKey = "wrong" }, "secret key is wrong"},
		{"unknown access key", func(o *Options) { o.AccessKey = "nobody" }, "access key is not known"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{
				Config:    Config{Bucket: bucket, Endpoint: gw.Endpoint, PathStyle: true, Region: "us-east-1"},
				AccessKey: gw.AccessKey, SecretKey: gw.SecretKey,
			}
			tc.mod(&o)
			s, err := New(context.Background(), o)
			if err == nil {
				s.Close()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// faults is a transport that answers 503 SlowDown to the first few
// requests and can cut a GET's body after some bytes.
type faults struct {
	next     http.RoundTripper
	slowDown atomic.Int32 // requests still to refuse
	refused  atomic.Int32
	cutAfter atomic.Int64 // >0: GET bodies end after this many bytes
}

func (f *faults) RoundTrip(r *http.Request) (*http.Response, error) {
	if f.slowDown.Add(-1) >= 0 {
		f.refused.Add(1)
		body := `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`
		if r.Body != nil {
			r.Body.Close()
		}
		return &http.Response{StatusCode: 503, Status: "503 Service Unavailable", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"application/xml"}}, Body: io.NopCloser(strings.NewReader(body)),
			ContentLength: int64(len(body)), Request: r}, nil
	}
	resp, err := f.next.RoundTrip(r)
	if err == nil && r.Method == http.MethodGet && f.cutAfter.Load() > 0 && resp.StatusCode/100 == 2 {
		resp.Body = &cutBody{ReadCloser: resp.Body, left: f.cutAfter.Load()}
	}
	return resp, err
}

type cutBody struct {
	io.ReadCloser
	left int64
}

func (c *cutBody) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.ReadCloser.Read(p)
	c.left -= int64(n)
	return n, err
}

func TestRetriesAndCutConnection(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	ctx := context.Background()
	f := &faults{next: http.DefaultTransport}
	s := newStore(t, gw, "", func(o *Options) { o.Transport = f })
	data := randomBytes(t, 1<<20)
	d := digest.FromBytes(data)

	f.slowDown.Store(3)
	if err := s.PutBlob(ctx, d, data); err != nil {
		t.Fatalf("put through 3x SlowDown: %v", err)
	}
	if f.refused.Load() != 3 {
		t.Fatalf("%d requests refused, want 3", f.refused.Load())
	}

	f.cutAfter.Store(100 << 10)
	b, err := s.OpenBlob(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(b)
	b.Close()
	if err == nil {
		t.Fatalf("read of a cut connection succeeded with %d bytes", len(got))
	}
	if !bytes.Equal(got, data[:len(got)]) {
		t.Fatal("cut read delivered wrong bytes")
	}
	// The same through WriteTo (io.Copy, as a pull serves a whole blob).
	b, err = s.OpenBlob(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	_, err = io.Copy(&buf, b)
	b.Close()
	if err == nil {
		t.Fatalf("copy of a cut connection succeeded with %d bytes", buf.Len())
	}
	if !bytes.Equal(buf.Bytes(), data[:buf.Len()]) {
		t.Fatal("cut copy delivered wrong bytes")
	}
	// Whole again without faults.
	f.cutAfter.Store(0)
	b, err = s.OpenBlob(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	_, err = io.Copy(&buf, b)
	b.Close()
	if err != nil || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("copy: %d bytes, %v", buf.Len(), err)
	}
}

// TestExpireAbandoned: the janitor removes upload sessions idle for longer
// than the TTL, multipart uploads a crash abandoned, and leftovers of a
// killed gc; younger ones stay.
func TestExpireAbandoned(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	ctx := context.Background()
	s := newStore(t, gw, "site.test", nil)
	u, err := s.NewUpload(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Append(ctx, strings.NewReader("abc")); err != nil {
		t.Fatal(err)
	}
	id := u.ID()
	u.Close()
	core := minio.Core{Client: s.c}
	mpu, err := core.NewMultipartUpload(ctx, bucket, s.uploadKey(storage.NewID(), "chunk-000000"), minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	incomplete := func() int {
		n := 0
		for m := range s.c.ListIncompleteUploads(ctx, bucket, s.prefix, true) {
			if m.Err != nil {
				t.Fatal(m.Err)
			}
			if m.UploadID == mpu {
				n++
			}
		}
		return n
	}
	if incomplete() != 1 {
		t.Fatal("multipart upload not listed")
	}
	// Now: nothing is old enough.
	s.expire(ctx, time.Now())
	u, err = s.OpenUpload(ctx, "a", id)
	if err != nil {
		t.Fatalf("young session expired: %v", err)
	}
	u.Close()
	if incomplete() != 1 {
		t.Fatal("young multipart upload aborted")
	}
	// Two TTLs later: everything is abandoned.
	s.expire(ctx, time.Now().Add(2*s.ttl))
	if _, err := s.OpenUpload(ctx, "a", id); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("idle session kept: %v", err)
	}
	if incomplete() != 0 {
		t.Fatal("abandoned multipart upload kept")
	}
}

// TestBlobSeek: a blob read from an offset (a Range pull) and again from
// the start returns exactly those bytes.
func TestBlobSeek(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	ctx := context.Background()
	s := newStore(t, gw, "", nil)
	data := randomBytes(t, 300<<10)
	d := digest.FromBytes(data)
	if err := s.PutBlob(ctx, d, data); err != nil {
		t.Fatal(err)
	}
	b, err := s.OpenBlob(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Size() != int64(len(data)) {
		t.Fatalf("size %d", b.Size())
	}
	for _, off := range []int64{100 << 10, 0, 299 << 10} {
		if _, err := b.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(io.LimitReader(b, 1<<10))
		if err != nil || !bytes.Equal(got, data[off:off+1<<10]) {
			t.Fatalf("read at %d: %d bytes, %v", off, len(got), err)
		}
	}
	if _, err := b.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(b); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("full read after seeks: %d bytes, %v", len(got), err)
	}
	if _, err := s.OpenBlob(ctx, digest.FromString("absent")); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("open of an absent blob: %v", err)
	}
}

// TestPersistentSlowDownIsUnavailable: when S3 keeps answering 503
// SlowDown after the retries, every call the registry makes reports
// storage.ErrUnavailable (a 503 UNAVAILABLE for the client), on the
// write paths too, not an unclassified error that becomes a 500.
func TestPersistentSlowDownIsUnavailable(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	ctx := context.Background()
	f := &faults{next: http.DefaultTransport}
	s := newStore(t, gw, "", func(o *Options) { o.Transport = f; o.MaxRetries = 2 })
	data := randomBytes(t, 64<<10)
	d := digest.FromBytes(data)
	if err := s.PutRecord(ctx, "a/b", "_manifests/tags/v1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	// Two sessions started while S3 was fine: one appends, one commits.
	u1, err := s.NewUpload(ctx, "a/b")
	if err != nil {
		t.Fatal(err)
	}
	defer u1.Close()
	u2, err := s.NewUpload(ctx, "a/b")
	if err != nil {
		t.Fatal(err)
	}
	defer u2.Close()
	if _, err := u2.Append(ctx, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}

	f.slowDown.Store(1 << 30)
	calls := []struct {
		name string
		fn   func() error
	}{
		{"NewUpload", func() error { _, err := s.NewUpload(ctx, "a/b"); return err }},
		{"Append", func() error { _, err := u1.Append(ctx, bytes.NewReader(data)); return err }},
		{"Commit", func() error { return u2.Commit(ctx, d) }},
		{"PutBlob", func() error { return s.PutBlob(ctx, d, data) }},
		{"PutRecord", func() error { return s.PutRecord(ctx, "a/b", "_manifests/tags/v2", []byte("y")) }},
		{"GetRecord", func() error { _, err := s.GetRecord(ctx, "a/b", "_manifests/tags/v1"); return err }},
		{"DeleteRecord", func() error { return s.DeleteRecord(ctx, "a/b", "_manifests/tags/v1") }},
		{"ListRepos", func() error { _, err := s.ListRepos(ctx); return err }},
		{"StatBlob", func() error { _, err := s.StatBlob(ctx, d); return err }},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			err := c.fn()
			if !errors.Is(err, storage.ErrUnavailable) {
				t.Fatalf("err = %v, want storage.ErrUnavailable", err)
			}
		})
	}
}
