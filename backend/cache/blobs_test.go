package cache

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
)

// uploadsLeft counts upload sessions (partial downloads) in the store.
func (e *cacheEnv) uploadsLeft() int {
	ents, err := os.ReadDir(filepath.Join(e.root, "uploads"))
	if err != nil {
		e.t.Fatal(err)
	}
	return len(ents)
}

// get fetches path without failing on a broken body: it returns what
// arrived and the read error.
func (e *cacheEnv) get(path string, hdr ...string) (*http.Response, []byte, error) {
	e.t.Helper()
	req, err := http.NewRequest("GET", e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res, b, err
}

// Both download paths: small blobs are stored first, big ones streamed.
var blobPaths = []struct {
	name  string
	spool int64
}{{"spooled", 1 << 20}, {"streamed", 1 << 10}}

// An upstream that serves wrong bytes does not poison the cache: the
// client gets a 502 (or, once streaming has begun, a broken download
// short of its last byte) and nothing is stored.
func TestDigestMismatch(t *testing.T) {
	for _, bp := range blobPaths {
		t.Run(bp.name, func(t *testing.T) {
			up := startUpstream(t)
			layer := randBytes(t, 200<<10)
			im := up.pushImage("team/app", "v1", backend.MediaTypeDockerManifest, layer)
			ce := newCache(t, Options{Upstream: up.srv.URL})
			ce.c.spoolLimit = bp.spool
			up.corrupt.Store(true)

			// manifests are always checked before they are served
			r := ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr)
			expect(t, r, http.StatusBadGateway, backend.CodeUnknown)
			r = ce.do("GET", "/v2/team/app/manifests/"+string(im.digest), acceptAllHdr)
			expect(t, r, http.StatusBadGateway, backend.CodeUnknown)
			if ce.stored(im.digest) {
				t.Fatal("corrupt manifest stored")
			}

			d := im.layers[0]
			res, body, err := ce.get("/v2/team/app/blobs/" + string(d))
			if bp.spool > int64(len(layer)) {
				if err != nil || res.StatusCode != http.StatusBadGateway || !bytes.Contains(body, []byte("does not match")) {
					t.Fatalf("spooled corrupt blob: %v %v %s", err, res, body)
				}
			} else if err == nil && bytes.Equal(body, layer) {
				t.Fatalf("streamed corrupt blob arrived complete and right?")
			} else if err == nil && len(body) >= len(layer) {
				t.Fatalf("streamed corrupt blob arrived complete (%d bytes, status %d)", len(body), res.StatusCode)
			}
			if ce.stored(d) {
				t.Fatal("corrupt blob stored")
			}
			if n := ce.uploadsLeft(); n != 0 {
				t.Fatalf("%d partial downloads left", n)
			}

			// the upstream heals: the right bytes come through
			up.corrupt.Store(false)
			r = ce.do("GET", "/v2/team/app/blobs/"+string(d))
			expect(t, r, http.StatusOK, "")
			if !bytes.Equal(r.body, layer) || !ce.stored(d) {
				t.Fatal("healed blob wrong or not stored")
			}
			r = ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr)
			expect(t, r, http.StatusOK, "")
			if !bytes.Equal(r.body, im.manifest) {
				t.Fatal("healed manifest wrong")
			}
		})
	}
}

// HEAD on a miss asks the upstream with a HEAD and fetches nothing.
func TestHead(t *testing.T) {
	up := startUpstream(t)
	layer := randBytes(t, 5000)
	im := up.pushImage("team/app", "v1", backend.MediaTypeDockerManifest, layer)
	ce := newCache(t, Options{Upstream: up.srv.URL})

	r := ce.do("HEAD", "/v2/team/app/manifests/v1", acceptAllHdr)
	expect(t, r, http.StatusOK, "")
	if r.header.Get("Docker-Content-Digest") != string(im.digest) || r.header.Get("Content-Type") != backend.MediaTypeDockerManifest ||
		r.header.Get("Content-Length") != strconv.Itoa(len(im.manifest)) || len(r.body) != 0 {
		t.Fatalf("HEAD manifest: %v", r.header)
	}
	r = ce.do("HEAD", "/v2/team/app/blobs/"+string(im.layers[0]))
	expect(t, r, http.StatusOK, "")
	if r.header.Get("Content-Length") != strconv.Itoa(len(layer)) || r.header.Get("Docker-Content-Digest") != string(im.layers[0]) {
		t.Fatalf("HEAD blob: %v", r.header)
	}
	if up.count("GET manifest") != 0 || up.count("GET blob") != 0 {
		t.Fatalf("HEAD fetched content: %v", up.counts)
	}
	// docker's next step: GET by the digest the HEAD gave
	r = ce.do("GET", "/v2/team/app/manifests/"+string(im.digest), acceptAllHdr)
	expect(t, r, http.StatusOK, "")
	// and a GET by tag within the TTL uses the HEAD's answer
	up.resetCounts()
	r = ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr)
	expect(t, r, http.StatusOK, "")
	if !bytes.Equal(r.body, im.manifest) || len(up.counts) != 0 {
		t.Fatalf("GET after HEAD: %v", up.counts)
	}
	expect(t, ce.do("HEAD", "/v2/team/app/manifests/nope", acceptAllHdr), http.StatusNotFound, "")
}

// Ranges are served from the store, and on a miss the whole blob is
// fetched and stored while the range goes to the client.
func TestRange(t *testing.T) {
	for _, bp := range blobPaths {
		t.Run(bp.name, func(t *testing.T) {
			up := startUpstream(t)
			layer := randBytes(t, 300<<10)
			im := up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, layer)
			ce := newCache(t, Options{Upstream: up.srv.URL})
			ce.c.spoolLimit = bp.spool
			d := im.layers[0]
			path := "/v2/team/app/blobs/" + string(d)

			// miss with a range (a resumed download)
			r := ce.do("GET", path, "Range: bytes=1000-1999")
			expect(t, r, http.StatusPartialContent, "")
			if !bytes.Equal(r.body, layer[1000:2000]) || r.header.Get("Content-Range") != fmt.Sprintf("bytes 1000-1999/%d", len(layer)) {
				t.Fatalf("ranged miss: %d bytes, %v", len(r.body), r.header)
			}
			if !ce.stored(d) {
				t.Fatal("ranged miss did not store the blob")
			}
			up.down.Store(http.StatusServiceUnavailable)
			for _, c := range []struct {
				rng  string
				want []byte
			}{
				{"bytes=0-0", layer[:1]},
				{"bytes=1000-", layer[1000:]},
				{"bytes=-10", layer[len(layer)-10:]},
				{"bytes=10-99999999", layer[10:]},
			} {
				r := ce.do("GET", path, "Range: "+c.rng)
				expect(t, r, http.StatusPartialContent, "")
				if !bytes.Equal(r.body, c.want) {
					t.Fatalf("%s: %d bytes", c.rng, len(r.body))
				}
			}
			r = ce.do("GET", path, "Range: bytes=999999999-")
			expect(t, r, http.StatusRequestedRangeNotSatisfiable, backend.CodeRangeInvalid)
			r = ce.do("GET", path)
			expect(t, r, http.StatusOK, "")
			if !bytes.Equal(r.body, layer) {
				t.Fatal("full blob differs")
			}
		})
	}
}

// Clients fetching the same missing blob at once all get the right bytes
// and the store ends up with one copy and no leftovers.
func TestConcurrentMisses(t *testing.T) {
	for _, bp := range blobPaths {
		t.Run(bp.name, func(t *testing.T) {
			up := startUpstream(t)
			layer := randBytes(t, 512<<10)
			im := up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, layer)
			ce := newCache(t, Options{Upstream: up.srv.URL})
			ce.c.spoolLimit = bp.spool
			d := im.layers[0]
			const n = 8
			var wg sync.WaitGroup
			errs := make(chan error, 2*n)
			for i := 0; i < n; i++ {
				wg.Add(2)
				go func() {
					defer wg.Done()
					res, body, err := ce.get("/v2/team/app/blobs/" + string(d))
					if err != nil || res.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
						errs <- fmt.Errorf("blob: err %v, %d bytes", err, len(body))
					}
				}()
				go func() {
					defer wg.Done()
					res, body, err := ce.get("/v2/team/app/manifests/v1", acceptAllHdr)
					if err != nil || res.StatusCode != http.StatusOK || !bytes.Equal(body, im.manifest) {
						errs <- fmt.Errorf("manifest: err %v, %s", err, body)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if !ce.stored(d) || ce.uploadsLeft() != 0 {
				t.Fatalf("stored %v, %d uploads left", ce.stored(d), ce.uploadsLeft())
			}
			blobs := 0
			_ = filepath.Walk(filepath.Join(ce.root, "blobs"), func(p string, fi os.FileInfo, err error) error {
				if err == nil && !fi.IsDir() {
					blobs++
				}
				return nil
			})
			if blobs != 2 { // the layer and the manifest
				t.Fatalf("%d files in the blob store, want 2", blobs)
			}
			t.Logf("upstream blob GETs for %d concurrent clients: %d", n, up.count("GET blob"))
		})
	}
}

// A client that goes away in the middle of a download leaves nothing
// half-stored; the next client gets the whole blob.
func TestClientDisconnect(t *testing.T) {
	up := startUpstream(t)
	layer := randBytes(t, 4<<20)
	im := up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, layer)
	d := im.layers[0]
	gate := make(chan struct{})
	var once sync.Once
	up.wrap = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "GET" || r.URL.Path != "/v2/team/app/blobs/"+string(d) {
			up.direct(w, r)
			return
		}
		select {
		case <-gate: // healed: serve normally
			up.direct(w, r)
			return
		default:
		}
		// half the blob, then stall until the client has gone
		w.Header().Set("Content-Length", strconv.Itoa(len(layer)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(layer[:len(layer)/2])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	ce := newCache(t, Options{Upstream: up.srv.URL})
	ce.c.spoolLimit = 1 << 10
	done := make(chan struct{}, 4)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { done <- struct{}{} }()
		ce.c.ServeHTTP(w, r)
	}))
	defer front.Close()

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", front.URL+"/v2/team/app/blobs/"+string(d), nil)
	res, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	if _, err := io.ReadFull(res.Body, buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, layer[:len(buf)]) {
		t.Fatal("first bytes differ")
	}
	cancel()
	res.Body.Close()
	<-done // the cache's handler has finished
	if ce.stored(d) {
		t.Fatal("partial blob visible after disconnect")
	}
	if n := ce.uploadsLeft(); n != 0 {
		t.Fatalf("%d partial downloads left", n)
	}

	once.Do(func() { close(gate) })
	r := doReq(t, front.Client(), "GET", front.URL+"/v2/team/app/blobs/"+string(d), nil)
	<-done
	expect(t, r, http.StatusOK, "")
	if !bytes.Equal(r.body, layer) || !ce.stored(d) {
		t.Fatal("blob after disconnect wrong or not stored")
	}
	got, err := digest.SHA256.FromReader(bytes.NewReader(r.body))
	if err != nil || got != d {
		t.Fatal("digest differs")
	}
}

// An upstream that stops sending in the middle of a blob is given up
// after IdleTimeout: the client sees a failed download (504 when nothing
// was sent yet) and nothing is stored.
func TestUpstreamStallsMidBlob(t *testing.T) {
	for _, bp := range blobPaths {
		t.Run(bp.name, func(t *testing.T) {
			up := startUpstream(t)
			layer := randBytes(t, 256<<10)
			im := up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, layer)
			d := im.layers[0]
			up.wrap = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != "GET" || r.URL.Path != "/v2/team/app/blobs/"+string(d) {
					up.direct(w, r)
					return
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(layer)))
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write(layer[:len(layer)/2])
				w.(http.Flusher).Flush()
				<-r.Context().Done() // stalls until the cache gives up
			})
			ce := newCache(t, Options{Upstream: up.srv.URL, IdleTimeout: 200 * time.Millisecond})
			ce.c.spoolLimit = bp.spool
			res, body, err := ce.get("/v2/team/app/blobs/" + string(d))
			if bp.spool > int64(len(layer)) {
				if err != nil || res.StatusCode != http.StatusGatewayTimeout || !bytes.Contains(body, []byte("stalled")) {
					t.Fatalf("spooled stall: %v %v %s", err, res, body)
				}
			} else if err == nil {
				t.Fatalf("streamed stall: download ended cleanly with %d bytes", len(body))
			}
			if ce.stored(d) || ce.uploadsLeft() != 0 {
				t.Fatalf("stored %v, %d uploads left", ce.stored(d), ce.uploadsLeft())
			}
		})
	}
}

// Requests for a blob that is being downloaded follow that download
// instead of starting their own: one upstream GET, every client gets the
// right bytes (also a ranged one), and nothing is stored if the bytes
// turn out wrong.
func TestFollowDownload(t *testing.T) {
	for _, bp := range blobPaths {
		for _, corrupt := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/corrupt=%v", bp.name, corrupt), func(t *testing.T) {
				up := startUpstream(t)
				layer := randBytes(t, 512<<10)
				im := up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, layer)
				d := im.layers[0]
				gate, inFlight := gatedBlob(up, "team/app", d, layer, corrupt)
				ce := newCache(t, Options{Upstream: up.srv.URL})
				ce.c.spoolLimit = bp.spool
				const followers = 4
				followDownload(t, ce, d, layer, corrupt, gate, inFlight, followers)
				if got := up.count("GET blob"); got != 1 {
					t.Errorf("%d upstream GETs for %d clients, want 1", got, followers+1)
				}
				if ce.stored(d) == corrupt || ce.uploadsLeft() != 0 {
					t.Fatalf("stored %v (corrupt %v), %d uploads left", ce.stored(d), corrupt, ce.uploadsLeft())
				}
			})
		}
	}
}

// When the first client goes away in the middle of a download that others
// follow, the download goes on for them and the blob is stored.
func TestFollowersOutliveLeader(t *testing.T) {
	up := startUpstream(t)
	layer := randBytes(t, 2<<20)
	im := up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, layer)
	d := im.layers[0]
	gate := make(chan struct{})
	inFlight := make(chan struct{})
	var once sync.Once
	up.wrap = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "GET" || r.URL.Path != "/v2/team/app/blobs/"+string(d) {
			up.direct(w, r)
			return
		}
		up.mu.Lock()
		up.counts["GET blob"]++
		up.mu.Unlock()
		w.Header().Set("Content-Length", strconv.Itoa(len(layer)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(layer[:len(layer)/2])
		w.(http.Flusher).Flush()
		once.Do(func() { close(inFlight) })
		<-gate
		_, _ = w.Write(layer[len(layer)/2:])
	})
	ce := newCache(t, Options{Upstream: up.srv.URL})
	ce.c.spoolLimit = 1 << 10
	joined := make(chan string, 10)
	ce.c.blobJoined = func(k string) { joined <- k }

	// the leader: reads a little, then goes away
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
	if !ce.stored(d) || ce.uploadsLeft() != 0 || up.count("GET blob") != 1 {
		t.Fatalf("stored %v, %d uploads left, %d upstream GETs", ce.stored(d), ce.uploadsLeft(), up.count("GET blob"))
	}
}
