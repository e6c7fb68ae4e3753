package importer

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/registry"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/localfs"
)

// src builds a registry:2 filesystem root the way distribution lays it out.
type src struct {
	t    *testing.T
	root string // the rootdirectory
	v2   string
}

func newSrc(t *testing.T) *src {
	root := t.TempDir()
	v2 := filepath.Join(root, "docker", "registry", "v2")
	for _, d := range []string{"blobs", "repositories"} {
		if err := os.MkdirAll(filepath.Join(v2, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &src{t: t, root: root, v2: v2}
}

func (s *src) write(path string, data []byte) {
	s.t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		s.t.Fatal(err)
	}
}

func (s *src) blobPath(d digest.Digest) string {
	return filepath.Join(s.v2, "blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded(), "data")
}

// blob stores content and returns its digest.
func (s *src) blob(data []byte) digest.Digest {
	d := digest.FromBytes(data)
	s.write(s.blobPath(d), data)
	return d
}

func (s *src) repoDir(repo string) string {
	return filepath.Join(s.v2, "repositories", filepath.FromSlash(repo))
}

func (s *src) layer(repo string, d digest.Digest) {
	s.write(filepath.Join(s.repoDir(repo), "_layers", string(d.Algorithm()), d.Encoded(), "link"), []byte(d))
}

func (s *src) revision(repo string, d digest.Digest) {
	s.write(filepath.Join(s.repoDir(repo), "_manifests", "revisions", string(d.Algorithm()), d.Encoded(), "link"), []byte(d))
}

func (s *src) tag(repo, tag string, d digest.Digest) {
	dir := filepath.Join(s.repoDir(repo), "_manifests", "tags", tag)
	s.write(filepath.Join(dir, "current", "link"), []byte(d))
	s.write(filepath.Join(dir, "index", string(d.Algorithm()), d.Encoded(), "link"), []byte(d))
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

type image struct {
	manifest digest.Digest
	body     []byte
	blobs    map[digest.Digest][]byte
}

// pushImage writes an image (config + layers) into repo as registry:2
// does for a push: blobs, _layers links, the manifest blob and revision.
func (s *src) pushImage(repo, mediaType string, layers int) image {
	img := image{blobs: map[digest.Digest][]byte{}}
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"n":%q}`, randomBytes(s.t, 8)))
	cd := s.blob(cfg)
	s.layer(repo, cd)
	img.blobs[cd] = cfg
	cfgType, layerType := "application/vnd.docker.container.image.v1+json", "application/vnd.docker.image.rootfs.diff.tar.gzip"
	if mediaType == backend.MediaTypeOCIManifest {
		cfgType, layerType = "application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip"
	}
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaType,
		"config":        map[string]any{"mediaType": cfgType, "digest": cd, "size": len(cfg)},
	}
	var ls []map[string]any
	for i := 0; i < layers; i++ {
		b := randomBytes(s.t, 1000+i)
		d := s.blob(b)
		s.layer(repo, d)
		img.blobs[d] = b
		ls = append(ls, map[string]any{"mediaType": layerType, "digest": d, "size": len(b)})
	}
	m["layers"] = ls
	body, _ := json.MarshalIndent(m, "", "   ")
	img.body = body
	img.manifest = s.blob(body)
	s.revision(repo, img.manifest)
	return img
}

func (s *src) pushIndex(repo string, children ...image) image {
	var ms []map[string]any
	for i, c := range children {
		ms = append(ms, map[string]any{
			"mediaType": backend.MediaTypeOCIManifest, "digest": c.manifest, "size": len(c.body),
			"platform": map[string]any{"os": "linux", "architecture": []string{"amd64", "arm64"}[i%2]},
		})
	}
	body, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": backend.MediaTypeOCIIndex, "manifests": ms})
	d := s.blob(body)
	s.revision(repo, d)
	return image{manifest: d, body: body}
}

// target is a wharf registry root with the registry serving it.
type target struct {
	root string
	st   *localfs.Store
	srv  *httptest.Server
}

func newTarget(t *testing.T, root string) *target {
	if root == "" {
		root = t.TempDir()
	}
	st, err := localfs.New(localfs.Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New(context.Background(), registry.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg)
	t.Cleanup(func() { srv.Close(); st.Close() })
	return &target{root: root, st: st, srv: srv}
}

func (tg *target) get(t *testing.T, path string, accept ...string) (int, []byte, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, tg.srv.URL+path, nil)
	for _, a := range accept {
		req.Header.Add("Accept", a)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

// mustServe checks that repo:ref answers exactly body, and every blob too.
func (tg *target) mustServe(t *testing.T, repo, ref string, img image) {
	t.Helper()
	code, b, h := tg.get(t, "/v2/"+repo+"/manifests/"+ref, backend.MediaTypeOCIIndex, backend.MediaTypeOCIManifest, backend.MediaTypeDockerManifest)
	if code != 200 || string(b) != string(img.body) || h.Get("Docker-Content-Digest") != string(img.manifest) {
		t.Fatalf("GET %s:%s = %d %s (digest %s); want the imported manifest %s", repo, ref, code, b, h.Get("Docker-Content-Digest"), img.manifest)
	}
	for d, want := range img.blobs {
		code, b, _ := tg.get(t, "/v2/"+repo+"/blobs/"+string(d))
		if code != 200 || string(b) != string(want) {
			t.Fatalf("GET %s blob %s = %d (%d bytes); want %d bytes", repo, d, code, len(b), len(want))
		}
	}
}

type collected struct{ skips []Skipped }

func (c *collected) opts(from string, st *localfs.Store) Options {
	return Options{From: from, Store: st, Workers: 3, Skip: func(s Skipped) { c.skips = append(c.skips, s) }}
}

func (c *collected) has(t *testing.T, kind, name, reason string) {
	t.Helper()
	for _, s := range c.skips {
		if s.Kind == kind && strings.Contains(s.Name, name) && strings.Contains(s.Reason, reason) {
			return
		}
	}
	t.Errorf("no skipped %s %s (%q) among %v", kind, name, reason, c.skips)
}

func TestImport(t *testing.T) {
	s := newSrc(t)
	web := s.pushImage("team/web", backend.MediaTypeDockerManifest, 3)
	s.tag("team/web", "v1", web.manifest)
	web2 := s.pushImage("team/web", backend.MediaTypeDockerManifest, 2) // pushed twice under one tag
	s.tag("team/web", "latest", web2.manifest)
	// a blob shared with another repository (cross-repository mount)
	var shared digest.Digest
	for d := range web.blobs {
		shared = d
		break
	}
	s.layer("other", shared)
	amd, arm := s.pushImage("multi", backend.MediaTypeOCIManifest, 1), s.pushImage("multi", backend.MediaTypeOCIManifest, 1)
	idx := s.pushIndex("multi", amd, arm)
	s.tag("multi", "1.0", idx.manifest)
	// a deleted tag: registry:2 drops current/link; a deleted revision: the link goes
	gone := s.pushImage("multi", backend.MediaTypeOCIManifest, 1)
	s.tag("multi", "old", gone.manifest)
	os.Remove(filepath.Join(s.repoDir("multi"), "_manifests", "tags", "old", "current", "link"))
	os.Remove(filepath.Join(s.repoDir("multi"), "_manifests", "revisions", "sha256", gone.manifest.Encoded(), "link"))
	// schema 1
	s1 := s.blob([]byte(`{"schemaVersion":1,"name":"legacy","tag":"v0","architecture":"amd64","fsLayers":[],"history":[]}`))
	s.revision("legacy", s1)
	s.tag("legacy", "v0", s1)
	// a tag naming a manifest the repository does not have
	s.tag("team/web", "dangling", digest.FromString("nothing"))
	// a manifest whose layer has no content
	broken := s.pushImage("broken", backend.MediaTypeDockerManifest, 2)
	for d, b := range broken.blobs {
		if len(b) > 1000 {
			os.RemoveAll(filepath.Dir(s.blobPath(d)))
			break
		}
	}
	s.tag("broken", "v1", broken.manifest)
	// a blob whose content does not match its digest
	bad := s.pushImage("bad", backend.MediaTypeDockerManifest, 1)
	var badBlob digest.Digest
	for d, b := range bad.blobs {
		if len(b) >= 1000 {
			badBlob = d
			s.write(s.blobPath(d), append([]byte("x"), b[1:]...))
		}
	}
	// an upload in progress is not imported
	s.write(filepath.Join(s.repoDir("team/web"), "_uploads", "0b5f", "data"), []byte("partial"))

	tg := newTarget(t, "")
	var c collected
	o := c.opts(s.root, tg.st)
	var progressCalls atomic.Int32
	o.Progress = func(done, total int, _ int64) {
		if done > total {
			t.Errorf("progress %d of %d", done, total)
		}
		progressCalls.Add(1)
	}
	o.ProgressEvery = time.Millisecond
	res, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	tg.mustServe(t, "team/web", "v1", web)
	tg.mustServe(t, "team/web", "latest", web2)
	tg.mustServe(t, "team/web", string(web.manifest), web)
	tg.mustServe(t, "multi", "1.0", idx)
	tg.mustServe(t, "multi", string(amd.manifest), amd)
	tg.mustServe(t, "multi", string(arm.manifest), arm)
	if code, _, _ := tg.get(t, "/v2/other/blobs/"+string(shared)); code != 200 {
		t.Errorf("mounted blob in other: %d", code)
	}
	for _, ref := range []string{"team/web/manifests/dangling", "multi/manifests/old", "multi/manifests/" + string(gone.manifest), "legacy/manifests/v0", "broken/manifests/v1", "bad/manifests/" + string(bad.manifest), "bad/blobs/" + string(badBlob)} {
		if code, _, _ := tg.get(t, "/v2/"+ref); code != 404 {
			t.Errorf("GET %s = %d, want 404: it must not have been imported", ref, code)
		}
	}
	if _, err := tg.st.StatBlob(context.Background(), badBlob); err == nil {
		t.Errorf("the blob with the wrong content is in the store")
	}
	c.has(t, KindManifest, string(s1), "Docker schema 1")
	c.has(t, KindTag, "v0", "not in the repository")
	c.has(t, KindTag, "dangling", "not in the repository")
	c.has(t, KindBlob, "", "missing")
	c.has(t, KindManifest, string(broken.manifest), "not available")
	c.has(t, KindBlob, string(badBlob), "does not match its digest")
	c.has(t, KindManifest, string(bad.manifest), "not available")
	if len(c.skips) != res.Skipped {
		t.Errorf("Result.Skipped %d, reported %d", res.Skipped, len(c.skips))
	}
	if res.Tags != 3 || res.Linked != res.Blobs || res.Copied != 0 || res.Blobs == 0 {
		t.Errorf("result %+v: want 3 tags, every blob hard-linked", res)
	}
	// hard links: the imported blob is the registry's file
	a, _ := os.Stat(s.blobPath(web.manifest))
	b, _ := os.Stat(filepath.Join(tg.root, "blobs", "sha256", web.manifest.Encoded()[:2], web.manifest.Encoded()))
	if !os.SameFile(a, b) {
		t.Errorf("blob not hard-linked")
	}
	if repos, _ := tg.st.ListRepos(context.Background()); strings.Join(repos, ",") != "bad,broken,multi,other,team/web" {
		t.Errorf("repositories %v", repos)
	}

	// Again: nothing new, the same things skipped.
	var again collected
	res2, err := Run(context.Background(), again.opts(s.root, tg.st))
	if err != nil {
		t.Fatal(err)
	}
	if res2.Blobs != 0 || res2.Tags != 0 || res2.Manifests != 0 || res2.TagsPresent != 3 || res2.ManifestsPresent != res.Manifests || res2.Skipped != res.Skipped {
		t.Errorf("second run %+v after %+v: want nothing new", res2, res)
	}

	// More pushes, then an incremental run adds only those.
	web3 := s.pushImage("team/web", backend.MediaTypeDockerManifest, 1)
	s.tag("team/web", "latest", web3.manifest)
	res3, err := Run(context.Background(), (&collected{}).opts(s.root, tg.st))
	if err != nil {
		t.Fatal(err)
	}
	if res3.Blobs != 3 || res3.Manifests != 1 || res3.Tags != 1 {
		t.Errorf("incremental run %+v: want 3 blobs, 1 manifest, 1 tag", res3)
	}
	tg.mustServe(t, "team/web", "latest", web3)
}

func TestImportCopyAndDryRun(t *testing.T) {
	s := newSrc(t)
	img := s.pushImage("a", backend.MediaTypeOCIManifest, 2)
	s.tag("a", "v1", img.manifest)

	dry := newTarget(t, "")
	o := (&collected{}).opts(s.root, dry.st)
	o.DryRun = true
	res, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Blobs != 4 || res.Tags != 1 || res.Manifests != 1 {
		t.Errorf("dry run %+v: want 4 blobs, 1 manifest, 1 tag", res)
	}
	if repos, _ := dry.st.ListRepos(context.Background()); len(repos) != 0 {
		t.Errorf("dry run wrote repositories %v", repos)
	}
	n := 0
	dry.st.ListBlobs(context.Background(), func(storage.BlobInfo) error { n++; return nil })
	if n != 0 {
		t.Errorf("dry run wrote %d blobs", n)
	}

	cp := newTarget(t, "")
	o = (&collected{}).opts(s.root, cp.st)
	o.Copy = true
	if res, err = Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if res.Copied != 4 || res.Linked != 0 {
		t.Errorf("copy run %+v", res)
	}
	cp.mustServe(t, "a", "v1", img)
	a, _ := os.Stat(s.blobPath(img.manifest))
	b, _ := os.Stat(filepath.Join(cp.root, "blobs", "sha256", img.manifest.Encoded()[:2], img.manifest.Encoded()))
	if os.SameFile(a, b) {
		t.Errorf("-copy hard-linked")
	}
}

// With TrustDigests a hard-linked blob is not hashed: a corrupted one
// comes over (the documented price), and the result says it was linked.
func TestImportTrustDigests(t *testing.T) {
	s := newSrc(t)
	img := s.pushImage("a", backend.MediaTypeDockerManifest, 1)
	s.tag("a", "v1", img.manifest)
	var layer digest.Digest
	for d, b := range img.blobs {
		if len(b) >= 1000 {
			layer = d
			s.write(s.blobPath(d), append([]byte("x"), b[1:]...))
		}
	}
	for _, trust := range []bool{false, true} {
		tg := newTarget(t, "")
		o := (&collected{}).opts(s.root, tg.st)
		o.TrustDigests = trust
		res, err := Run(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		_, statErr := tg.st.StatBlob(context.Background(), layer)
		if trust != (statErr == nil) || trust != (res.Tags == 1) || (trust && res.Linked != 3) {
			t.Errorf("trust=%v: result %+v, corrupted layer in the store: %v", trust, res, statErr == nil)
		}
	}
}

func TestImportBadInput(t *testing.T) {
	t.Run("not a registry root", func(t *testing.T) {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "docker", "registry"), 0o755)
		file := filepath.Join(dir, "file")
		os.WriteFile(file, nil, 0o644)
		for _, from := range []string{dir, file, filepath.Join(dir, "absent")} {
			_, err := Run(context.Background(), Options{From: from, Store: newTarget(t, "").st})
			if err == nil || !strings.Contains(err.Error(), from) {
				t.Errorf("%s: err %v", from, err)
			}
			if from == dir && !errors.Is(err, ErrNotRegistryRoot) {
				t.Errorf("%s: %v is not ErrNotRegistryRoot", from, err)
			}
		}
	})
	t.Run("the v2 folder itself", func(t *testing.T) {
		s := newSrc(t)
		img := s.pushImage("a", backend.MediaTypeDockerManifest, 1)
		s.tag("a", "v1", img.manifest)
		tg := newTarget(t, "")
		if _, err := Run(context.Background(), (&collected{}).opts(s.v2, tg.st)); err != nil {
			t.Fatal(err)
		}
		tg.mustServe(t, "a", "v1", img)
	})
	t.Run("unreadable parts", func(t *testing.T) {
		s := newSrc(t)
		good := s.pushImage("good", backend.MediaTypeDockerManifest, 1)
		s.tag("good", "v1", good.manifest)
		// the tags folder of one repository cannot be listed
		other := s.pushImage("notags", backend.MediaTypeDockerManifest, 1)
		os.RemoveAll(filepath.Join(s.repoDir("notags"), "_manifests", "tags"))
		s.write(filepath.Join(s.repoDir("notags"), "_manifests", "tags"), []byte("not a folder"))
		// one blob's data cannot be read
		img := s.pushImage("noblob", backend.MediaTypeDockerManifest, 1)
		var victim digest.Digest
		for d, b := range img.blobs {
			if len(b) >= 1000 {
				victim = d
			}
		}
		os.Remove(s.blobPath(victim))
		os.MkdirAll(s.blobPath(victim), 0o755)
		// a repository folder that is a file
		s.write(filepath.Join(s.v2, "repositories", "junk", "_layers"), []byte("x"))
		// a link with garbage
		s.write(filepath.Join(s.repoDir("good"), "_layers", "sha256", strings.Repeat("a", 64), "link"), []byte("sha256:zz"))

		tg := newTarget(t, "")
		var c collected
		if _, err := Run(context.Background(), c.opts(s.root, tg.st)); err != nil {
			t.Fatal(err)
		}
		tg.mustServe(t, "good", "v1", good)
		tg.mustServe(t, "notags", string(other.manifest), other)
		c.has(t, KindTag, "tags", "cannot read folder")
		c.has(t, KindBlob, string(victim), "not a regular file")
		c.has(t, KindManifest, string(img.manifest), "not available")
		c.has(t, KindLink, strings.Repeat("a", 64), "its link says")
		c.has(t, KindLink, "junk", "cannot read folder")
	})
}

// Across file systems a hard link is impossible: the blobs are copied
// (and hashed) without being asked to. /dev/shm is a tmpfs on Linux.
func TestImportAcrossFileSystems(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "wharf-import-")
	if err != nil {
		t.Skipf("no /dev/shm to put the source on another file system: %v", err)
	}
	defer os.RemoveAll(shm)
	s := &src{t: t, root: shm, v2: filepath.Join(shm, "docker", "registry", "v2")}
	os.MkdirAll(filepath.Join(s.v2, "blobs"), 0o755)
	os.MkdirAll(filepath.Join(s.v2, "repositories"), 0o755)
	img := s.pushImage("a", backend.MediaTypeOCIManifest, 2)
	s.tag("a", "v1", img.manifest)
	tg := newTarget(t, "")
	if a, b := fsID(t, shm), fsID(t, tg.root); a == b {
		t.Skipf("/dev/shm and %s are on one file system here", tg.root)
	}
	res, err := Run(context.Background(), (&collected{}).opts(s.root, tg.st))
	if err != nil {
		t.Fatal(err)
	}
	if res.Copied != 4 || res.Linked != 0 {
		t.Errorf("result %+v: want 4 blobs copied", res)
	}
	tg.mustServe(t, "a", "v1", img)
}

func fsID(t *testing.T, p string) uint64 {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Dev
}
