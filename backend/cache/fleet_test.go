package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage/layout"
	"github.com/wharf-dev/wharf/internal/conf"
)

// One mirror host, two upstreams with the same repository name: ns
// (containerd) and the registry prefix (podman's mirror location) choose
// the upstream, records stay apart, an unconfigured ns is a 404 naming the
// configured ones, and the second upstream gets its own credentials.
func TestNamespaces(t *testing.T) {
	hub := startUpstream(t)
	ghcr := startUpstream(t)
	ts := &tokenServer{up: ghcr, user: "gh", pass: "pat", basic: true, tokens: map[string]string{}}
	ghcr.wrap = ts
	shared := randBytes(t, 5000) // the same layer on both: stored once
	imHub := hub.pushImage("library/alpine", "3", backend.MediaTypeOCIManifest, shared, randBytes(t, 900))
	imGh := ghcr.pushImage("library/alpine", "3", backend.MediaTypeOCIManifest, shared, randBytes(t, 800))
	onlyHub := hub.pushBlob("library/alpine", randBytes(t, 300))

	ce := newCache(t, Options{
		Upstream: hub.srv.URL,
		Upstreams: map[string]Upstream{
			"docker.io": {URL: hub.srv.URL},
			"ghcr.io":   {URL: ghcr.srv.URL, Username: "gh", Password: "pat"},
		},
	})
	get := func(path string, want *image) {
		t.Helper()
		r := ce.do("GET", path, acceptAllHdr)
		expect(t, r, http.StatusOK, "")
		if !bytes.Equal(r.body, want.manifest) {
			t.Fatalf("%s: wrong manifest (other upstream's?)", path)
		}
	}
	get("/v2/library/alpine/manifests/3?ns=docker.io", imHub)
	get("/v2/library/alpine/manifests/3?ns=ghcr.io", imGh)
	get("/v2/library/alpine/manifests/3?ns=GHCR.IO", imGh)
	get("/v2/library/alpine/manifests/3", imHub) // no ns: the default upstream
	if hub.count("GET manifest") != 2 || ghcr.count("GET manifest") != 1 {
		t.Fatalf("upstream GETs: hub %v, ghcr %v", hub.counts, ghcr.counts)
	}
	// podman's form names the same records as ns: no new upstream GET
	get("/v2/ghcr.io/library/alpine/manifests/3", imGh)
	get("/v2/docker.io/library/alpine/manifests/3", imHub)
	if hub.count("GET manifest") != 2 || ghcr.count("GET manifest") != 1 {
		t.Fatalf("prefix form went upstream again: hub %v, ghcr %v", hub.counts, ghcr.counts)
	}
	for d, data := range imGh.data {
		r := ce.do("GET", "/v2/library/alpine/blobs/"+string(d)+"?ns=ghcr.io")
		expect(t, r, http.StatusOK, "")
		if !bytes.Equal(r.body, data) {
			t.Fatalf("blob %s differs", d)
		}
	}
	// The shared layer is content: a second registry's repository may
	// serve it only after its upstream confirmed it (HEAD, no GET).
	sharedD := digest.FromBytes(shared)
	hub.resetCounts()
	r := ce.do("GET", "/v2/library/alpine/blobs/"+string(sharedD)+"?ns=docker.io")
	expect(t, r, http.StatusOK, "")
	if hub.count("GET blob") != 0 || hub.count("HEAD blob") != 1 {
		t.Fatalf("shared layer: hub saw %v, want one HEAD", hub.counts)
	}
	// A digest only docker.io has is unknown through ghcr.io.
	expect(t, ce.do("GET", "/v2/library/alpine/blobs/"+string(onlyHub)+"?ns=ghcr.io"), http.StatusNotFound, backend.CodeBlobUnknown)
	if ts.requests.Load() != 0 {
		t.Fatal("basic upstream got token requests")
	}

	// Not an open proxy.
	for _, path := range []string{"/v2/library/alpine/manifests/3?ns=quay.io", "/v2/?ns=evil.example", "/v2/library/alpine/blobs/" + string(sharedD) + "?ns=quay.io"} {
		r := ce.do("GET", path, acceptAllHdr)
		expect(t, r, http.StatusNotFound, backend.CodeNameUnknown)
		if !strings.Contains(string(r.body), "docker.io, ghcr.io") {
			t.Fatalf("%s: message does not name the configured registries: %s", path, r.body)
		}
	}

	r = ce.do("GET", "/v2/_catalog")
	expect(t, r, http.StatusOK, "")
	var cat struct{ Repositories []string }
	if err := json.Unmarshal(r.body, &cat); err != nil {
		t.Fatal(err)
	}
	want := []string{"docker.io/library/alpine", "ghcr.io/library/alpine", "library/alpine"}
	if !slices.Equal(cat.Repositories, want) {
		t.Fatalf("catalog %v, want %v", cat.Repositories, want)
	}
	// two manifests, ghcr's config and layers, the shared layer once
	if n := countFiles(t, filepath.Join(ce.root, "blobs")); n != 2+len(imGh.data) {
		t.Fatalf("%d blob files: the shared layer is not stored once", n)
	}
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Without a default upstream, a name that names no registry is a 404;
// the registry's own prefix works. A single-upstream site ignores ns, as
// it always did.
func TestNamespaceDefaults(t *testing.T) {
	up := startUpstream(t)
	im := up.pushImage("owner/app", "v1", backend.MediaTypeOCIManifest, randBytes(t, 100))

	only := newCache(t, Options{Upstreams: map[string]Upstream{"ghcr.io": {URL: up.srv.URL}}})
	r := only.do("GET", "/v2/owner/app/manifests/v1", acceptAllHdr)
	expect(t, r, http.StatusNotFound, backend.CodeNameUnknown)
	if !strings.Contains(string(r.body), "ghcr.io") {
		t.Fatalf("message does not name ghcr.io: %s", r.body)
	}
	expect(t, only.do("GET", "/v2/ghcr.io/owner/app/manifests/v1", acceptAllHdr), http.StatusOK, "")
	expect(t, only.do("GET", "/v2/owner/app/manifests/v1?ns=ghcr.io", acceptAllHdr), http.StatusOK, "")

	single := newCache(t, Options{Upstream: up.srv.URL})
	r = single.do("GET", "/v2/owner/app/manifests/v1?ns=registry.example.com", acceptAllHdr)
	expect(t, r, http.StatusOK, "")
	if !bytes.Equal(r.body, im.manifest) {
		t.Fatal("wrong manifest")
	}
}

// The gateway resolves the route before the policy (backend.RouteResolver):
// the name it sees is qualified, the path's name is kept for links.
func TestResolveRoute(t *testing.T) {
	c, err := New(context.Background(), Options{Root: t.TempDir(), Upstream: "http://127.0.0.1:1",
		Upstreams: map[string]Upstream{"docker.io": {URL: "https://registry-1.docker.io"}, "localhost:5000": {URL: "http://127.0.0.1:5000"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tt := range []struct {
		path, ns, repo string
		status         int
	}{
		{"/v2/library/alpine/manifests/3", "", "library/alpine", 0},
		{"/v2/library/alpine/manifests/3", "docker.io", "docker.io/library/alpine", 0},
		{"/v2/app/blobs/sha256:" + strings.Repeat("a", 64), "localhost:5000", "localhost-5000/app", 0},
		{"/v2/", "docker.io", "", 0},
		{"/v2/app/tags/list", "quay.io", "", http.StatusNotFound},
		{"/v2/app/tags/list", "docker.io/../x", "", http.StatusNotFound},
	} {
		rt, e := backend.ParseRoute("GET", tt.path, nil)
		if e != nil {
			t.Fatal(e)
		}
		be := c.ResolveRoute(rt, func(k string) string {
			if k == "ns" {
				return tt.ns
			}
			return ""
		})
		switch {
		case tt.status != 0:
			if be == nil || be.Status != tt.status {
				t.Errorf("%s ns=%s: %v, want %d", tt.path, tt.ns, be, tt.status)
			}
		case be != nil:
			t.Errorf("%s ns=%s: %v", tt.path, tt.ns, be)
		case rt.Repo != tt.repo:
			t.Errorf("%s ns=%s: repo %q, want %q", tt.path, tt.ns, rt.Repo, tt.repo)
		}
	}
	u, name, err := c.upstreamFor("docker.io/alpine")
	if err != nil || u.base.Host != "registry-1.docker.io" || name != "library/alpine" {
		t.Fatalf("docker.io/alpine -> %v %q %v", u, name, err)
	}
}

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Size
		bad  bool
	}{
		{"", 0, false},
		{"200GiB", 200 << 30, false},
		{"200gib", 200 << 30, false},
		{"1.5 TiB", 3 << 39, false},
		{"500MB", 500e6, false},
		{"64KiB", 64 << 10, false},
		{"1KB", 1000, false},
		{"4096", 4096, false},
		{"10B", 10, false},
		{"-1GiB", 0, true},
		{"GiB", 0, true},
		{"lots", 0, true},
		{"1e3MB", 0, true},
		{"0x10MB", 0, true},
		{"99999999TiB", 0, true},
	} {
		got, err := ParseSize(tt.in)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, bad=%v", tt.in, got, err, tt.want, tt.bad)
		}
	}
	if s := Size(200 << 30).String(); s != "200GiB" {
		t.Errorf("String %s", s)
	}
}

func TestValidateUpstreams(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		def   string
		ups   map[string]string
		creds map[string]Credential
		want  []string // keys with problems
	}{
		{"default only", "https://registry-1.docker.io", nil, nil, nil},
		{"table only", "", map[string]string{"ghcr.io": "https://ghcr.io"}, nil, nil},
		{"nothing", "", nil, nil, []string{"upstream"}},
		{"bad names", "", map[string]string{"GHCR.io": "https://ghcr.io", "nodot": "https://x.io", "a.io:99999": "https://x.io", "quay.io": "ftp://quay.io"},
			nil, []string{"upstreams.GHCR.io", "upstreams.a.io:99999", "upstreams.nodot", "upstreams.quay.io"}},
		{"port", "", map[string]string{"localhost:5000": "http://127.0.0.1:5000"}, nil, nil},
		{"creds", "", map[string]string{"ghcr.io": "https://ghcr.io", "quay.io": "https://quay.io", "a.io": "https://a.io"},
			map[string]Credential{
				"ghcr.io":  {Username: "me", PasswordFile: pw},
				"quay.io":  {Username: "me"},
				"a.io":     {Username: "me", Password: "x", PasswordFile: pw},
				"other.io": {Username: "me", Password: "x"},
			}, []string{"credentials.a.io", "credentials.other.io", "credentials.quay.io"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			probs := ValidateUpstreams(tt.def, tt.ups, tt.creds)
			got := sortedKeys(probs)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("problems %v, want %v", probs, tt.want)
			}
		})
	}
	s, err := Credential{Username: "me", PasswordFile: pw}.Secret(conf.Env{})
	if err != nil || s != "s3cret" {
		t.Fatalf("Secret = %q, %v", s, err)
	}
}

// setAge gives every file of an image (records and content) the same
// last use.
func (e *cacheEnv) setAge(repo, tag string, im *image, ago time.Duration) {
	e.t.Helper()
	when := time.Now().Add(-ago)
	files := []string{e.recordFile(repo, layout.Tag(tag)), e.recordFile(repo, layout.Manifest(im.digest)), e.blobFile(im.digest)}
	for d := range im.data {
		files = append(files, e.blobFile(d), e.recordFile(repo, layout.BlobLink(d)))
	}
	for _, f := range files {
		if err := os.Chtimes(f, when, when); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *cacheEnv) storedBytes() int64 {
	e.t.Helper()
	var n int64
	err := filepath.WalkDir(filepath.Join(e.root, "blobs"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// max_size evicts least recently used images whole until the rest fits,
// and keeps what is in use even when it is old.
func TestEvictMaxSize(t *testing.T) {
	up := startUpstream(t)
	ce := newCache(t, Options{Upstream: up.srv.URL})
	var ims []*image
	var per int64
	for i := 0; i < 5; i++ {
		repo := "app" + string(rune('a'+i))
		im := up.pushImage(repo, "v1", backend.MediaTypeOCIManifest, randBytes(t, 20000), randBytes(t, 10000))
		ce.pull(repo, "v1", im)
		ims = append(ims, im)
		per = int64(len(im.manifest))
		for _, data := range im.data {
			per += int64(len(data))
		}
	}
	// app a is the oldest ... app e the newest; a is in use right now.
	for i, im := range ims {
		ce.setAge("app"+string(rune('a'+i)), "v1", im, time.Duration(10-i)*time.Hour)
	}
	inUse := func(d digest.Digest) bool { return d == ims[0].digest }
	total := ce.storedBytes()
	budget := 3*per + per/2 // a (in use) and the two newest fit
	if _, err := Evict(context.Background(), ce.c.store, EvictOptions{MaxAge: -time.Hour, MaxSize: budget}); err == nil {
		t.Fatal("negative max_age accepted")
	}
	var got []EvictItem
	res, err := Evict(context.Background(), ce.c.store, EvictOptions{MaxSize: budget, InUse: inUse, Report: func(it EvictItem) { got = append(got, it) }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Total != total || res.Blobs != 2*4 || res.KeptBytes > budget {
		t.Fatalf("result %+v (total on disk %d, budget %d)", res, total, budget)
	}
	for i, im := range ims {
		gone := i == 1 || i == 2
		for d := range im.data {
			if ce.stored(d) == gone {
				t.Fatalf("image %d: blob %s stored=%v", i, d, !gone)
			}
		}
		if ce.stored(im.digest) == gone {
			t.Fatalf("image %d manifest stored=%v", i, !gone)
		}
	}
	for _, it := range got {
		if it.Repo != "" && it.Repo != "appb" && it.Repo != "appc" {
			t.Fatalf("evicted %+v", it)
		}
	}
}

// ce.evict insists on a max_age; this is its max_size twin.
func (e *cacheEnv) evictSize(max int64) *EvictResult {
	e.t.Helper()
	res, err := Evict(context.Background(), e.c.store, EvictOptions{MaxSize: max})
	if err != nil {
		e.t.Fatal(err)
	}
	return res
}

// The serving process holds max_size while images are pulled one after
// the other, and an image whose pull has begun is not evicted under it:
// its layers come from the cache, not from the upstream again.
func TestBudgetHeld(t *testing.T) {
	up := startUpstream(t)
	const n = 12
	var ims []*image
	for i := 0; i < n; i++ {
		ims = append(ims, up.pushImage("team/app", "v"+itoa(i), backend.MediaTypeOCIManifest, randBytes(t, 30000), randBytes(t, 2000)))
	}
	reg := prometheus.NewRegistry()
	const max = 100_000 // about three images
	ce := newCache(t, Options{Upstream: up.srv.URL, MaxSize: max, Metrics: NewMetrics(reg), Site: "mirror.test"})
	b := ce.c.budget
	ctx := context.Background()

	// Image 0 is cached, long unused; its pull begins (manifest) ...
	ce.pull("team/app", "v0", ims[0])
	ce.setAge("team/app", "v0", ims[0], 48*time.Hour)
	expect(t, ce.do("GET", "/v2/team/app/manifests/v0", acceptAllHdr), http.StatusOK, "")
	// ... while the others are pulled and the budget enforced.
	for i := 1; i < n; i++ {
		ce.pull("team/app", "v"+itoa(i), ims[i])
		ce.settle()
		b.check(ctx)
		if s := ce.storedBytes(); s > max {
			t.Fatalf("after pull %d: %d bytes stored, max_size %d", i, s, max)
		}
	}
	if b.runs.Load() == 0 {
		t.Fatal("budget never ran")
	}
	// Image 0's pull goes on: its layers are still cached.
	up.resetCounts()
	for d, data := range ims[0].data {
		r := ce.do("GET", "/v2/team/app/blobs/"+string(d))
		expect(t, r, http.StatusOK, "")
		if !bytes.Equal(r.body, data) {
			t.Fatal("wrong blob")
		}
	}
	if up.count("GET blob") != 0 {
		t.Fatalf("the image being pulled was evicted: upstream saw %v", up.counts)
	}
	// The most recent image is whole; early ones went.
	if !ce.stored(ims[n-1].digest) || ce.stored(ims[1].digest) {
		t.Fatal("eviction order is not least recently used first")
	}
	if got := toFloat(t, ce.c.metrics.m.evictions.WithLabelValues("mirror.test")); got == 0 {
		t.Fatal("no evictions counted")
	}
	if got := toFloat(t, ce.c.metrics.m.maxSize.WithLabelValues("mirror.test")); got != max {
		t.Fatalf("max_size gauge %v", got)
	}
	if got := toFloat(t, ce.c.metrics.m.size.WithLabelValues("mirror.test")); got > max || got <= 0 {
		t.Fatalf("size gauge %v", got)
	}
	// wharf gc's dry run over the same store finds nothing more to do.
	if res := ce.evictSize(max); res.Blobs != 0 {
		t.Fatalf("a run after the budget held still evicts: %+v", res)
	}
}

// Hits, misses, stale answers, bytes and upstream errors are counted per
// upstream.
func TestMetrics(t *testing.T) {
	hub, gh := startUpstream(t), startUpstream(t)
	imHub := hub.pushImage("library/alpine", "3", backend.MediaTypeOCIManifest, randBytes(t, 70000))
	imGh := gh.pushImage("owner/app", "1", backend.MediaTypeOCIManifest, randBytes(t, 1000))
	m := NewMetrics(prometheus.NewRegistry())
	ce := newCache(t, Options{Upstream: hub.srv.URL, Upstreams: map[string]Upstream{"ghcr.io": {URL: gh.srv.URL}}, Metrics: m, Site: "mirror.test"})
	ce.pull("library/alpine", "3", imHub) // misses
	ce.pull("library/alpine", "3", imHub) // hits
	ce.pull("ghcr.io/owner/app", "1", imGh)
	ce.settle()
	val := func(c prometheus.Metric) float64 { return toFloat(t, c) }
	req := func(up, kind, result string) float64 {
		return val(m.requests.WithLabelValues("mirror.test", up, kind, result))
	}
	if req("default", "manifest", "miss") != 1 || req("default", "manifest", "hit") != 1 ||
		req("default", "blob", "miss") != 2 || req("default", "blob", "hit") != 2 || req("ghcr.io", "blob", "miss") != 2 {
		t.Fatalf("requests:\n%s", dump(t, m.requests))
	}
	if got := val(m.upBytes.WithLabelValues("mirror.test", "default")); got < 70000 {
		t.Fatalf("upstream bytes %v", got)
	}
	if got := val(m.servedBytes.WithLabelValues("mirror.test", "default")); got < 140000 {
		t.Fatalf("served bytes %v", got)
	}
	// Upstream down: a stale answer for the tag, a 503 counted.
	ce.clock.advance(DefaultTTL + time.Hour)
	hub.down.Store(http.StatusServiceUnavailable)
	r := ce.do("GET", "/v2/library/alpine/manifests/3", acceptAllHdr)
	expect(t, r, http.StatusOK, "")
	ce.settle()
	if req("default", "manifest", "stale") != 1 || val(m.upErrors.WithLabelValues("mirror.test", "default", "503", "status")) != 1 {
		t.Fatalf("stale/errors:\n%s\n%s", dump(t, m.requests), dump(t, m.upErrors))
	}
	// Wrong bytes: a digest error.
	hub.down.Store(0)
	hub.corrupt.Store(true)
	other := hub.pushImage("library/busybox", "1", backend.MediaTypeOCIManifest, randBytes(t, 100))
	expect(t, ce.do("GET", "/v2/library/busybox/manifests/"+string(other.digest), acceptAllHdr), http.StatusBadGateway, "")
	if val(m.upErrors.WithLabelValues("mirror.test", "default", "", "digest")) != 1 {
		t.Fatalf("digest errors:\n%s", dump(t, m.upErrors))
	}
	// Nobody listening: refused.
	dead := newCache(t, Options{Upstream: "http://127.0.0.1:1", Metrics: m, Site: "dead.test"})
	expect(t, dead.do("GET", "/v2/x/manifests/1", acceptAllHdr), http.StatusBadGateway, "")
	if val(m.upErrors.WithLabelValues("dead.test", "default", "", "refused")) != 1 {
		t.Fatalf("refused:\n%s", dump(t, m.upErrors))
	}
}

func dump(t *testing.T, c prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			b.WriteString(m.String() + "\n")
		}
	}
	return b.String()
}

// toFloat reads one counter or gauge.
func toFloat(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var pb dto.Metric
	if err := m.Write(&pb); err != nil {
		t.Fatal(err)
	}
	switch {
	case pb.Counter != nil:
		return pb.Counter.GetValue()
	case pb.Gauge != nil:
		return pb.Gauge.GetValue()
	}
	t.Fatalf("not a counter or gauge: %v", m.Desc())
	return 0
}
