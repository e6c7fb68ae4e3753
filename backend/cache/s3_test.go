package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	digest "github.com/opencontainers/go-digest"
	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/s3store"
	"github.com/wharf-dev/wharf/e2e/harness"
	"github.com/wharf-dev/wharf/internal/conf"
	"github.com/wharf-dev/wharf/internal/testlog"
)

const s3Bucket = "wharf-cache"

// s3Env is a versitygw with one bucket that the tests' caches keep their
// data in, each under its own prefix.
type s3Env struct {
	gw *harness.VersityGW
	mc *minio.Client
}

func startS3(t *testing.T) *s3Env {
	t.Helper()
	gw := harness.StartVersityGW(t, s3Bucket)
	mc, err := minio.New(gw.Addr, &minio.Options{Creds: credentials.NewStaticV4(gw.AccessKey, gw.SecretKey, ""), BucketLookup: minio.BucketLookupPath})
	if err != nil {
		t.Fatal(err)
	}
	return &s3Env{gw: gw, mc: mc}
}

// open opens an S3 store under prefix as Config.OpenStore does for
// storage = "s3".
func (e *s3Env) open(t *testing.T, prefix string) storage.Store {
	t.Helper()
	c := &Config{Storage: "s3", S3: &s3store.Config{Bucket: s3Bucket, Prefix: prefix, Endpoint: e.gw.Endpoint, PathStyle: true}}
	c.SetDefaults("m.example")
	t.Setenv("AWS_ACCESS_KEY_ID", e.gw.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", e.gw.SecretKey)
	st, err := c.OpenStore(context.Background(), conf.Env{}, "", testlog.New(t, zerolog.DebugLevel))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// objects counts the objects under prefix/sub.
func (e *s3Env) objects(t *testing.T, prefix, sub string) int {
	t.Helper()
	n := 0
	for o := range e.mc.ListObjects(context.Background(), s3Bucket, minio.ListObjectsOptions{Prefix: prefix + "/" + sub, Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		n++
	}
	return n
}

// TestS3FollowDownload: on a cache site on S3, whose uploads cannot be
// read before they are committed, a cold pull that four more requests
// join (one with a Range) is fetched from the upstream once, every
// client gets the exact bytes, and a download whose content does not
// match its digest gives no client a complete answer and stores nothing.
func TestS3FollowDownload(t *testing.T) {
	s3 := startS3(t)
	n := 0
	for _, bp := range []struct {
		name  string
		spool int64
	}{{"spooled", 4 << 20}, {"streamed", 1 << 10}} {
		for _, corrupt := range []bool{false, true} {
			n++
			prefix := fmt.Sprintf("follow-%d", n)
			t.Run(fmt.Sprintf("%s/corrupt=%v", bp.name, corrupt), func(t *testing.T) {
				up := startUpstream(t)
				layer := randBytes(t, 2<<20)
				im := up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, layer)
				d := im.layers[0]
				gate, inFlight := gatedBlob(up, "team/app", d, layer, corrupt)
				st := s3.open(t, prefix)
				if _, ok := st.(storage.TailUpload); ok {
					t.Fatal("the S3 store reads uploads before the commit now: this test no longer covers the path without a tail")
				}
				ce := newCache(t, Options{Upstream: up.srv.URL, Store: st})
				ce.c.spoolLimit = bp.spool
				const followers = 4
				full := followDownload(t, ce, d, layer, corrupt, gate, inFlight, followers)
				if !corrupt && full != followers {
					t.Errorf("%d complete answers, want %d", full, followers)
				}
				if got := up.count("GET blob"); got != 1 {
					t.Errorf("%d upstream GETs for %d clients, want 1", got, followers+1)
				}
				ce.settle()
				if ce.stored(d) == corrupt {
					t.Fatalf("stored %v (corrupt %v)", ce.stored(d), corrupt)
				}
				if left := s3.objects(t, prefix, "uploads/"); left != 0 {
					t.Fatalf("%d upload objects left in the bucket", left)
				}
				// a later pull is a hit from the bucket
				res, body, err := ce.get("/v2/team/app/blobs/" + string(d))
				if !corrupt && (err != nil || res.StatusCode != 200 || !bytes.Equal(body, layer) || up.count("GET blob") != 1) {
					t.Fatalf("hit: %v, %d bytes, %d upstream GETs", err, len(body), up.count("GET blob"))
				}
			})
		}
	}
}

// TestS3FollowersOutliveLeader: the first client of a cold pull on S3
// (which gets the bytes as they go to the bucket) goes away in the
// middle; the download goes on for the request following it, which gets
// the whole blob from the bucket.
func TestS3FollowersOutliveLeader(t *testing.T) {
	s3 := startS3(t)
	up := startUpstream(t)
	layer := randBytes(t, 2<<20)
	im := up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, layer)
	d := im.layers[0]
	gate, inFlight := gatedBlob(up, "team/app", d, layer, false)
	ce := newCache(t, Options{Upstream: up.srv.URL, Store: s3.open(t, "outlive")})
	ce.c.spoolLimit = 1 << 10
	joined := make(chan string, 10)
	ce.c.blobJoined = func(k string) { joined <- k }

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", ce.srv.URL+"/v2/team/app/blobs/"+string(d), nil)
	res, err := ce.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := io.ReadFull(res.Body, buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, layer[:len(buf)]) {
		t.Fatal("the leader's first bytes differ")
	}
	<-inFlight
	type result struct {
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		_, body, err := ce.get("/v2/team/app/blobs/" + string(d))
		done <- result{body, err}
	}()
	<-joined
	cancel()
	res.Body.Close()
	close(gate)
	r := <-done
	if r.err != nil || !bytes.Equal(r.body, layer) {
		t.Fatalf("follower: err %v, %d bytes", r.err, len(r.body))
	}
	ce.settle()
	if !ce.stored(d) || up.count("GET blob") != 1 || s3.objects(t, "outlive", "uploads/") != 0 {
		t.Fatalf("stored %v, %d upstream GETs, %d upload objects left", ce.stored(d), up.count("GET blob"), s3.objects(t, "outlive", "uploads/"))
	}
}

// TestS3Evict: eviction (what `wharf gc` and max_size run) works on a
// cache site on S3: over a tiny budget, the pulled image goes, tag,
// manifest and blobs, and the next pull fetches it again.
func TestS3Evict(t *testing.T) {
	s3 := startS3(t)
	up := startUpstream(t)
	layer := randBytes(t, 256<<10)
	im := up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, layer)
	st := s3.open(t, "evict")
	ce := newCache(t, Options{Upstream: up.srv.URL, Store: st})
	expect(t, ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr), 200, "")
	expect(t, ce.do("GET", "/v2/team/app/blobs/"+string(im.layers[0])), 200, "")
	ce.settle()
	if !ce.stored(im.layers[0]) {
		t.Fatal("layer not stored")
	}
	res, err := Evict(context.Background(), st, EvictOptions{MaxSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Blobs == 0 || res.Manifests != 1 || ce.stored(im.layers[0]) {
		t.Fatalf("evicted %d blobs, %d manifests; layer still stored: %v", res.Blobs, res.Manifests, ce.stored(im.layers[0]))
	}
	up.resetCounts()
	r := ce.do("GET", "/v2/team/app/blobs/"+string(im.layers[0]))
	expect(t, r, 200, "")
	if !bytes.Equal(r.body, layer) || up.count("GET blob") != 1 {
		t.Fatalf("after eviction: %d bytes, %d upstream GETs", len(r.body), up.count("GET blob"))
	}
}

// TestS3UpstreamStallAndClientGone: on S3, where the first client gets
// the bytes as they go to the bucket, an upstream that stalls in the
// middle of a blob cuts that client's download before the end, and a
// client that goes away alone ends the download; either way nothing is
// stored and no upload objects stay in the bucket, and the next pull
// works.
func TestS3UpstreamStallAndClientGone(t *testing.T) {
	s3 := startS3(t)
	for _, tc := range []string{"upstream stalls", "client goes away"} {
		t.Run(tc, func(t *testing.T) {
			prefix := strings.ReplaceAll(tc, " ", "-")
			up := startUpstream(t)
			layer := randBytes(t, 2<<20)
			im := up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, layer)
			d := im.layers[0]
			healed := make(chan struct{})
			up.wrap = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-healed:
					up.direct(w, r)
					return
				default:
				}
				if r.Method != "GET" || r.URL.Path != "/v2/team/app/blobs/"+string(d) {
					up.direct(w, r)
					return
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(layer)))
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write(layer[:len(layer)/2])
				w.(http.Flusher).Flush()
				<-r.Context().Done() // until the cache gives up
			})
			o := Options{Upstream: up.srv.URL, Store: s3.open(t, prefix)}
			if tc == "upstream stalls" {
				o.IdleTimeout = 200 * time.Millisecond
			}
			ce := newCache(t, o)
			ce.c.spoolLimit = 1 << 10
			if tc == "upstream stalls" {
				_, body, err := ce.get("/v2/team/app/blobs/" + string(d))
				if err == nil {
					t.Fatalf("the download ended cleanly with %d bytes", len(body))
				}
			} else {
				ctx, cancel := context.WithCancel(context.Background())
				req, _ := http.NewRequestWithContext(ctx, "GET", ce.srv.URL+"/v2/team/app/blobs/"+string(d), nil)
				res, err := ce.srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 64<<10)
				if _, err := io.ReadFull(res.Body, buf); err != nil || !bytes.Equal(buf, layer[:len(buf)]) {
					t.Fatalf("first bytes: %v", err)
				}
				cancel()
				res.Body.Close()
			}
			ce.settle()
			if ce.stored(d) || s3.objects(t, prefix, "uploads/") != 0 {
				t.Fatalf("stored %v, %d upload objects left", ce.stored(d), s3.objects(t, prefix, "uploads/"))
			}
			close(healed)
			r := ce.do("GET", "/v2/team/app/blobs/"+string(d))
			expect(t, r, http.StatusOK, "")
			ce.settle()
			if !bytes.Equal(r.body, layer) || !ce.stored(d) {
				t.Fatal("the pull after the failure is wrong or not stored")
			}
		})
	}
}

// TestTeeWriter: whatever the chunks, the first client of a download on
// a store without a tail gets every byte but the last while the download
// runs, the last only after a successful commit, and a cut stream (never
// a complete one) after a failure.
func TestTeeWriter(t *testing.T) {
	blob := []byte("0123456789")
	for _, tc := range []struct {
		name   string
		chunks []int
		ok     bool
	}{
		{"one chunk", []int{10}, true},
		{"last byte alone", []int{9, 1}, true},
		{"bytes", []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, true},
		{"uneven", []int{3, 3, 4}, true},
		{"failed", []int{3, 7}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			watch := time.AfterFunc(time.Hour, func() {})
			defer watch.Stop()
			tw := newTeeWriter(rec, digest.FromBytes(blob), int64(len(blob)), watch, time.Minute, func() {})
			pos := 0
			for _, n := range tc.chunks {
				if w, err := tw.Write(blob[pos : pos+n]); w != n || err != nil {
					t.Fatalf("Write: %d, %v", w, err)
				}
				pos += n
			}
			if got := rec.Body.String(); got != string(blob[:len(blob)-1]) {
				t.Fatalf("before the commit the client has %q", got)
			}
			f := newBlobFlight()
			f.finish(tc.ok, errors.New("upstream broke"))
			var panicked any
			func() {
				defer func() { panicked = recover() }()
				if err := tw.finish(f); err != nil {
					t.Fatalf("finish: %v", err)
				}
			}()
			switch {
			case tc.ok && (panicked != nil || rec.Body.String() != string(blob)):
				t.Fatalf("after the commit: %q, panic %v", rec.Body.String(), panicked)
			case !tc.ok && (panicked != http.ErrAbortHandler || rec.Body.Len() == len(blob)):
				t.Fatalf("after a failure: %q, panic %v; want a cut stream", rec.Body.String(), panicked)
			}
			if rec.Code != http.StatusOK || rec.Header().Get("Content-Length") != "10" || rec.Header().Get("Docker-Content-Digest") != string(digest.FromBytes(blob)) {
				t.Fatalf("status %d, headers %v", rec.Code, rec.Header())
			}
		})
	}
	// a failure before the first byte is the leader's error, cleanly
	rec := httptest.NewRecorder()
	watch := time.AfterFunc(time.Hour, func() {})
	defer watch.Stop()
	tw := newTeeWriter(rec, digest.FromBytes(blob), 10, watch, time.Minute, func() {})
	f := newBlobFlight()
	want := &upstreamError{status: http.StatusBadGateway, msg: "broken"}
	f.finish(false, want)
	if err := tw.finish(f); err != want || rec.Body.Len() != 0 {
		t.Fatalf("finish before any byte: %v, %d bytes sent", err, rec.Body.Len())
	}
}
