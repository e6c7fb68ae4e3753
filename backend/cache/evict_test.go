package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage/layout"
	"github.com/wharf-dev/wharf/internal/conf"
)

const testMaxAge = 24 * time.Hour

// pull fetches an image through the cache the way a client does: the
// manifest by tag, then config and layers.
func (e *cacheEnv) pull(repo, tag string, im *image) {
	e.t.Helper()
	r := e.do("GET", "/v2/"+repo+"/manifests/"+tag, acceptAllHdr)
	expect(e.t, r, http.StatusOK, "")
	if !bytes.Equal(r.body, im.manifest) {
		e.t.Fatalf("%s:%s: manifest differs", repo, tag)
	}
	for d, want := range im.data {
		r := e.do("GET", "/v2/"+repo+"/blobs/"+string(d))
		expect(e.t, r, http.StatusOK, "")
		if !bytes.Equal(r.body, want) {
			e.t.Fatalf("%s: blob %s differs", repo, d)
		}
	}
}

// age sets the modification time of every file of the cache to age ago,
// as if nothing had been used since.
func (e *cacheEnv) age(age time.Duration) {
	e.t.Helper()
	past := time.Now().Add(-age)
	for _, dir := range []string{"blobs", "repositories"} {
		err := filepath.WalkDir(filepath.Join(e.root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			return os.Chtimes(p, past, past)
		})
		if err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *cacheEnv) blobFile(d digest.Digest) string {
	return filepath.Join(e.root, "blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded())
}

func (e *cacheEnv) recordFile(repo, key string) string {
	return filepath.Join(e.root, "repositories", filepath.FromSlash(repo), "_"+filepath.FromSlash(key))
}

// files lists every file below the cache's blobs and repositories.
func (e *cacheEnv) files() []string {
	e.t.Helper()
	var out []string
	for _, dir := range []string{"blobs", "repositories"} {
		filepath.WalkDir(filepath.Join(e.root, dir), func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				rel, _ := filepath.Rel(e.root, p)
				out = append(out, rel)
			}
			return nil
		})
	}
	sort.Strings(out)
	return out
}

func exists(t *testing.T, p string) bool {
	t.Helper()
	_, err := os.Stat(p)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return err == nil
}

func (e *cacheEnv) evict(o EvictOptions) (*EvictResult, []EvictItem) {
	e.t.Helper()
	if o.MaxAge == 0 {
		o.MaxAge = testMaxAge
	}
	var items []EvictItem
	o.Report = func(it EvictItem) { items = append(items, it) }
	res, err := Evict(context.Background(), e.c.store, o)
	if err != nil {
		e.t.Fatalf("evict: %v", err)
	}
	return res, items
}

// Two images are cached, sharing a layer; everything is two days old,
// then image B is pulled again. A run with max_age 24h removes image A
// whole (tag, manifest, links, config, own layer) and keeps B and the
// shared layer; a dry run before lists the same and removes nothing. A
// pull of A afterwards fetches it from the upstream again.
func TestEvictUnused(t *testing.T) {
	up := startUpstream(t)
	shared := randBytes(t, 5000)
	imA := up.pushImage("team/a", "v1", backend.MediaTypeOCIManifest, randBytes(t, 3000), shared)
	imB := up.pushImage("team/b", "v1", backend.MediaTypeDockerManifest, randBytes(t, 4000), shared)
	ce := newCache(t, Options{Upstream: up.srv.URL, MaxAge: testMaxAge})
	ce.pull("team/a", "v1", imA)
	ce.pull("team/b", "v1", imB)
	ce.age(48 * time.Hour)
	ce.pull("team/b", "v1", imB) // a hit: records its use

	sharedD := digest.FromBytes(shared)
	var goneA []digest.Digest // A's content that only A uses
	goneBytes := int64(len(imA.manifest))
	for d, data := range imA.data {
		if d != sharedD {
			goneA = append(goneA, d)
			goneBytes += int64(len(data))
		}
	}
	goneA = append(goneA, imA.digest)

	before := ce.files()
	res, items := ce.evict(EvictOptions{DryRun: true})
	if after := ce.files(); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("dry run removed files:\nbefore %v\nafter  %v", before, after)
	}
	want := EvictResult{Tags: 1, Manifests: 1, Links: 3, Blobs: 3, Bytes: goneBytes, KeptBlobs: 4}
	want.KeptBytes = int64(len(imB.manifest))
	for _, data := range imB.data {
		want.KeptBytes += int64(len(data))
	}
	want.Total = want.Bytes + want.KeptBytes
	if res.Cutoff.IsZero() {
		t.Fatal("no cutoff reported")
	}
	res.Cutoff = time.Time{}
	if *res != want {
		t.Fatalf("dry run: %+v, want %+v", *res, want)
	}
	dry := describe(items)

	res, items = ce.evict(EvictOptions{})
	res.Cutoff = time.Time{}
	if *res != want {
		t.Fatalf("run: %+v, want %+v", *res, want)
	}
	if got := describe(items); got != dry {
		t.Fatalf("the run removed\n%s\nthe dry run listed\n%s", got, dry)
	}
	for _, it := range items {
		if it.Repo == "team/b" || it.Kind == EvictBlob && it.Digest == sharedD || it.LastUse.After(time.Now().Add(-testMaxAge)) {
			t.Fatalf("evicted %+v", it)
		}
	}
	for _, d := range goneA {
		if exists(t, ce.blobFile(d)) {
			t.Errorf("blob %s of A is still there", d)
		}
	}
	for _, key := range []string{layout.Tag("v1"), layout.Manifest(imA.digest), layout.BlobLink(sharedD), layout.BlobLink(imA.config)} {
		if exists(t, ce.recordFile("team/a", key)) {
			t.Errorf("record %s of A is still there", key)
		}
	}
	for d := range imB.data {
		if !exists(t, ce.blobFile(d)) || !exists(t, ce.recordFile("team/b", layout.BlobLink(d))) {
			t.Errorf("blob %s of B (or its link) is gone", d)
		}
	}
	for _, key := range []string{layout.Tag("v1"), layout.Manifest(imB.digest)} {
		if !exists(t, ce.recordFile("team/b", key)) {
			t.Errorf("record %s of B is gone", key)
		}
	}

	// B is served from the cache alone; A comes from the upstream again.
	up.down.Store(http.StatusServiceUnavailable)
	ce.pull("team/b", "v1", imB)
	r := ce.do("GET", "/v2/team/a/manifests/v1", acceptAllHdr)
	expect(t, r, http.StatusBadGateway, "")
	up.down.Store(0)
	up.resetCounts()
	ce.pull("team/a", "v1", imA)
	if up.count("GET manifest") != 1 || up.count("GET blob") != len(goneA)-1 {
		t.Fatalf("pull of A after eviction: upstream saw %v", up.counts)
	}
	if !exists(t, ce.blobFile(imA.config)) {
		t.Fatal("A's config was not cached again")
	}

	// Nothing is old now: a second run removes nothing.
	res, _ = ce.evict(EvictOptions{})
	if res.Tags+res.Manifests+res.Links+res.Blobs != 0 {
		t.Fatalf("second run removed %+v", *res)
	}
}

func describe(items []EvictItem) string {
	var lines []string
	for _, it := range items {
		lines = append(lines, string(it.Kind)+" "+it.Repo+" "+it.Tag+" "+string(it.Digest))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// A manifest in use keeps its image whole: layers the clients already
// have (only the manifest was pulled again) stay with their links, and a
// tag in use keeps the manifest it names even when that was not read.
func TestEvictKeepsWhatKeptManifestsUse(t *testing.T) {
	up := startUpstream(t)
	im := up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, randBytes(t, 3000), randBytes(t, 3000))
	ce := newCache(t, Options{Upstream: up.srv.URL, MaxAge: testMaxAge})
	ce.pull("team/app", "v1", im)

	t.Run("manifest pulled", func(t *testing.T) {
		ce.age(48 * time.Hour)
		r := ce.do("GET", "/v2/team/app/manifests/"+string(im.digest), acceptAllHdr)
		expect(t, r, http.StatusOK, "")
		res, items := ce.evict(EvictOptions{})
		// only the tag was unused
		if res.Tags != 1 || res.Manifests+res.Links+res.Blobs != 0 || len(items) != 1 || items[0].Tag != "v1" {
			t.Fatalf("evicted %+v: %v", *res, describe(items))
		}
		up.down.Store(http.StatusServiceUnavailable)
		defer up.down.Store(0)
		for d := range im.data {
			expect(t, ce.do("GET", "/v2/team/app/blobs/"+string(d)), http.StatusOK, "")
		}
	})
	t.Run("tag used", func(t *testing.T) {
		ce.pull("team/app", "v1", im)
		ce.age(48 * time.Hour)
		now := time.Now()
		if err := os.Chtimes(ce.recordFile("team/app", layout.Tag("v1")), now, now); err != nil {
			t.Fatal(err)
		}
		res, items := ce.evict(EvictOptions{})
		if res.Tags+res.Manifests+res.Links+res.Blobs != 0 {
			t.Fatalf("evicted %+v: %v", *res, describe(items))
		}
	})
}

// A pull between the listing and the removals (the race with a serving
// cache) keeps the image: its manifest is found in use at removal time
// and what it uses is kept, so it is served again with the upstream down.
func TestEvictRacingPull(t *testing.T) {
	up := startUpstream(t)
	im := up.pushImage("team/app", "v1", backend.MediaTypeDockerManifest, randBytes(t, 3000), randBytes(t, 9000))
	other := up.pushImage("team/other", "v1", backend.MediaTypeDockerManifest, randBytes(t, 3000))
	ce := newCache(t, Options{Upstream: up.srv.URL, MaxAge: testMaxAge})
	ce.pull("team/app", "v1", im)
	ce.pull("team/other", "v1", other)
	ce.age(48 * time.Hour)

	res, items := ce.evict(EvictOptions{beforeSweep: func() {
		// only the manifest: the layers stay because it uses them
		expect(t, ce.do("GET", "/v2/team/app/manifests/v1", acceptAllHdr), http.StatusOK, "")
	}})
	for _, it := range items {
		if it.Repo == "team/app" || im.data[it.Digest] != nil || it.Digest == im.digest {
			t.Fatalf("evicted %+v of the image pulled during the run", it)
		}
	}
	if res.Manifests != 1 || res.Blobs != 3 {
		t.Fatalf("team/other not evicted: %+v", *res)
	}
	up.down.Store(http.StatusServiceUnavailable)
	ce.pull("team/app", "v1", im)
}

// A blob that is open when it is evicted is still read to the end; the
// next request finds it gone and fetches it again.
func TestEvictOpenBlob(t *testing.T) {
	up := startUpstream(t)
	layer := randBytes(t, 1<<20)
	im := up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, layer)
	ce := newCache(t, Options{Upstream: up.srv.URL, MaxAge: testMaxAge})
	ce.pull("team/app", "v1", im)
	ce.age(48 * time.Hour)
	d := digest.FromBytes(layer)
	b, err := ce.c.store.OpenBlob(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if res, _ := ce.evict(EvictOptions{}); res.Blobs != 3 {
		t.Fatalf("evicted %+v", *res)
	}
	if exists(t, ce.blobFile(d)) {
		t.Fatal("layer not evicted")
	}
	got, err := io.ReadAll(b)
	if err != nil || !bytes.Equal(got, layer) {
		t.Fatalf("read %d bytes of the open, evicted blob (%v); want the whole layer", len(got), err)
	}
	up.resetCounts()
	r := ce.do("GET", "/v2/team/app/blobs/"+string(d))
	expect(t, r, http.StatusOK, "")
	if !bytes.Equal(r.body, layer) || up.count("GET blob") != 1 {
		t.Fatalf("evicted layer: %d bytes, upstream %v", len(r.body), up.counts)
	}
}

// A use writes the last-use time only when it is older than the touch
// interval; fresh times are left alone (no write per pull of a hot blob).
func TestLastUseTouch(t *testing.T) {
	up := startUpstream(t)
	layer := randBytes(t, 2000)
	im := up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, layer)
	ce := newCache(t, Options{Upstream: up.srv.URL, MaxAge: 12 * time.Hour}) // touch every 30m
	if ce.c.touchEvery != 30*time.Minute {
		t.Fatalf("touch interval %v, want max_age/24", ce.c.touchEvery)
	}
	ce.pull("team/app", "v1", im)
	d := digest.FromBytes(layer)
	files := []string{
		ce.blobFile(d), ce.recordFile("team/app", layout.BlobLink(d)),
		ce.blobFile(im.digest), ce.recordFile("team/app", layout.Manifest(im.digest)),
		ce.recordFile("team/app", layout.Tag("v1")),
	}
	set := func(age time.Duration) time.Time {
		at := time.Now().Add(-age).Truncate(time.Second)
		for _, f := range files {
			if err := os.Chtimes(f, at, at); err != nil {
				t.Fatal(err)
			}
		}
		return at
	}
	mtimes := func() []time.Time {
		var out []time.Time
		for _, f := range files {
			fi, err := os.Stat(f)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, fi.ModTime())
		}
		return out
	}

	at := set(10 * time.Minute) // younger than the interval: not written
	ce.pull("team/app", "v1", im)
	for i, m := range mtimes() {
		if !m.Equal(at) {
			t.Errorf("%s: time changed to %v by a use within the interval", files[i], m)
		}
	}
	set(time.Hour) // older: written
	start := time.Now().Add(-time.Second)
	ce.pull("team/app", "v1", im)
	for i, m := range mtimes() {
		if m.Before(start) {
			t.Errorf("%s: last use %v not recorded", files[i], m)
		}
	}
}

func TestTouchInterval(t *testing.T) {
	for _, tt := range []struct {
		maxAge  time.Duration
		maxSize bool
		want    time.Duration
	}{
		{0, false, time.Hour},
		{720 * time.Hour, false, time.Hour},
		{24 * time.Hour, false, time.Hour},
		{12 * time.Hour, false, 30 * time.Minute},
		{time.Hour, false, 150 * time.Second},
		{0, true, time.Minute},
		{720 * time.Hour, true, time.Minute},
		{10 * time.Minute, true, 25 * time.Second},
	} {
		if got := touchInterval(tt.maxAge, tt.maxSize); got != tt.want {
			t.Errorf("touchInterval(%v, %v) = %v, want %v", tt.maxAge, tt.maxSize, got, tt.want)
		}
	}
	if _, err := Evict(context.Background(), nil, EvictOptions{}); err == nil {
		t.Error("Evict without max_age: no error")
	}
	var d conf.Duration
	if err := d.UnmarshalText([]byte("-1h")); err == nil {
		t.Error("max_age = \"-1h\" decodes without error")
	}
}

// An interrupted run (wharf gc got SIGINT) stops with the context's error
// and removes nothing it had not removed yet.
func TestEvictCancelled(t *testing.T) {
	up := startUpstream(t)
	im := up.pushImage("team/app", "v1", backend.MediaTypeOCIManifest, randBytes(t, 3000))
	ce := newCache(t, Options{Upstream: up.srv.URL, MaxAge: testMaxAge})
	ce.pull("team/app", "v1", im)
	ce.age(48 * time.Hour)
	before := ce.files()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Evict(ctx, ce.c.store, EvictOptions{MaxAge: testMaxAge}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: %v, want context.Canceled", err)
	}
	if after := ce.files(); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("cancelled run removed files:\nbefore %v\nafter  %v", before, after)
	}
}
