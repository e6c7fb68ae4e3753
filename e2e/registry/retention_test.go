package registry_test

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
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

var gcRunsRE = regexp.MustCompile(`(?m)^wharf_gc_runs_total\{result="ok"\} (\d+)`)

// gcRuns reads wharf_gc_runs_total{result="ok"} from the admin listener.
func gcRuns(t *testing.T, admin string) int {
	t.Helper()
	res, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Error(err) // also called from the pushing goroutines: no Fatal
		return 0
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	m := gcRunsRE.FindSubmatch(b)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestScheduledGCDuringPushes: wharf serve with [gc] every = "1s" and a
// retention rule (load/* keeps its newest 3 tags) while crane pushes
// images into two repositories until two runs have finished meanwhile, every one built on an image that was
// deleted and aged so that the scheduled gc is collecting its blobs at
// that very time. Every push that crane saw succeed (one that failed is
// pushed again) is intact afterwards: all of keep/* verify byte for
// byte, load/* has exactly its newest 3 tags and they verify, the base's
// own manifest and config were collected; a dry run on the admin
// listener then finds nothing more to remove.
func TestScheduledGCDuringPushes(t *testing.T) {
	if !harness.WharfEnabled(t) {
		t.Skip("wharf is not among WHARF_E2E_TARGETS")
	}
	crane := harness.Crane(t)
	keepRepo, loadRepo := repoName(t, "keep"), "load/"+strings.ToLower(t.Name())
	w := harness.StartWharf(t, `data_dir = "{{.DataDir}}"
[listen]
http  = "{{.HTTP}}"
https = ""
admin = "{{.Admin}}"
[[site]]
host    = "127.0.0.1"
backend = "registry"
tls     = "off"
[site.registry]
root   = "registry"
delete = true
[gc]
every  = "1s"
jitter = "0s"
[[retention]]
repos     = ["load/*"]
keep_last = 3
`)
	raw := harness.NewRawClient(w.URL())
	push := func(img v1.Image, ref string) error {
		_, err := crane.Run(t, "push", "--insecure", harness.WriteDockerArchive(t, img, "wharf-e2e.test/gc:x"), w.Addr()+"/"+ref)
		return err
	}

	// a base image, deleted and aged: its blobs are what gc collects
	base := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 3, 256<<10)
	if err := push(base, repoName(t, "old")+":v1"); err != nil {
		t.Fatal(err)
	}
	d := harness.MustDigest(t, base)
	if r := raw.Do(t, http.MethodDelete, "/v2/"+repoName(t, "old")+"/manifests/"+d.String(), nil, nil); r.Status != http.StatusAccepted {
		t.Fatalf("DELETE: %d %s", r.Status, r.Body)
	}
	past := time.Now().Add(-2 * time.Hour)
	filepath.WalkDir(filepath.Join(w.Config.DataDir, "registry"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			os.Chtimes(p, past, past)
		}
		return nil
	})

	// garbage once the base is deleted: its manifest and config
	cfgName := harness.MustDigestOf(t, base.ConfigName)
	baseFiles := []string{
		filepath.Join(w.Config.DataDir, "registry", "blobs", "sha256", d.Hex[:2], d.Hex),
		filepath.Join(w.Config.DataDir, "registry", "blobs", "sha256", cfgName.Hex[:2], cfgName.Hex),
	}
	// Each repository gets at least minPushes images, and the pushing goes
	// on until two scheduled runs have finished since it began, so runs
	// overlap the pushes by construction (maxPushes turns a stuck
	// schedule into a failure below).
	const minPushes, maxPushes = 5, 60
	before := gcRuns(t, w.AdminAddr)
	type pushed struct {
		ref string
		img v1.Image
	}
	var (
		mu       sync.Mutex
		acked    = map[string][]pushed{}
		retries  int
		failures []string
		wg       sync.WaitGroup
	)
	for _, repo := range []string{keepRepo, loadRepo} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < maxPushes && (i < minPushes || gcRuns(t, w.AdminAddr) < before+2); i++ {
				extra, err := random.Layer(64<<10, types.DockerLayer)
				if err != nil {
					panic(err)
				}
				img, err := mutate.AppendLayers(base, extra)
				if err != nil {
					panic(err)
				}
				ref := fmt.Sprintf("%s:i%d", repo, i)
				var perr error
				for attempt := 0; attempt < 3; attempt++ {
					if perr = push(img, ref); perr == nil {
						break
					}
					mu.Lock()
					retries++ // not acknowledged: the client pushes again
					mu.Unlock()
				}
				mu.Lock()
				if perr != nil {
					failures = append(failures, perr.Error())
				} else {
					acked[repo] = append(acked[repo], pushed{ref, img})
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("pushes failed three times: %v", failures)
	}
	t.Logf("%d+%d pushes, %d needed a retry", len(acked[keepRepo]), len(acked[loadRepo]), retries)
	if during := gcRuns(t, w.AdminAddr) - before; during < 2 {
		t.Fatalf("only %d scheduled runs finished during %d pushes", during, maxPushes)
	}

	// two full runs after the last push
	start := gcRuns(t, w.AdminAddr)
	deadline := time.Now().Add(2 * time.Minute) // only turns a hang into a failure
	for gcRuns(t, w.AdminAddr) < start+2 {
		if time.Now().After(deadline) {
			t.Fatalf("the scheduled gc did not run twice (runs: %d)", gcRuns(t, w.AdminAddr))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// the scheduled gc did collect: the deleted base's manifest and
	// config (no pushed image uses them) are gone
	for _, f := range baseFiles {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("garbage %s not collected: %v", f, err)
		}
	}
	for _, p := range acked[keepRepo] {
		harness.VerifyRemoteImage(t, w.Addr()+"/"+p.ref, p.img, harness.Exact)
	}
	r := raw.Do(t, http.MethodGet, "/v2/"+loadRepo+"/tags/list", nil, nil)
	var tags struct{ Tags []string }
	if err := json.Unmarshal(r.Body, &tags); err != nil {
		t.Fatalf("tags/list: %d %s", r.Status, r.Body)
	}
	newest := acked[loadRepo][len(acked[loadRepo])-3:]
	var want []string
	for _, p := range newest {
		want = append(want, p.ref[strings.LastIndexByte(p.ref, ':')+1:])
	}
	slices.Sort(want)
	if !slices.Equal(tags.Tags, want) {
		t.Errorf("%s tags %v, want the newest three %v", loadRepo, tags.Tags, want)
	}
	for _, p := range newest {
		harness.VerifyRemoteImage(t, w.Addr()+"/"+p.ref, p.img, harness.Exact)
	}

	res, err := http.Get("http://" + w.AdminAddr + "/gc/report?format=text")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(b), "retention would remove 0 tags, 0 manifests") {
		t.Errorf("report after the runs:\n%s", b)
	}
}
