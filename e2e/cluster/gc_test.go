package cluster_test

import (
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// TestGCWhileServing: three images are pushed and deleted (garbage older
// than the grace period: the bucket's files are backdated), then new
// images built on top of them are pushed through the balancer while
// `wharf gc` runs round after round with the first instance's config.
// Every push a client saw succeed (retried by the client when gc took a
// blob it was about to reuse) pulls back complete from every instance,
// and what no new image uses is gone.
func TestGCWhileServing(t *testing.T) {
	c := startCluster(t, 3)
	crane := harness.Crane(t)
	raw := harness.NewRawClient("http://" + c.lb.Addr)
	push := func(img v1.Image, repo string) error {
		out, err := crane.Run(t, "push", "--insecure", harness.WriteDockerArchive(t, img, "wharf-e2e.test/gc:x"), c.lb.Addr+"/"+repo)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}

	const n = 3
	olds := make([]v1.Image, n)
	for i := range olds {
		olds[i] = harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 256<<10)
		if err := push(olds[i], fmt.Sprintf("gc/old%d:v1", i)); err != nil {
			t.Fatal(err)
		}
		d := harness.MustDigest(t, olds[i])
		if r := raw.Do(t, http.MethodDelete, fmt.Sprintf("/v2/gc/old%d/manifests/%s", i, d), nil, nil); r.Status != http.StatusAccepted {
			t.Fatalf("DELETE %s: %d %s", d, r.Status, r.Body)
		}
	}
	// Everything so far is older than the default grace period of 1h:
	// versitygw's LastModified is the file's modification time.
	past := time.Now().Add(-2 * time.Hour)
	if err := filepath.WalkDir(filepath.Join(c.gw.Dir, bucket), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		return os.Chtimes(p, past, past)
	}); err != nil {
		t.Fatal(err)
	}
	gc := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(harness.WharfBinary(t), append([]string{"gc", "-config", c.instances[0].ConfigPath}, args...)...)
		out, err := cmd.CombinedOutput()
		t.Logf("$ wharf gc %s\n%s", strings.Join(args, " "), out)
		if err != nil {
			t.Errorf("wharf gc %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := gc("-dry-run"); !strings.Contains(out, "would remove blob") {
		t.Fatalf("dry run finds no garbage in the backdated bucket:\n%s", out)
	}

	// New images on top of the garbage: they reuse its layers while gc
	// runs.
	news := make([]v1.Image, n)
	for i := range news {
		extra, err := random.Layer(256<<10, types.DockerLayer)
		if err != nil {
			t.Fatal(err)
		}
		if news[i], err = mutate.AppendLayers(olds[i], extra); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	retries := make([]int, n)
	for i := range news {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for attempt := 0; attempt < 4; attempt++ {
				if errs[i] = push(news[i], fmt.Sprintf("gc/new%d:v1", i)); errs[i] == nil {
					return
				}
				retries[i]++
			}
		}(i)
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	rounds := 0
	removed := false
gcLoop:
	for {
		out := gc()
		rounds++
		removed = removed || strings.Contains(out, "removed blob")
		select {
		case <-allDone:
			break gcLoop
		default:
		}
	}
	out := gc()
	removed = removed || strings.Contains(out, "removed blob")
	t.Logf("gc rounds during the pushes: %d; pushes run again by the client: %v", rounds, retries)
	for i := range news {
		if errs[i] != nil {
			t.Fatalf("push new%d failed 4 times: %v", i, errs[i])
		}
	}
	if !removed {
		t.Error("no gc round removed a blob")
	}
	for i, img := range news {
		for _, w := range c.instances {
			harness.VerifyRemoteImage(t, fmt.Sprintf("%s/gc/new%d:v1", w.Addr(), i), img, harness.Exact)
		}
		// the old config blob is used by nothing any more: collected
		cfg := harness.MustDigestOf(t, olds[i].ConfigName)
		if r := raw.Do(t, http.MethodHead, fmt.Sprintf("/v2/gc/old%d/blobs/%s", i, cfg), nil, nil); r.Status != http.StatusNotFound {
			t.Errorf("HEAD old config %s: %d, want 404", cfg, r.Status)
		}
	}
}
