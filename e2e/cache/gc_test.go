package cache_test

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// evictConfig is cacheConfig with max_age: `wharf gc` evicts what the
// mirror has not used for a day.
const evictConfig = cacheConfig + `max_age  = "24h"
`

// TestGCEvictsUnusedCache: two images are pulled through wharf's cache
// site (docker-registry upstream), everything in the cache is made two
// days old, one image is pulled again. `wharf gc -dry-run` (the binary)
// lists the other and removes nothing; `wharf gc` removes it and the cache
// shrinks by its size; crane pulls it again (from the upstream, since the
// cache had nothing of it left), and the image in use is still served
// with the upstream gone.
func TestGCEvictsUnusedCache(t *testing.T) {
	up := harness.StartDockerRegistry(t, "")
	crane := harness.Crane(t)
	imgA := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 3, 512<<10)
	imgB := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 2, 512<<10)
	crane.Must(t, "push", "--insecure", harness.WriteDockerArchive(t, imgA, "wharf-e2e.test/a:v1"), up.Addr()+"/team/a:v1")
	if err := remote.Write(harness.Ref(t, up.Addr()+"/team/b:v1"), imgB, harness.RemoteOptions()...); err != nil {
		t.Fatalf("push team/b to the upstream: %v", err)
	}
	w := harness.StartWharf(t, evictConfig, harness.WithVars(map[string]any{"upstream": up.URL()}))
	root := filepath.Join(w.Config.DataDir, "cache", "127.0.0.1")
	a, b := w.Addr()+"/team/a:v1", w.Addr()+"/team/b:v1"

	pullA := func() {
		t.Helper()
		crane.Must(t, "pull", "--insecure", a, filepath.Join(t.TempDir(), "a.tar"))
		harness.VerifyRemoteImage(t, a, imgA, harness.Exact)
	}
	pullA()
	harness.VerifyRemoteImage(t, b, imgB, harness.Exact)
	full := blobBytes(t, root)
	sizeA := imageBytes(t, imgA)
	sizeB := imageBytes(t, imgB)
	if full != sizeA+sizeB {
		t.Fatalf("cache holds %d bytes of blobs, want %d (both images)", full, sizeA+sizeB)
	}
	ageFiles(t, root, 48*time.Hour)
	harness.VerifyRemoteImage(t, b, imgB, harness.Exact) // B is in use

	out := wharfGC(t, w, "-dry-run")
	if !strings.Contains(out, "would remove tag team/a:v1") || !strings.Contains(out, fmt.Sprintf("would remove 1 tags, 1 manifests, 5 blobs (%s", human(sizeA))) || strings.Contains(out, "team/b") {
		t.Fatalf("gc -dry-run output:\n%s", out)
	}
	if got := blobBytes(t, root); got != full {
		t.Fatalf("dry run: cache holds %d bytes, had %d", got, full)
	}

	out = wharfGC(t, w)
	if !strings.Contains(out, fmt.Sprintf("removed 1 tags, 1 manifests, 5 blobs (%s", human(sizeA))) {
		t.Fatalf("gc output:\n%s", out)
	}
	if got := blobBytes(t, root); got != sizeB {
		t.Fatalf("after gc the cache holds %d bytes of blobs, want %d (only team/b)", got, sizeB)
	}

	// A again: fetched from the upstream, cached again.
	pullA()
	if got := blobBytes(t, root); got != full {
		t.Fatalf("after pulling team/a again the cache holds %d bytes, want %d", got, full)
	}
	// B was kept whole: it is served without the upstream.
	up.Kill(t)
	harness.VerifyRemoteImage(t, b, imgB, harness.Exact)
	crane.Must(t, "pull", "--insecure", b, filepath.Join(t.TempDir(), "b.tar"))
}

// TestGCWhilePulling: clients pull an image through the cache while
// `wharf gc` evicts it (everything made two days old before each round).
// Every pull gets the whole, correct image: from files opened before the
// eviction, or fetched again from the upstream. Never a 5xx.
func TestGCWhilePulling(t *testing.T) {
	up := harness.StartDockerRegistry(t, "")
	img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 4, 1<<20)
	if err := remote.Write(harness.Ref(t, up.Addr()+"/team/app:v1"), img, harness.RemoteOptions()...); err != nil {
		t.Fatalf("push to the upstream: %v", err)
	}
	w := harness.StartWharf(t, evictConfig, harness.WithVars(map[string]any{"upstream": up.URL()}))
	root := filepath.Join(w.Config.DataDir, "cache", "127.0.0.1")
	ref := harness.Ref(t, w.Addr()+"/team/app:v1")
	harness.VerifyRemoteImage(t, ref.String(), img, harness.Exact)

	// The clients start at a different moment of the gc run each round
	// (before the listing, between listing and removals, after), so some
	// find everything, some find the image gone and some lose it midway.
	// Which is which does not matter: every pull must succeed.
	const rounds, clients = 12, 3
	evicted := 0
	for round := 0; round < rounds; round++ {
		ageFiles(t, root, 48*time.Hour)
		gc := exec.Command(harness.WharfBinary(t), "gc", "-config", w.ConfigPath)
		var out, stderr strings.Builder
		gc.Stdout, gc.Stderr = &out, &stderr
		if err := gc.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(round) * 2 * time.Millisecond)
		var wg sync.WaitGroup
		errs := make(chan error, clients*2)
		for i := 0; i < clients; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 2; j++ {
					got, err := remote.Image(ref, harness.RemoteOptions()...)
					if err == nil {
						err = harness.CompareImages(got, img, harness.Exact)
					}
					if err != nil {
						errs <- err
					}
				}
			}()
		}
		gcErr := gc.Wait()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("round %d: a pull racing gc failed: %v", round, err)
		}
		if gcErr != nil {
			t.Fatalf("round %d: wharf gc: %v\n%s", round, gcErr, stderr.String())
		}
		t.Logf("round %d: %s", round, out.String())
		if !strings.Contains(out.String(), "removed 0 tags, 0 manifests, 0 blobs") {
			evicted++
		}
	}
	t.Logf("gc evicted something in %d of %d rounds", evicted, rounds)
	if serverErr.MatchString(w.Log()) || strings.Contains(w.Log(), "internal error") {
		t.Errorf("wharf answered 5xx during the races:\n%s", w.LogTail(4000))
	}
	// the last word: the image pulls whole
	harness.VerifyRemoteImage(t, ref.String(), img, harness.Exact)
}

// serverErr finds a 5xx in wharf's JSON access log.
var serverErr = regexp.MustCompile(`"status":5[0-9][0-9]`)

// wharfGC runs the wharf binary's gc on w's config and returns stdout.
func wharfGC(t *testing.T, w *harness.Wharf, args ...string) string {
	t.Helper()
	cmd := exec.Command(harness.WharfBinary(t), append([]string{"gc", "-config", w.ConfigPath}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("wharf gc %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, out, stderr.String())
	}
	t.Logf("wharf gc %v:\n%s", args, out)
	return string(out)
}

// blobBytes sums the sizes of the cache's blobs (content, not records).
func blobBytes(t *testing.T, root string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(filepath.Join(root, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n += fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// imageBytes is the size of an image's manifest, config and layers.
func imageBytes(t *testing.T, img v1.Image) int64 {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n
}

// ageFiles makes every cached blob and record look unused for age.
func ageFiles(t *testing.T, root string, age time.Duration) {
	t.Helper()
	past := time.Now().Add(-age)
	for _, dir := range []string{"blobs", "repositories"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				if os.IsNotExist(err) {
					return nil // evicted meanwhile
				}
				return err
			}
			if err := os.Chtimes(p, past, past); err != nil && !os.IsNotExist(err) {
				return err
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// human is how wharf gc prints a byte count (the part before the comma).
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB, %d bytes", float64(n)/float64(div), "KMGTPE"[exp], n)
}
