package migration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/registry"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/layout"
	"github.com/wharf-dev/wharf/backend/storage/localfs"
	"github.com/wharf-dev/wharf/backend/storage/s3store"
	"github.com/wharf-dev/wharf/e2e/harness"
)

const bucket = "wharf-migrate"

// side is one store of a migration: a local root or a prefix of the
// versitygw bucket.
type side struct {
	name   string
	st     storage.Store
	root   string // localfs root, or the S3 prefix
	gw     *harness.VersityGW
	local  bool
	server *httptest.Server
}

func newLocal(t *testing.T) *side {
	t.Helper()
	root := t.TempDir()
	st, err := localfs.New(localfs.Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &side{name: "filesystem", st: st, root: root, local: true}
}

func newS3(t *testing.T, gw *harness.VersityGW, prefix string) *side {
	t.Helper()
	st, err := s3store.New(context.Background(), s3store.Options{
		Config:    s3store.Config{Bucket: bucket, Prefix: prefix, Endpoint: gw.Endpoint, PathStyle: true, Region: "us-east-1"},
		AccessKey: gw.AccessKey, SecretKey: gw.SecretKey, UploadTTL: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &side{name: "s3", st: st, root: prefix, gw: gw}
}

// serve puts the registry in front of the store (as wharf serve would)
// and returns its host:port.
func (s *side) serve(t *testing.T) string {
	t.Helper()
	if s.server == nil {
		reg, err := registry.New(context.Background(), registry.Options{Store: noClose{s.st}, Delete: true})
		if err != nil {
			t.Fatal(err)
		}
		s.server = httptest.NewServer(reg)
		t.Cleanup(s.server.Close)
	}
	return strings.TrimPrefix(s.server.URL, "http://")
}

// noClose keeps the registry's Close from closing a store the test owns.
type noClose struct{ storage.Store }

func (noClose) Close() error { return nil }

// directions gives, for each way a site moves, a fresh source and
// destination.
func directions(t *testing.T) []func(t *testing.T) (from, to *side) {
	gw := harness.StartVersityGW(t, bucket)
	var n atomic.Int32
	prefix := func() string { return "site" + string(rune('a'+n.Add(1))) }
	return []func(t *testing.T) (from, to *side){
		func(t *testing.T) (*side, *side) { return newLocal(t), newS3(t, gw, prefix()) },
		func(t *testing.T) (*side, *side) { return newS3(t, gw, prefix()), newLocal(t) },
	}
}

func forBoth(t *testing.T, fn func(t *testing.T, from, to *side)) {
	for _, mk := range directions(t) {
		from, to := mk(t)
		t.Run(from.name+"-to-"+to.name, func(t *testing.T) { fn(t, from, to) })
	}
}

// fixture is what was pushed to a source.
type fixture struct {
	images  map[string]v1.Image // "repo:tag" -> image
	indexes map[string]v1.ImageIndex
	sig     v1.Image // a referrer of app:v1
	subject v1.Hash
}

func push(t *testing.T, addr, ref string, x any) {
	t.Helper()
	var err error
	switch v := x.(type) {
	case v1.Image:
		err = remote.Write(harness.Ref(t, addr+"/"+ref), v, harness.RemoteOptions()...)
	case v1.ImageIndex:
		err = remote.WriteIndex(harness.Ref(t, addr+"/"+ref), v, harness.RemoteOptions()...)
	}
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

// populate pushes Docker and OCI images, a multi-platform index and a
// signature-like referrer through the registry API of the source.
func populate(t *testing.T, src *side) *fixture {
	t.Helper()
	addr := src.serve(t)
	f := &fixture{images: map[string]v1.Image{}, indexes: map[string]v1.ImageIndex{}}
	f.images["app:v1"] = harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 3, 16<<10)
	f.images["app:v2"] = harness.RandomImage(t, harness.OCIFormat, "linux/arm64", 2, 16<<10)
	f.images["team/tools/cli:1.0"] = harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 1, 8<<10)
	f.indexes["team/lib:latest"] = harness.RandomIndex(t, []string{"linux/amd64", "linux/arm64"}, 2, 8<<10)
	for ref, img := range f.images {
		push(t, addr, ref, img)
	}
	for ref, idx := range f.indexes {
		push(t, addr, ref, idx)
	}
	f.subject = harness.MustDigest(t, f.images["app:v1"])
	mf, err := f.images["app:v1"].Manifest()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := f.images["app:v1"].RawManifest()
	sig := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 1, 1<<10)
	f.sig = mutate.Subject(sig, v1.Descriptor{MediaType: mf.MediaType, Digest: f.subject, Size: int64(len(raw))}).(v1.Image)
	push(t, addr, "app:sig", f.sig)
	return f
}

// verify pulls every image of f from the destination through the
// registry API and compares every byte; the referrers list must be the
// source's.
func verify(t *testing.T, f *fixture, from, to *side) {
	t.Helper()
	addr := to.serve(t)
	for ref, img := range f.images {
		harness.VerifyRemoteImage(t, addr+"/"+ref, img, harness.Exact)
	}
	for ref, idx := range f.indexes {
		harness.VerifyRemoteIndex(t, addr+"/"+ref, idx)
	}
	harness.VerifyRemoteImage(t, addr+"/app:sig", f.sig, harness.Exact)
	want := get(t, "http://"+from.serve(t)+"/v2/app/referrers/"+f.subject.String())
	got := get(t, "http://"+addr+"/v2/app/referrers/"+f.subject.String())
	if !bytes.Equal(got, want) || !bytes.Contains(got, []byte(harness.MustDigest(t, f.sig).String())) {
		t.Fatalf("referrers at the destination:\n%s\nat the source:\n%s", got, want)
	}
}

func get(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v %s", url, resp.StatusCode, err, b)
	}
	return b
}

func run(t *testing.T, o Options) (*Result, []Skipped) {
	t.Helper()
	var skipped []Skipped
	o.Skip = func(s Skipped) { skipped = append(skipped, s) }
	res, err := Run(context.Background(), o)
	if err != nil {
		t.Fatalf("migration: %v", err)
	}
	return res, skipped
}

// TestMigrate: everything comes over in both directions, byte for byte,
// and a second run copies nothing.
func TestMigrate(t *testing.T) {
	forBoth(t, func(t *testing.T, from, to *side) {
		f := populate(t, from)
		var last Progress
		res, skipped := run(t, Options{From: from.st, To: to.st, Progress: func(p Progress) { last = p }})
		if len(skipped) > 0 || res.Skipped != 0 {
			t.Fatalf("skipped: %v", skipped)
		}
		if last.Checked != last.Total || last.Copied != res.Blobs || last.Bytes != res.Bytes || last.Read != res.Bytes {
			t.Fatalf("last progress %+v, result %+v", last, res)
		}
		// 3 images, an index of 2 and a signature: 6 configs, 3+2+1+2+2+1
		// layers, 6 image manifests and the index.
		if res.Blobs != 6+11+7 || res.Repos != 3 || res.Tags != 5 || res.BlobsPresent != 0 {
			t.Fatalf("first run: %+v", res)
		}
		if n, m := countRecords(t, from.st), countRecords(t, to.st); res.Records != n || m != n {
			t.Fatalf("%d records written, the source has %d, the destination %d", res.Records, n, m)
		}
		verify(t, f, from, to)
		checkConsistent(t, to.st)

		again, skipped := run(t, Options{From: from.st, To: to.st})
		if len(skipped) > 0 || again.Blobs != 0 || again.Records != 0 || again.BlobsPresent != res.Blobs || again.RecordsPresent != res.Records {
			t.Fatalf("second run copied again: %+v (first %+v), skipped %v", again, res, skipped)
		}
	})
}

// corrupt replaces blob d's content in a store with size bytes that do
// not hash to d (bit rot, a bad disk, a tampered bucket), creating it if
// need be.
func corrupt(t *testing.T, s *side, d digest.Digest, size int64) {
	t.Helper()
	bad := bytes.Repeat([]byte{'x'}, int(size))
	if s.local {
		p := filepath.Join(s.root, "blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded())
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	c, err := minio.New(s.gw.Addr, &minio.Options{Creds: credentials.NewStaticV4(s.gw.AccessKey, s.gw.SecretKey, ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	key := s.root + "/blobs/" + string(d.Algorithm()) + "/" + d.Encoded()
	if _, err := c.PutObject(context.Background(), bucket, key, bytes.NewReader(bad), size, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestCorruptSourceBlob: a source blob that does not hash to its digest
// is reported and not written; the image using it (manifest, tag) stays
// out, everything else comes over.
func TestCorruptSourceBlob(t *testing.T) {
	forBoth(t, func(t *testing.T, from, to *side) {
		f := populate(t, from)
		layers, err := f.images["app:v2"].Layers()
		if err != nil {
			t.Fatal(err)
		}
		ld, _ := layers[1].Digest()
		size, _ := layers[1].Size()
		bad := digest.Digest(ld.String())
		corrupt(t, from, bad, size)
		if _, err := from.st.StatBlob(context.Background(), bad); err != nil {
			t.Fatalf("the corrupted blob is not where the store keeps it: %v", err)
		}
		// A blob the destination has with another size than the
		// source's (tampered with there) is left alone and reported.
		cliLayers, err := f.images["team/tools/cli:1.0"].Layers()
		if err != nil {
			t.Fatal(err)
		}
		cd, _ := cliLayers[0].Digest()
		csize, _ := cliLayers[0].Size()
		odd := digest.Digest(cd.String())
		corrupt(t, to, odd, csize+5)

		res, skipped := run(t, Options{From: from.st, To: to.st})
		if _, err := to.st.StatBlob(context.Background(), bad); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("the corrupt blob was written at the destination: %v", err)
		}
		var sawBlob, sawTag, sawOdd, sawOddTag bool
		for _, s := range skipped {
			sawBlob = sawBlob || (s.Kind == KindBlob && s.Name == string(bad) && strings.Contains(s.Reason, "do not hash to its digest"))
			sawTag = sawTag || (s.Kind == KindTag && s.Repo == "app" && s.Name == "v2")
			sawOdd = sawOdd || (s.Kind == KindBlob && s.Name == string(odd) && strings.Contains(s.Reason, fmt.Sprintf("the destination has it with %d bytes, the source with %d", csize+5, csize)))
			sawOddTag = sawOddTag || (s.Kind == KindTag && s.Repo == "team/tools/cli" && s.Name == "1.0")
		}
		if !sawBlob || !sawTag || !sawOdd || !sawOddTag || res.Skipped != len(skipped) {
			t.Fatalf("skipped %v (result %+v): want both blobs with their reasons and tags app:v2, team/tools/cli:1.0", skipped, res)
		}
		if n, err := to.st.StatBlob(context.Background(), odd); err != nil || n != csize+5 {
			t.Fatalf("the destination's odd blob was touched: %d %v", n, err)
		}
		if _, err := to.st.GetRecord(context.Background(), "app", layout.Tag("v2")); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("tag app:v2 is at the destination though its layer is not: %v", err)
		}
		delete(f.images, "app:v2")
		delete(f.images, "team/tools/cli:1.0")
		verify(t, f, from, to)
		checkConsistent(t, to.st)
	})
}

// crashing is a destination that stops working after a number of writes,
// like a process killed at that moment: everything it acknowledged is
// there, nothing after it.
type crashing struct {
	storage.Store
	left atomic.Int64
}

var errCrash = errors.New("simulated crash")

func (c *crashing) PutRecord(ctx context.Context, repo, key string, v []byte) error {
	if c.left.Add(-1) < 0 {
		return errCrash
	}
	return c.Store.PutRecord(ctx, repo, key, v)
}

func (c *crashing) NewUpload(ctx context.Context, repo string) (storage.Upload, error) {
	if c.left.Add(-1) < 0 {
		return nil, errCrash
	}
	return c.Store.NewUpload(ctx, repo)
}

// TestInterruptedRun: a run stopped after any number of writes leaves a
// destination where every tag and manifest is whole, and the next run
// completes it.
func TestInterruptedRun(t *testing.T) {
	forBoth(t, func(t *testing.T, from, to *side) {
		f := populate(t, from)
		// 24 blobs and 30 records: a run crashes after every 7 writes
		// until one gets through, so crash points all over a whole
		// migration are hit (blobs, links, manifests, referrers, tags).
		crashes := 0
		for {
			c := &crashing{Store: to.st}
			c.left.Store(7)
			_, err := Run(context.Background(), Options{From: from.st, To: c})
			if err == nil {
				break
			}
			if !errors.Is(err, errCrash) {
				t.Fatalf("run %d: %v", crashes+1, err)
			}
			crashes++
			checkConsistent(t, to.st)
		}
		if crashes < (24+30)/7 {
			t.Fatalf("only %d runs crashed: the writes were not all interrupted", crashes)
		}
		res, skipped := run(t, Options{From: from.st, To: to.st})
		if len(skipped) > 0 || res.Blobs != 0 || res.Records != 0 || res.BlobsPresent != 24 {
			t.Fatalf("final run: %+v, skipped %v", res, skipped)
		}
		verify(t, f, from, to)
	})
}

// TestCancelDuringBlobs: ending the context mid-copy stops the run with
// ctx's error, and a re-run completes.
func TestCancelDuringBlobs(t *testing.T) {
	forBoth(t, func(t *testing.T, from, to *side) {
		f := populate(t, from)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var copied atomic.Int32
		c := &cancelling{Store: to.st, after: 5, n: &copied, cancel: cancel}
		if _, err := Run(ctx, Options{From: from.st, To: c, Workers: 2}); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled run: %v", err)
		}
		checkConsistent(t, to.st)
		run(t, Options{From: from.st, To: to.st})
		verify(t, f, from, to)
	})
}

type cancelling struct {
	storage.Store
	after  int32
	n      *atomic.Int32
	cancel func()
}

func (c *cancelling) NewUpload(ctx context.Context, repo string) (storage.Upload, error) {
	if c.n.Add(1) == c.after {
		c.cancel()
	}
	return c.Store.NewUpload(ctx, repo)
}

// TestTagMoves: tags moved at the source between runs move at the
// destination; a tag written at the destination after the source's (a
// push after the switch-over) is kept and reported.
func TestTagMoves(t *testing.T) {
	forBoth(t, func(t *testing.T, from, to *side) {
		f := populate(t, from)
		run(t, Options{From: from.st, To: to.st})

		// Move app:v1 at the source to a new image, and team/tools/cli:1.0
		// to the image of app:v2.
		addr := from.serve(t)
		f.images["app:v1"] = harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 16<<10)
		push(t, addr, "app:v1", f.images["app:v1"])
		f.images["team/tools/cli:1.0"] = f.images["app:v2"]
		push(t, addr, "team/tools/cli:1.0", f.images["app:v2"])
		res, skipped := run(t, Options{From: from.st, To: to.st})
		if len(skipped) > 0 || res.TagsMoved != 2 || res.Tags != 2 || res.Blobs != 4 {
			t.Fatalf("second run: %+v, skipped %v", res, skipped)
		}
		verify(t, f, from, to)

		// After the switch-over: app:v2 is pushed at the destination; an
		// older write of app:v2 at the source must not undo it.
		newer := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 1, 4<<10)
		push(t, addr, "app:v2", harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 1, 4<<10))
		push(t, to.serve(t), "app:v2", newer)
		age(t, from, to, "app", "v2")
		res, skipped = run(t, Options{From: from.st, To: to.st, DestServed: true})
		if res.Tags != 0 || len(skipped) != 1 || skipped[0].Kind != KindTag || skipped[0].Name != "v2" || !strings.Contains(skipped[0].Reason, "written later") {
			t.Fatalf("third run: %+v, skipped %v", res, skipped)
		}
		harness.VerifyRemoteImage(t, to.serve(t)+"/app:v2", newer, harness.Exact)

		// Before the switch-over (the destination not served) the
		// source's tag wins whatever the times say: only migrations
		// write there, and one may have read the source's tag just
		// before it moved and written it just after.
		res, skipped = run(t, Options{From: from.st, To: to.st})
		if res.TagsMoved != 1 || len(skipped) != 0 {
			t.Fatalf("run with the destination not served: %+v, skipped %v", res, skipped)
		}
		harness.VerifyRemoteImage(t, to.serve(t)+"/app:v2", harness.RemoteImage(t, from.serve(t)+"/app:v2"), harness.Exact)
	})
}

// age makes the source's tag record older than the destination's by an
// hour, on whichever side is the local file system (S3 sets its own
// times), so the test does not wait for clocks to tick.
func age(t *testing.T, from, to *side, repo, tag string) {
	t.Helper()
	s, shift := from, -time.Hour
	if !from.local {
		s, shift = to, time.Hour
	}
	p := filepath.Join(s.root, "repositories", repo, "_tags", tag)
	at := time.Now().Add(shift)
	if err := os.Chtimes(p, at, at); err != nil {
		t.Fatal(err)
	}
}

// countRecords counts a store's links, manifests, referrers and tags.
func countRecords(t *testing.T, st storage.Store) int {
	t.Helper()
	ctx := context.Background()
	repos, err := st.ListRepos(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var walk func(repo, dir string) int
	walk = func(repo, dir string) int {
		names, err := st.ListRecords(ctx, repo, dir)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, name := range names {
			if _, err := st.GetRecord(ctx, repo, dir+"/"+name); err == nil {
				n++
			} else {
				n += walk(repo, dir+"/"+name)
			}
		}
		return n
	}
	n := 0
	for _, repo := range repos {
		for _, dir := range []string{layout.BlobsDir, layout.ManifestsDir, layout.ReferrersDir, layout.TagsDir} {
			n += walk(repo, dir)
		}
	}
	return n
}

// checkConsistent walks a store as a client would see it: every tag names
// a manifest the repository holds, every manifest's blobs and children
// are there, every linked blob exists.
func checkConsistent(t *testing.T, st storage.Store) {
	t.Helper()
	ctx := context.Background()
	repos, err := st.ListRepos(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, repo := range repos {
		hasManifest := func(d digest.Digest) bool {
			_, err := st.GetRecord(ctx, repo, layout.Manifest(d))
			return err == nil
		}
		linked := func(d digest.Digest) bool {
			_, err := st.GetRecord(ctx, repo, layout.BlobLink(d))
			_, errB := st.StatBlob(ctx, d)
			return err == nil && errB == nil
		}
		tags, _ := layout.Tags(ctx, st, repo)
		for _, tag := range tags {
			v, err := st.GetRecord(ctx, repo, layout.Tag(tag))
			if err != nil || !hasManifest(digest.Digest(v)) {
				t.Fatalf("%s:%s names %s, which the repository does not hold (%v)", repo, tag, v, err)
			}
		}
		ds, err := layout.Digests(ctx, st, repo, layout.ManifestsDir)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			data, err := storage.ReadBlob(ctx, st, d, backend.MaxManifestSize)
			if err != nil {
				t.Fatalf("%s@%s: manifest record without content: %v", repo, d, err)
			}
			m, _, perr := backend.ParseManifest("", data)
			if perr != nil {
				t.Fatalf("%s@%s: %v", repo, d, perr)
			}
			for _, c := range m.Manifests {
				if !hasManifest(c.Digest) {
					t.Fatalf("%s@%s lists %s, which is missing", repo, d, c.Digest)
				}
			}
			if m.Config != nil && !linked(m.Config.Digest) {
				t.Fatalf("%s@%s: config %s missing or not linked", repo, d, m.Config.Digest)
			}
			for _, l := range m.Layers {
				if !linked(l.Digest) {
					t.Fatalf("%s@%s: layer %s missing or not linked", repo, d, l.Digest)
				}
			}
		}
	}
}

func TestNewer(t *testing.T) {
	base := time.Date(2026, 12, 4, 17, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		dst, src time.Time
		want     bool
	}{
		{base.Add(2 * time.Second), base, true},
		{base.Add(1500 * time.Millisecond), base.Add(900 * time.Millisecond), true},
		{base.Add(900 * time.Millisecond), base.Add(100 * time.Millisecond), false}, // same second: the source wins
		{base.Add(100 * time.Millisecond), base.Add(900 * time.Millisecond), false},
		{base, base.Add(time.Hour), false},
	} {
		if got := newer(tt.dst, tt.src); got != tt.want {
			t.Errorf("newer(%s, %s) = %v, want %v", tt.dst.Format(time.StampMilli), tt.src.Format(time.StampMilli), got, tt.want)
		}
	}
}

// goneAtDest is a destination where a gc removed every blob the run
// found there, between its listing and its links.
type goneAtDest struct{ storage.Store }

func (goneAtDest) TouchBlob(context.Context, digest.Digest) error { return storage.ErrNotFound }

// TestBlobGoneAtDestination: a blob the destination had when the run
// began but lost before it was linked is not linked, and the image using
// it stays out (its tag too), so nothing names a missing blob.
func TestBlobGoneAtDestination(t *testing.T) {
	from, to := directions(t)[0](t)
	f := populate(t, from)
	run(t, Options{From: from.st, To: to.st})
	ctx := context.Background()
	ref := "team/tools/cli"
	d := harness.MustDigest(t, f.images[ref+":1.0"])
	cfg, err := f.images[ref+":1.0"].ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{layout.Tag("1.0"), layout.Manifest(digest.Digest(d.String())), layout.BlobLink(digest.Digest(cfg.String()))} {
		if err := to.st.DeleteRecord(ctx, ref, key); err != nil {
			t.Fatal(err)
		}
	}
	_, skipped := run(t, Options{From: from.st, To: goneAtDest{to.st}})
	var link, manifest, tag bool
	for _, s := range skipped {
		link = link || (s.Kind == KindLink && s.Name == cfg.String() && strings.Contains(s.Reason, "removed at the destination"))
		manifest = manifest || (s.Kind == KindManifest && s.Name == d.String())
		tag = tag || (s.Kind == KindTag && s.Repo == ref && s.Name == "1.0")
	}
	if !link || !manifest || !tag {
		t.Fatalf("skipped %v: want the link, the manifest and the tag", skipped)
	}
	if _, err := to.st.GetRecord(ctx, ref, layout.Tag("1.0")); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("tag written though its image is incomplete: %v", err)
	}
	checkConsistent(t, to.st)
}
