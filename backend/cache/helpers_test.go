package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/registry"
	"github.com/wharf-dev/wharf/internal/testlog"
)

// upstreamEnv is a real wharf registry (backend/registry on a temporary
// directory) on a loopback server, behind a switchable fault wrapper.
type upstreamEnv struct {
	t   *testing.T
	reg *registry.Registry
	srv *httptest.Server

	// down: answer every /v2/ request with this status (0 = normal).
	down atomic.Int32
	// corrupt: flip a byte in every manifest and blob GET body.
	corrupt atomic.Bool
	// wrap, if set, handles requests before the registry (auth wrappers).
	wrap http.Handler

	mu     sync.Mutex
	counts map[string]int // "GET manifest", "HEAD blob", ...
}

func startUpstream(t *testing.T) *upstreamEnv { return startUpstreamWith(t, false) }

// startUpstreamWith starts the upstream, over TLS if asked (the
// httptest certificate is for example.com and 127.0.0.1).
func startUpstreamWith(t *testing.T, useTLS bool) *upstreamEnv {
	t.Helper()
	reg, err := registry.New(context.Background(), registry.Options{Root: t.TempDir(), Delete: true})
	if err != nil {
		t.Fatal(err)
	}
	u := &upstreamEnv{t: t, reg: reg, counts: map[string]int{}}
	if useTLS {
		u.srv = httptest.NewTLSServer(http.HandlerFunc(u.serve))
	} else {
		u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	}
	t.Cleanup(func() {
		u.srv.Close()
		reg.Close()
	})
	return u
}

func (u *upstreamEnv) serve(w http.ResponseWriter, r *http.Request) {
	if u.wrap != nil && !strings.HasPrefix(r.Header.Get("X-Test-Direct"), "1") {
		u.wrap.ServeHTTP(w, r)
		return
	}
	u.direct(w, r)
}

// direct is the upstream registry without the auth wrapper (but with the
// faults and counting).
func (u *upstreamEnv) direct(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Test-Direct") == "" {
		rt, _ := backend.ParseRoute(r.Method, r.URL.Path, r.URL.Query().Get)
		if rt != nil {
			u.mu.Lock()
			u.counts[r.Method+" "+rt.Kind.String()]++
			u.mu.Unlock()
		}
		if s := u.down.Load(); s != 0 {
			backend.WriteError(w, r, backend.Errorf(int(s), backend.CodeUnknown, "upstream is down (test)"))
			return
		}
		if u.corrupt.Load() && r.Method == http.MethodGet && rt != nil && (rt.Kind == backend.KindBlob || rt.Kind == backend.KindManifest) {
			u.reg.ServeHTTP(&corruptWriter{ResponseWriter: w}, r)
			return
		}
	}
	u.reg.ServeHTTP(w, r)
}

func (u *upstreamEnv) count(key string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.counts[key]
}

func (u *upstreamEnv) resetCounts() {
	u.mu.Lock()
	u.counts = map[string]int{}
	u.mu.Unlock()
}

// corruptWriter flips the first byte of the body: same length, wrong bytes.
type corruptWriter struct {
	http.ResponseWriter
	done bool
}

func (c *corruptWriter) Write(p []byte) (int, error) {
	if !c.done && len(p) > 0 {
		c.done = true
		q := append([]byte(nil), p...)
		q[0] ^= 0xff
		return c.ResponseWriter.Write(q)
	}
	return c.ResponseWriter.Write(p)
}

// req sends a request straight to the upstream registry (no faults, no
// auth, not counted).
func (u *upstreamEnv) req(method, path string, body []byte, hdr ...string) *resp {
	u.t.Helper()
	return doReq(u.t, u.srv.Client(), method, u.srv.URL+path, body, append(hdr, "X-Test-Direct: 1")...)
}

func (u *upstreamEnv) pushBlob(repo string, data []byte) digest.Digest {
	u.t.Helper()
	d := digest.FromBytes(data)
	r := u.req("POST", "/v2/"+repo+"/blobs/uploads/?digest="+string(d), data, "Content-Type: application/octet-stream")
	if r.status != http.StatusCreated {
		u.t.Fatalf("push blob: %d %s", r.status, r.body)
	}
	return d
}

func (u *upstreamEnv) pushManifest(repo, ref, mediaType string, body []byte) digest.Digest {
	u.t.Helper()
	r := u.req("PUT", "/v2/"+repo+"/manifests/"+ref, body, "Content-Type: "+mediaType)
	if r.status != http.StatusCreated {
		u.t.Fatalf("push manifest: %d %s", r.status, r.body)
	}
	return digest.FromBytes(body)
}

// image pushes a config and the layers to repo and tags a manifest of the
// given media type (Docker schema 2 or OCI) as tag.
type image struct {
	manifest []byte
	digest   digest.Digest
	config   digest.Digest
	layers   []digest.Digest
	data     map[digest.Digest][]byte
}

func (u *upstreamEnv) pushImage(repo, tag, mediaType string, layers ...[]byte) *image {
	u.t.Helper()
	im := &image{data: map[digest.Digest][]byte{}}
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"},"n":%d}`, time.Now().UnixNano()))
	im.config = u.pushBlob(repo, cfg)
	im.data[im.config] = cfg
	cfgType, layerType := "application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip"
	if mediaType == backend.MediaTypeDockerManifest {
		cfgType, layerType = "application/vnd.docker.container.image.v1+json", "application/vnd.docker.image.rootfs.diff.tar.gzip"
	}
	var ls []string
	for _, l := range layers {
		d := u.pushBlob(repo, l)
		im.layers = append(im.layers, d)
		im.data[d] = l
		ls = append(ls, fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d}`, layerType, d, len(l)))
	}
	// Indented like Docker's own manifests: the bytes, not a re-encoding,
	// must come through.
	im.manifest = []byte(fmt.Sprintf("{\n   \"schemaVersion\": 2,\n   \"mediaType\": %q,\n   \"config\": {\"mediaType\": %q, \"digest\": %q, \"size\": %d},\n   \"layers\": [%s]\n}",
		mediaType, cfgType, im.config, len(cfg), strings.Join(ls, ",")))
	im.digest = u.pushManifest(repo, tag, mediaType, im.manifest)
	return im
}

func randBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// cacheEnv is a Cache on a loopback server in front of an upstream.
type cacheEnv struct {
	handlers sync.WaitGroup // requests the cache is still handling
	t        *testing.T
	c        *Cache
	srv      *httptest.Server
	clock    *fakeClock
	root     string
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeClock) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) advance(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

func newCache(t *testing.T, o Options) *cacheEnv {
	t.Helper()
	if o.Root == "" {
		o.Root = t.TempDir()
	}
	o.Logger = testlog.New(t, zerolog.DebugLevel)
	c, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	c.now = clock.now
	e := &cacheEnv{t: t, c: c, clock: clock, root: o.Root}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.handlers.Add(1)
		defer e.handlers.Done()
		c.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		e.srv.Close()
		c.Close()
	})
	return e
}

func (e *cacheEnv) do(method, path string, hdr ...string) *resp {
	e.t.Helper()
	return doReq(e.t, e.srv.Client(), method, e.srv.URL+path, nil, hdr...)
}

// settle waits until the cache has returned from every request (a
// client may have its whole answer before the handler returns).
func (e *cacheEnv) settle() { e.handlers.Wait() }

// stored reports whether the cache's store holds content d.
func (e *cacheEnv) stored(d digest.Digest) bool {
	_, err := e.c.store.StatBlob(context.Background(), d)
	return err == nil
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r *resp) errCode() string {
	var v struct {
		Errors []backend.Error `json:"errors"`
	}
	if json.Unmarshal(r.body, &v) != nil || len(v.Errors) == 0 {
		return ""
	}
	return v.Errors[0].Code
}

func doReq(t *testing.T, c *http.Client, method, url string, body []byte, hdr ...string) *resp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	if res.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
		t.Errorf("%s %s: no Docker-Distribution-Api-Version header", method, url)
	}
	return &resp{status: res.StatusCode, header: res.Header, body: b}
}

func expect(t *testing.T, r *resp, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if code != "" && r.errCode() != code {
		t.Fatalf("error code %q, want %q; body %s", r.errCode(), code, r.body)
	}
}

// acceptAllHdr is what docker, crane and skopeo send.
var acceptAllHdr = "Accept: " + acceptAll

// gatedBlob makes the upstream send blob d of repo in two halves, the
// second only once gate is closed; inFlight is closed when the first half
// is out. The last byte is flipped when corrupt.
func gatedBlob(up *upstreamEnv, repo string, d digest.Digest, layer []byte, corrupt bool) (gate, inFlight chan struct{}) {
	gate, inFlight = make(chan struct{}), make(chan struct{})
	var once sync.Once
	up.wrap = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "GET" || r.URL.Path != "/v2/"+repo+"/blobs/"+string(d) {
			up.direct(w, r)
			return
		}
		up.mu.Lock()
		up.counts["GET blob"]++
		up.mu.Unlock()
		body := append([]byte(nil), layer...)
		if corrupt {
			body[len(body)-1] ^= 0xff
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		once.Do(func() { close(inFlight) })
		<-gate
		_, _ = w.Write(body[len(body)/2:])
	})
	return gate, inFlight
}

// followDownload pulls blob d through ce with one leader and followers
// more clients (the first follower asks for bytes 100-199) while the
// upstream is held at gate (gatedBlob), and checks every answer against
// layer: byte-identical when the upstream is sound, never complete when
// it is corrupt. It returns how many clients got the whole blob.
func followDownload(t *testing.T, ce *cacheEnv, d digest.Digest, layer []byte, corrupt bool, gate, inFlight chan struct{}, followers int) (full int) {
	t.Helper()
	joined := make(chan string, 100)
	ce.c.blobJoined = func(k string) { joined <- k }
	type result struct {
		status int
		body   []byte
		err    error
	}
	results := make(chan result, followers+1)
	get := func(hdr ...string) {
		res, body, err := ce.get("/v2/team/app/blobs/"+string(d), hdr...)
		r := result{body: body, err: err}
		if res != nil {
			r.status = res.StatusCode
		}
		results <- r
	}
	go get()
	<-inFlight
	for i := 0; i < followers; i++ {
		if i == 0 {
			go get("Range: bytes=100-199")
		} else {
			go get()
		}
	}
	for i := 0; i < followers; i++ {
		<-joined
	}
	close(gate)
	for i := 0; i < followers+1; i++ {
		r := <-results
		switch {
		case corrupt && r.err == nil && r.status < 300 && (len(r.body) == len(layer) || len(r.body) == 100):
			t.Errorf("a client got a complete response from a corrupt download (%d bytes, status %d)", len(r.body), r.status)
		case !corrupt && (r.err != nil || (r.status != 200 && r.status != 206)):
			t.Errorf("status %d, err %v", r.status, r.err)
		case !corrupt && r.status == 200 && !bytes.Equal(r.body, layer):
			t.Errorf("full body differs (%d bytes)", len(r.body))
		case !corrupt && r.status == 206 && !bytes.Equal(r.body, layer[100:200]):
			t.Errorf("ranged body differs")
		case !corrupt && r.status == 200:
			full++
		}
	}
	return full
}
