package cache

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/backend"
)

// A pull through the cache gives the upstream's bytes, digests and media
// types; a second pull is served without asking the upstream, even when
// it is down.
func TestMissThenHit(t *testing.T) {
	for _, mt := range []string{backend.MediaTypeDockerManifest, backend.MediaTypeOCIManifest} {
		t.Run(mt, func(t *testing.T) {
			up := startUpstream(t)
			im := up.pushImage("team/app", "v1", mt, randBytes(t, 3000), randBytes(t, 70000))
			ce := newCache(t, Options{Upstream: up.srv.URL})

			r := ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr)
			expect(t, r, http.StatusOK, "")
			if !bytes.Equal(r.body, im.manifest) {
				t.Fatalf("manifest bytes differ:\n%s\nwant\n%s", r.body, im.manifest)
			}
			if got := r.header.Get("Docker-Content-Digest"); got != string(im.digest) {
				t.Fatalf("digest %s, want %s", got, im.digest)
			}
			if got := r.header.Get("Content-Type"); got != mt {
				t.Fatalf("Content-Type %q, want %q", got, mt)
			}
			for d, want := range im.data {
				r := ce.do("GET", "/v2/team/app/blobs/"+string(d))
				expect(t, r, http.StatusOK, "")
				if !bytes.Equal(r.body, want) || r.header.Get("Docker-Content-Digest") != string(d) {
					t.Fatalf("blob %s: wrong bytes or digest header", d)
				}
			}
			if up.count("GET manifest") != 1 || up.count("GET blob") != len(im.data) {
				t.Fatalf("upstream saw %v", up.counts)
			}

			// Second pull: nothing goes upstream, even with it down.
			up.resetCounts()
			up.down.Store(http.StatusServiceUnavailable)
			for _, ref := range []string{"v1", string(im.digest)} {
				r := ce.do("GET", "/v2/team/app/manifests/"+ref, acceptAllHdr)
				expect(t, r, http.StatusOK, "")
				if !bytes.Equal(r.body, im.manifest) || r.header.Get("Content-Type") != mt {
					t.Fatalf("cached manifest %s differs", ref)
				}
				h := ce.do("HEAD", "/v2/team/app/manifests/"+ref, acceptAllHdr)
				expect(t, h, http.StatusOK, "")
				if h.header.Get("Docker-Content-Digest") != string(im.digest) || h.header.Get("Content-Length") != itoa(len(im.manifest)) {
					t.Fatalf("HEAD %s: %v", ref, h.header)
				}
			}
			for d, want := range im.data {
				r := ce.do("GET", "/v2/team/app/blobs/"+string(d))
				expect(t, r, http.StatusOK, "")
				if !bytes.Equal(r.body, want) {
					t.Fatalf("cached blob %s differs", d)
				}
			}
			if n := len(up.counts); n != 0 {
				t.Fatalf("hits went upstream: %v", up.counts)
			}

			// The catalog lists what is cached.
			r = ce.do("GET", "/v2/_catalog")
			expect(t, r, http.StatusOK, "")
			if !strings.Contains(string(r.body), `"team/app"`) {
				t.Fatalf("catalog %s", r.body)
			}
		})
	}
}

// Pinned digests pull the same through the cache as from upstream, also
// when asked before any tag.
func TestManifestByDigestMiss(t *testing.T) {
	up := startUpstream(t)
	im := up.pushImage("team/app", "v1", backend.MediaTypeDockerManifest, randBytes(t, 100))
	ce := newCache(t, Options{Upstream: up.srv.URL})
	r := ce.do("GET", "/v2/team/app/manifests/"+string(im.digest), acceptAllHdr)
	expect(t, r, http.StatusOK, "")
	if !bytes.Equal(r.body, im.manifest) || r.header.Get("Content-Type") != backend.MediaTypeDockerManifest {
		t.Fatalf("by digest: %s %v", r.body, r.header)
	}
	r = ce.do("GET", "/v2/team/app/manifests/sha256:"+strings.Repeat("a", 64), acceptAllHdr)
	expect(t, r, http.StatusNotFound, backend.CodeManifestUnknown)
	r = ce.do("GET", "/v2/team/app/manifests/nope", acceptAllHdr)
	expect(t, r, http.StatusNotFound, backend.CodeManifestUnknown)
	r = ce.do("GET", "/v2/team/app/blobs/sha256:"+strings.Repeat("b", 64))
	expect(t, r, http.StatusNotFound, backend.CodeBlobUnknown)
	r = ce.do("HEAD", "/v2/team/app/blobs/sha256:"+strings.Repeat("b", 64))
	expect(t, r, http.StatusNotFound, "")
}

// After the TTL a tag is revalidated with a HEAD; content is fetched again
// only when the digest changed.
func TestRevalidate(t *testing.T) {
	up := startUpstream(t)
	im := up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, randBytes(t, 100))
	ce := newCache(t, Options{Upstream: up.srv.URL, TTL: time.Hour})
	expect(t, ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr), http.StatusOK, "")

	// within the TTL: no upstream request
	up.resetCounts()
	ce.clock.advance(59 * time.Minute)
	expect(t, ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr), http.StatusOK, "")
	if len(up.counts) != 0 {
		t.Fatalf("fresh answer went upstream: %v", up.counts)
	}

	// past the TTL, unchanged: one HEAD, no GET
	ce.clock.advance(2 * time.Minute)
	r := ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr)
	expect(t, r, http.StatusOK, "")
	if up.count("HEAD manifest") != 1 || up.count("GET manifest") != 0 || r.header.Get("Docker-Content-Digest") != string(im.digest) {
		t.Fatalf("revalidation: %v, digest %s", up.counts, r.header.Get("Docker-Content-Digest"))
	}
	// ... and the check restarted the TTL
	up.resetCounts()
	ce.clock.advance(30 * time.Minute)
	expect(t, ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr), http.StatusOK, "")
	if len(up.counts) != 0 {
		t.Fatalf("revalidated answer went upstream: %v", up.counts)
	}

	// the tag moves upstream: still the old answer inside the TTL, the
	// new one after it
	im2 := up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, randBytes(t, 100))
	r = ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr)
	if r.header.Get("Docker-Content-Digest") != string(im.digest) {
		t.Fatalf("inside the TTL the tag moved already")
	}
	ce.clock.advance(time.Hour)
	up.resetCounts()
	r = ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr)
	expect(t, r, http.StatusOK, "")
	if !bytes.Equal(r.body, im2.manifest) || r.header.Get("Docker-Content-Digest") != string(im2.digest) {
		t.Fatalf("moved tag not refetched: %s", r.header.Get("Docker-Content-Digest"))
	}
	if up.count("HEAD manifest") != 1 || up.count("GET manifest") != 1 {
		t.Fatalf("refetch: %v", up.counts)
	}
	// the old digest stays pullable by digest from the cache
	up.down.Store(http.StatusServiceUnavailable)
	r = ce.do("GET", "/v2/team/app/manifests/"+string(im.digest), acceptAllHdr)
	expect(t, r, http.StatusOK, "")

	// the tag is deleted upstream: 404 after the TTL
	up.down.Store(0)
	expect(t, up.req("DELETE", "/v2/team/app/manifests/v1", nil), http.StatusAccepted, "")
	ce.clock.advance(2 * time.Hour)
	expect(t, ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr), http.StatusNotFound, backend.CodeManifestUnknown)
	// and the cache forgot it: with the upstream down it is not served
	up.down.Store(http.StatusServiceUnavailable)
	expect(t, ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr), http.StatusBadGateway, backend.CodeUnknown)
}

// A stale answer is served when the upstream errors or is unreachable;
// with nothing cached the client gets a clear 502/504.
func TestStaleOnError(t *testing.T) {
	up := startUpstream(t)
	im := up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, randBytes(t, 100))
	ce := newCache(t, Options{Upstream: up.srv.URL, TTL: time.Minute})
	expect(t, ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr), http.StatusOK, "")

	for _, status := range []int{http.StatusInternalServerError, http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusForbidden} {
		up.down.Store(int32(status))
		ce.clock.advance(2 * time.Minute)
		r := ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr)
		expect(t, r, http.StatusOK, "")
		if !bytes.Equal(r.body, im.manifest) {
			t.Fatalf("upstream %d: stale answer differs", status)
		}
		expect(t, ce.do("HEAD", "/v2/team/app/manifests/v1", acceptAllHdr), http.StatusOK, "")
		// nothing cached: the upstream's trouble shows
		r = ce.do("GET", "/v2/team/app/manifests/v2", acceptAllHdr)
		want := http.StatusBadGateway
		if status == http.StatusTooManyRequests {
			want = http.StatusTooManyRequests
		}
		expect(t, r, want, "")
		if !strings.Contains(string(r.body), "upstream answered") {
			t.Fatalf("error message %s", r.body)
		}
	}

	// unreachable: the upstream's server is gone
	up.srv.Close()
	ce.clock.advance(2 * time.Minute)
	r := ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr)
	expect(t, r, http.StatusOK, "")
	r = ce.do("GET", "/v2/team/app/manifests/v2", acceptAllHdr)
	expect(t, r, http.StatusBadGateway, backend.CodeUnknown)
	if !strings.Contains(string(r.body), "unreachable") {
		t.Fatalf("error message %s", r.body)
	}
	r = ce.do("GET", "/v2/team/app/blobs/sha256:"+strings.Repeat("c", 64))
	expect(t, r, http.StatusBadGateway, backend.CodeUnknown)
}

// An upstream that does not answer in time gives 504 when nothing is
// cached, the stale answer otherwise.
func TestUpstreamTimeout(t *testing.T) {
	up := startUpstream(t)
	up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, randBytes(t, 100))
	release := make(chan struct{})
	var hang atomic.Bool
	up.wrap = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hang.Load() {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		up.direct(w, r)
	})
	defer close(release)
	ce := newCache(t, Options{Upstream: up.srv.URL, TTL: time.Minute, UpstreamTimeout: 300 * time.Millisecond})
	expect(t, ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr), http.StatusOK, "")
	hang.Store(true)
	ce.clock.advance(2 * time.Minute)
	expect(t, ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr), http.StatusOK, "")
	expect(t, ce.do("GET", "/v2/team/app/manifests/v2", acceptAllHdr), http.StatusGatewayTimeout, backend.CodeUnknown)
	expect(t, ce.do("GET", "/v2/team/app/blobs/sha256:"+strings.Repeat("d", 64)), http.StatusGatewayTimeout, backend.CodeUnknown)
}

// Pushes and deletes are refused: the site is a read-only mirror.
func TestReadOnly(t *testing.T) {
	up := startUpstream(t)
	ce := newCache(t, Options{Upstream: up.srv.URL})
	for _, c := range []struct{ method, path string }{
		{"POST", "/v2/team/app/blobs/uploads/"},
		{"PATCH", "/v2/team/app/blobs/uploads/0123456789abcdef0123456789abcdef"},
		{"PUT", "/v2/team/app/manifests/v1"},
		{"DELETE", "/v2/team/app/manifests/v1"},
		{"DELETE", "/v2/team/app/blobs/sha256:" + strings.Repeat("a", 64)},
		{"GET", "/v2/team/app/blobs/uploads/0123456789abcdef0123456789abcdef"},
	} {
		r := ce.do(c.method, c.path)
		expect(t, r, http.StatusMethodNotAllowed, backend.CodeUnsupported)
		if !strings.Contains(string(r.body), "read-only mirror") {
			t.Fatalf("%s %s: %s", c.method, c.path, r.body)
		}
	}
	expect(t, ce.do("GET", "/v2/"), http.StatusOK, "")
	expect(t, ce.do("GET", "/v2/Bad_Name/manifests/v1"), http.StatusBadRequest, backend.CodeNameInvalid)
	expect(t, ce.do("GET", "/v2/team/app/blobs/sha256:zz"), http.StatusBadRequest, backend.CodeDigestInvalid)
	if len(up.counts) != 0 {
		t.Fatalf("refused requests went upstream: %v", up.counts)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// Concurrent misses of one tag share a single upstream GET (Docker Hub
// counts manifest GETs against its pull limit).
func TestConcurrentTagMissOneFetch(t *testing.T) {
	up := startUpstream(t)
	im := up.pushImage("team/app", "v1", backend.MediaTypeDockerManifest, randBytes(t, 100))
	release := make(chan struct{})
	up.wrap = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "GET" && strings.Contains(r.URL.Path, "/manifests/") {
			<-release
		}
		up.direct(w, r)
	})
	ce := newCache(t, Options{Upstream: up.srv.URL})
	const n = 8
	joined := make(chan string, n)
	ce.c.manifests.joined = func(key string) { joined <- key }
	results := make(chan *resp, n)
	for i := 0; i < n; i++ {
		go func() {
			results <- doReq(t, ce.srv.Client(), "GET", ce.srv.URL+"/v2/team/app/manifests/v1", nil, acceptAllHdr)
		}()
	}
	for i := 0; i < n-1; i++ {
		<-joined // every other request waits for the first one's fetch
	}
	close(release)
	for i := 0; i < n; i++ {
		r := <-results
		if r.status != http.StatusOK || !bytes.Equal(r.body, im.manifest) {
			t.Fatalf("status %d, body %s", r.status, r.body)
		}
	}
	if got := up.count("GET manifest"); got != 1 {
		t.Fatalf("%d upstream manifest GETs for %d concurrent misses, want 1", got, n)
	}
}

func TestFlightGroupWaiterOutlivesCancelledLeader(t *testing.T) {
	var g flightGroup[int]
	started := make(chan struct{})
	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	joined := make(chan struct{})
	g.joined = func(string) { close(joined) }
	leaderDone := make(chan error)
	go func() {
		_, err := g.do(leaderCtx, "k", func() (int, error) {
			close(started)
			<-leaderCtx.Done()
			return 0, leaderCtx.Err()
		})
		leaderDone <- err
	}()
	<-started
	waiterDone := make(chan int)
	go func() {
		v, err := g.do(context.Background(), "k", func() (int, error) { return 42, nil })
		if err != nil {
			t.Error(err)
		}
		waiterDone <- v
	}()
	<-joined
	cancelLeader()
	if err := <-leaderDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("leader: %v", err)
	}
	if v := <-waiterDone; v != 42 {
		t.Fatalf("waiter got %d, want its own result 42", v)
	}
}
