package gc

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage/localfs"
)

// TestUntagged: a manifest whose tag moved on stays (with its blobs) in a
// default run and goes, with the blobs only it used, with DeleteUntagged.
func TestUntagged(t *testing.T) {
	e := newEnv(t)
	old := e.image("app", nil, "shared", "only-old")
	oldD := e.put("app", "v1", old)
	cur := e.image("app", nil, "shared", "only-new")
	curD := e.put("app", "v1", cur) // v1 moves on: old is untagged
	e.age()
	onlyOld := digest.FromString("only-old")
	shared := digest.FromString("shared")

	r := e.gc(Options{})
	if r.res.Manifests != 0 || r.res.Blobs != 0 {
		t.Fatalf("default run removed %v, want nothing", r.items)
	}
	if e.status("GET", "/v2/app/manifests/"+string(oldD)) != http.StatusOK {
		t.Fatal("untagged manifest gone after a default run")
	}

	r = e.gc(Options{DeleteUntagged: true})
	if !r.has(KindManifest, "app", oldD) || !r.has(KindBlob, "", oldD) || !r.has(KindBlob, "", onlyOld) {
		t.Errorf("DeleteUntagged removed %v; want manifest %s, its blob and layer %s", r.items, oldD, onlyOld)
	}
	if r.res.Manifests != 1 || r.res.Blobs != 3 { // manifest, its config, its own layer
		t.Errorf("DeleteUntagged: %d manifests, %d blobs removed, want 1 and 3: %v", r.res.Manifests, r.res.Blobs, r.items)
	}
	if r.has(KindBlob, "", shared) || r.has(KindBlob, "", curD) || !e.hasBlobFile(shared) {
		t.Errorf("DeleteUntagged removed what the tagged manifest uses: %v", r.items)
	}
	if got := e.status("GET", "/v2/app/manifests/"+string(oldD)); got != http.StatusNotFound {
		t.Errorf("GET removed manifest: %d, want 404", got)
	}
	if got := e.status("HEAD", "/v2/app/blobs/"+string(onlyOld)); got != http.StatusNotFound {
		t.Errorf("HEAD removed layer: %d, want 404", got)
	}
	if !r.has(KindLink, "app", onlyOld) {
		t.Errorf("the repository's link to the removed layer stayed: %v", r.items)
	}
	if n := e.pullsCompletely(); n != 1 {
		t.Errorf("%d manifests left, want 1", n)
	}
	// a second run finds nothing more
	if r := e.gc(Options{DeleteUntagged: true}); len(r.items) != 0 {
		t.Errorf("second run removed %v", r.items)
	}
}

// TestSharedLayer: two repositories use one layer; deleting one image
// through the API and collecting keeps the layer for the other.
func TestSharedLayer(t *testing.T) {
	e := newEnv(t)
	aD := e.put("a", "v1", e.image("a", nil, "shared", "a-only"))
	bD := e.put("b", "v1", e.image("b", nil, "shared", "b-only"))
	e.must(e.do("DELETE", "/v2/a/manifests/"+string(aD), nil), http.StatusAccepted, "delete a's manifest")
	e.age()

	r := e.gc(Options{})
	shared, aOnly := digest.FromString("shared"), digest.FromString("a-only")
	if !r.has(KindBlob, "", aD) || !r.has(KindBlob, "", aOnly) || r.res.Blobs != 3 {
		t.Errorf("removed %v; want a's manifest, config and own layer (3 blobs)", r.items)
	}
	if r.has(KindBlob, "", shared) || r.has(KindBlob, "", bD) {
		t.Errorf("removed what b uses: %v", r.items)
	}
	if got := e.status("HEAD", "/v2/a/blobs/"+string(shared)); got != http.StatusOK {
		t.Errorf("a's link to the kept shared layer: HEAD %d, want 200", got)
	}
	if got := e.status("HEAD", "/v2/a/blobs/"+string(aOnly)); got != http.StatusNotFound {
		t.Errorf("HEAD a's removed layer: %d, want 404", got)
	}
	if n := e.pullsCompletely(); n != 1 {
		t.Errorf("%d manifests left, want 1 (b)", n)
	}
}

// TestGrace: unreferenced blobs go only once older than the grace period.
func TestGrace(t *testing.T) {
	e := newEnv(t)
	old := e.pushBlob("r", []byte("old and unreferenced"))
	e.age()
	young := e.pushBlob("r", []byte("young and unreferenced"))

	r := e.gc(Options{})
	if !r.has(KindBlob, "", old) || r.has(KindBlob, "", young) || r.res.Blobs != 1 {
		t.Errorf("removed %v; want only %s", r.items, old)
	}
	if !e.hasBlobFile(young) || e.hasBlobFile(old) {
		t.Error("files on disk do not match what gc reported")
	}
	if got := e.status("HEAD", "/v2/r/blobs/"+string(young)); got != http.StatusOK {
		t.Errorf("HEAD young blob: %d", got)
	}
	// a negative grace collects it too
	if r := e.gc(Options{Grace: -1}); !r.has(KindBlob, "", young) {
		t.Errorf("without grace: removed %v, want %s", r.items, young)
	}
}

// TestYoungUntaggedManifest: a manifest pushed by digest moments ago (as
// clients push the children of an index before the index) stays with
// DeleteUntagged, and so do its blobs.
func TestYoungUntaggedManifest(t *testing.T) {
	e := newEnv(t)
	body := e.image("r", nil, "l")
	e.age()
	d := e.put("r", string(digest.FromBytes(body)), body)
	r := e.gc(Options{DeleteUntagged: true})
	if len(r.items) != 0 {
		t.Errorf("removed %v; a young manifest and its (refreshed) blobs must stay", r.items)
	}
	e.pullManifest("r", d)
}

// TestIndex: an index keeps its (untagged) children and their blobs; once
// the index is untagged, all of it goes.
func TestIndex(t *testing.T) {
	e := newEnv(t)
	c1 := e.image("multi", nil, "amd64-layer")
	c2 := e.image("multi", nil, "arm64-layer")
	d1 := e.put("multi", string(digest.FromBytes(c1)), c1)
	d2 := e.put("multi", string(digest.FromBytes(c2)), c2)
	idx := e.put("multi", "latest", index(c1, c2))
	e.age()

	if r := e.gc(Options{DeleteUntagged: true}); len(r.items) != 0 {
		t.Fatalf("removed %v; the index keeps its children", r.items)
	}
	if n := e.pullsCompletely(); n != 3 {
		t.Errorf("%d manifests, want 3", n)
	}

	e.must(e.do("DELETE", "/v2/multi/manifests/latest", nil), http.StatusAccepted, "delete tag")
	r := e.gc(Options{DeleteUntagged: true})
	for _, d := range []digest.Digest{idx, d1, d2} {
		if !r.has(KindManifest, "multi", d) || !r.has(KindBlob, "", d) {
			t.Errorf("untagged index: %s not removed: %v", d, r.items)
		}
	}
	if r.res.Blobs != 7 { // index, 2 manifests, 2 configs, 2 layers
		t.Errorf("%d blobs removed, want 7: %v", r.res.Blobs, r.items)
	}
}

// TestReferrers: an untagged referrer of a kept subject stays and is still
// listed; once the subject goes, the referrer goes with it.
func TestReferrers(t *testing.T) {
	e := newEnv(t)
	img := e.image("signed", nil, "content")
	subj := e.put("signed", "v1", img)
	sig := e.image("signed", &desc{backend.MediaTypeOCIManifest, subj, int64(len(img))}, "signature")
	sigD := e.put("signed", string(digest.FromBytes(sig)), sig)
	e.age()

	if r := e.gc(Options{DeleteUntagged: true}); len(r.items) != 0 {
		t.Fatalf("removed %v; a referrer of a kept subject stays", r.items)
	}
	if refs := e.referrers("signed", subj); len(refs) != 1 || refs[0] != sigD {
		t.Fatalf("referrers after gc: %v, want [%s]", refs, sigD)
	}
	e.pullsCompletely()

	e.must(e.do("DELETE", "/v2/signed/manifests/v1", nil), http.StatusAccepted, "delete tag")
	r := e.gc(Options{DeleteUntagged: true})
	if !r.has(KindManifest, "signed", subj) || !r.has(KindManifest, "signed", sigD) || !r.has(KindBlob, "", digest.FromString("signature")) {
		t.Errorf("subject untagged: removed %v, want subject, referrer and their blobs", r.items)
	}
	if refs := e.referrers("signed", subj); len(refs) != 0 {
		t.Errorf("referrers of a removed subject: %v", refs)
	}
}

func (e *env) referrers(repo string, d digest.Digest) []digest.Digest {
	e.t.Helper()
	r := e.must(e.do("GET", "/v2/"+repo+"/referrers/"+string(d), nil), http.StatusOK, "referrers")
	var idx backend.Manifest
	if err := json.Unmarshal(r.body, &idx); err != nil {
		e.t.Fatal(err)
	}
	var out []digest.Digest
	for _, m := range idx.Manifests {
		out = append(out, m.Digest)
	}
	return out
}

// TestDryRun: a dry run changes no file and lists exactly what the real run
// then removes.
func TestDryRun(t *testing.T) {
	for _, untagged := range []bool{false, true} {
		t.Run(map[bool]string{false: "default", true: "delete-untagged"}[untagged], func(t *testing.T) {
			e := newEnv(t)
			e.put("app", "v1", e.image("app", nil, "a", "b"))
			e.put("app", "v1", e.image("app", nil, "a", "c"))
			gone := e.put("other", "x", e.image("other", nil, "d"))
			e.must(e.do("DELETE", "/v2/other/manifests/"+string(gone), nil), http.StatusAccepted, "delete")
			e.pushBlob("app", []byte("stray"))
			e.age()

			before := e.tree()
			dry := e.gc(Options{DryRun: true, DeleteUntagged: untagged})
			if after := e.tree(); after != before {
				t.Fatalf("dry run changed files:\nbefore\n%s\nafter\n%s", before, after)
			}
			if len(dry.items) == 0 {
				t.Fatal("dry run found nothing; the test has garbage")
			}
			real := e.gc(Options{DeleteUntagged: untagged})
			if strings.Join(dry.items, "\n") != strings.Join(real.items, "\n") || *dry.res != *real.res {
				t.Errorf("dry run listed\n%s\n%+v\nreal run removed\n%s\n%+v", strings.Join(dry.items, "\n"), *dry.res, strings.Join(real.items, "\n"), *real.res)
			}
			e.pullsCompletely()
		})
	}
}

// TestPushRacingGC: between gc's mark and sweep, a client pushes a manifest
// that uses an old, so far unreferenced blob it did not upload again (it
// found it with HEAD), or mounts such a blob into another repository. The
// registry refreshes the blob's time, gc's re-check sees that, and the
// blob stays. Without the push, the same blob is collected.
func TestPushRacingGC(t *testing.T) {
	tests := []struct {
		name string
		push func(e *env, layer digest.Digest, cfg []byte)
		keep bool
	}{
		{"no push", func(*env, digest.Digest, []byte) {}, false},
		{"manifest reuses blob", func(e *env, layer digest.Digest, cfg []byte) {
			if got := e.status("HEAD", "/v2/app/blobs/"+string(layer)); got != http.StatusOK {
				e.t.Fatalf("HEAD before push: %d", got)
			}
			e.put("app", "v2", manifestFor(e, "app", cfg, layer, "reused"))
		}, true},
		{"cross-repository mount", func(e *env, layer digest.Digest, cfg []byte) {
			e.must(e.do("POST", "/v2/other/blobs/uploads/?mount="+string(layer)+"&from=app", nil), http.StatusCreated, "mount")
		}, true},
		{"upload of the same content", func(e *env, layer digest.Digest, cfg []byte) {
			e.pushBlob("third", []byte("reused"))
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			layer := e.pushBlob("app", []byte("reused"))
			cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
			e.age()
			r := e.gc(Options{beforeSweep: func() { tt.push(e, layer, cfg) }})
			if kept := e.hasBlobFile(layer); kept != tt.keep {
				t.Errorf("blob kept = %v, want %v; gc removed %v", kept, tt.keep, r.items)
			}
			if tt.keep && r.has(KindBlob, "", layer) {
				t.Errorf("gc reported removing the blob it kept")
			}
			e.pullsCompletely()
		})
	}
}

// manifestFor pushes cfg (fresh) and returns a manifest using it and the
// existing layer.
func manifestFor(e *env, repo string, cfg []byte, layer digest.Digest, layerContent string) []byte {
	cd := e.pushBlob(repo, cfg)
	b, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     backend.MediaTypeOCIManifest,
		"config":        desc{"application/vnd.oci.image.config.v1+json", cd, int64(len(cfg))},
		"layers":        []desc{{"application/vnd.oci.image.layer.v1.tar+gzip", layer, int64(len(layerContent))}},
	})
	return b
}

// TestUnreadableManifestStopsGC: a kept manifest that cannot be parsed
// means the mark is incomplete; gc must fail and remove nothing.
func TestUnreadableManifestStopsGC(t *testing.T) {
	e := newEnv(t)
	d := e.put("app", "v1", e.image("app", nil, "l"))
	stray := e.pushBlob("app", []byte("stray"))
	e.age()
	p := filepath.Join(e.root, "blobs", "sha256", d.Encoded()[:2], d.Encoded())
	if err := os.WriteFile(p, []byte("not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := localfs.New(localfs.Options{Root: e.root})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	before := e.tree()
	if _, err := Run(context.Background(), st, Options{}); err == nil || !strings.Contains(err.Error(), "refusing to collect") {
		t.Fatalf("gc with an unparsable manifest: %v, want an error", err)
	}
	if !e.hasBlobFile(stray) || e.tree() != before {
		t.Error("gc removed something although its mark failed")
	}
}

// TestManifestPushRacingGC: with DeleteUntagged, an old untagged manifest
// that a client tags again, or lists in a new index, between gc's mark and
// sweep stays with everything it uses.
func TestManifestPushRacingGC(t *testing.T) {
	tests := []struct {
		name string
		push func(e *env, m []byte)
		keep bool
	}{
		{"no push", func(*env, []byte) {}, false},
		{"tagged again", func(e *env, m []byte) { e.put("app", "again", m) }, true},
		{"listed by a new index", func(e *env, m []byte) { e.put("app", "multi", index(m)) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			m := e.image("app", nil, "old layer")
			d := e.put("app", "v1", m)
			e.must(e.do("DELETE", "/v2/app/manifests/v1", nil), http.StatusAccepted, "untag")
			e.age()
			r := e.gc(Options{DeleteUntagged: true, beforeSweep: func() { tt.push(e, m) }})
			if removed := r.has(KindManifest, "app", d); removed == tt.keep {
				t.Errorf("manifest removed = %v, want %v: %v", removed, !tt.keep, r.items)
			}
			if kept := e.hasBlobFile(digest.FromString("old layer")); kept != tt.keep {
				t.Errorf("layer kept = %v, want %v: %v", kept, tt.keep, r.items)
			}
			if n := e.pullsCompletely(); tt.keep && n == 0 {
				t.Error("nothing left to pull")
			}
		})
	}
}

// TestConcurrentPushesAndGC: while gc runs again and again, a client
// pushes images the way docker does: HEAD each old, unreferenced layer,
// upload it only if missing, then PUT the manifest (after uploading again
// if the PUT says a blob is unknown). Every push must succeed and every
// manifest must pull completely afterwards, whatever the interleaving.
func TestConcurrentPushesAndGC(t *testing.T) {
	e := newEnv(t)
	const n = 30
	layer := func(i int) []byte { return []byte(fmt.Sprintf("old layer %d", i)) }
	for i := 0; i < n; i++ {
		e.pushBlob("src", layer(i))
	}
	e.age()

	st, err := localfs.New(localfs.Options{Root: e.root})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	stop := make(chan struct{})
	done := make(chan error, 1)
	runs := 0
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := Run(context.Background(), st, Options{}); err != nil {
				done <- err
				return
			}
			runs++
		}
	}()
	retried, missing := 0, 0
	for i := 0; i < n; i++ {
		repo := fmt.Sprintf("app%d", i%3)
		ld := digest.FromBytes(layer(i))
		if e.status("HEAD", "/v2/src/blobs/"+string(ld)) != http.StatusOK {
			missing++ // collected already: upload it again
			e.pushBlob("src", layer(i))
		}
		switch r := e.do("POST", "/v2/"+repo+"/blobs/uploads/?mount="+string(ld)+"&from=src", nil); r.status {
		case http.StatusCreated:
		case http.StatusAccepted:
			// Collected between the HEAD and the mount: the registry
			// starts a normal upload instead (as the spec says), and the
			// client uploads the layer, as docker would.
			missing++
			e.pushBlob(repo, layer(i))
		default:
			t.Fatalf("mount %d: status %d %s", i, r.status, r.body)
		}
		cfg := []byte(fmt.Sprintf(`{"n":%d}`, i))
		body, _ := json.Marshal(map[string]any{
			"schemaVersion": 2,
			"mediaType":     backend.MediaTypeOCIManifest,
			"config":        desc{"application/vnd.oci.image.config.v1+json", e.pushBlob(repo, cfg), int64(len(cfg))},
			"layers":        []desc{{"application/vnd.oci.image.layer.v1.tar+gzip", ld, int64(len(layer(i)))}},
		})
		for attempt := 0; ; attempt++ {
			r := e.do("PUT", "/v2/"+repo+"/manifests/v"+fmt.Sprint(i), body, "Content-Type: "+backend.MediaTypeOCIManifest)
			if r.status == http.StatusCreated {
				break
			}
			if r.status != http.StatusBadRequest || attempt == 3 {
				t.Fatalf("push %d: %d %s", i, r.status, r.body)
			}
			retried++ // collected between HEAD and PUT: upload again, as docker would
			e.pushBlob(repo, layer(i))
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("gc: %v", err)
	}
	t.Logf("%d gc runs during %d pushes; %d layers collected before their HEAD, %d between HEAD and manifest PUT", runs, n, missing, retried)
	if got := e.pullsCompletely(); got != n {
		t.Errorf("%d manifests pull, want %d", got, n)
	}
	// and a final gc removes nothing any manifest uses
	e.gc(Options{Grace: -1})
	if got := e.pullsCompletely(); got != n {
		t.Errorf("after a final gc without grace: %d manifests pull, want %d", got, n)
	}
}
