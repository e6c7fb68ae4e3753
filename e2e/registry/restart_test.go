package registry_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// TestDataSurvivesRestart: images pushed by crane and skopeo, and an index,
// still pull byte-identical after a graceful restart (SIGTERM, which must
// exit 0) and after a kill -9.
func TestDataSurvivesRestart(t *testing.T) {
	harness.ForEachTarget(t, func(t *testing.T, tg harness.Target) {
		crane := harness.Crane(t)
		skopeo := harness.Skopeo(t)
		reg := tg.Start(t)

		a := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", imageLayers, layerSize)
		aRef := reg.Addr() + "/" + repoName(t, "a") + ":v1"
		crane.Must(t, "push", "--insecure", harness.WriteDockerArchive(t, a, "wharf-e2e.test/a:v1"), aRef)
		b := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", imageLayers, layerSize)
		bRef := reg.Addr() + "/" + repoName(t, "b") + ":v1"
		skopeo.Must(t, "copy", "--dest-tls-verify=false", "--preserve-digests", "oci:"+harness.WriteOCILayout(t, "v1", b)+":v1", "docker://"+bRef)
		idx := harness.RandomIndex(t, []string{"linux/amd64", "linux/arm64/v8"}, 1, 256<<10)
		idxRef := reg.Addr() + "/" + repoName(t, "multi") + ":v1"
		crane.Must(t, "push", "--insecure", harness.WriteOCILayout(t, "multi", idx), idxRef)

		verify := func(when string) {
			t.Helper()
			t.Logf("verifying after %s", when)
			harness.VerifyRemoteImage(t, aRef, a, harness.Exact)
			harness.VerifyRemoteImage(t, bRef, b, harness.Exact)
			harness.VerifyRemoteIndex(t, idxRef, idx)
			if tags := strings.Fields(crane.Must(t, "ls", "--insecure", reg.Addr()+"/"+repoName(t, "a"))); len(tags) != 1 || tags[0] != "v1" {
				t.Errorf("after %s: tags of a: %v, want [v1]", when, tags)
			}
		}
		verify("push")
		reg.Restart(t)
		verify("graceful restart")
		reg.Kill(t)
		reg.Start(t)
		verify("kill -9 and start")
	})
}

// pushResult records one push attempt of the crash test.
type pushResult struct {
	worker, n int
	client    string
	ref       string
	img       v1.Image
	same      harness.Same
	acked     bool // the client exited 0
	err       error
}

// TestKillDuringConcurrentPushes: several crane and skopeo pushes run in
// parallel; wharf gets kill -9 while some are in flight. After a restart,
// every push that was acknowledged (client exited 0) pulls and verifies
// byte for byte, every tag that exists at all resolves to a complete image,
// and the interrupted pushes succeed when retried.
func TestKillDuringConcurrentPushes(t *testing.T) {
	harness.ForEachTarget(t, func(t *testing.T, tg harness.Target) {
		crane := harness.Crane(t)
		skopeo := harness.Skopeo(t)
		reg := tg.Start(t)

		const (
			workers      = 4
			perWorker    = 6
			killAfterAck = 5
		)
		// Prepare every image and its on-disk form before the clock starts.
		type job struct {
			client, src, ref string
			img              v1.Image
			same             harness.Same
		}
		jobs := make([][]job, workers)
		for w := range workers {
			for n := range perWorker {
				ref := fmt.Sprintf("%s/%s:w%dn%d", reg.Addr(), repoName(t, fmt.Sprintf("w%d", w)), w, n)
				if w%2 == 0 {
					img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", imageLayers, layerSize)
					jobs[w] = append(jobs[w], job{"crane", harness.WriteDockerArchive(t, img, "wharf-e2e.test/crash:v1"), ref, img, harness.Exact})
				} else {
					img := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", imageLayers, layerSize)
					jobs[w] = append(jobs[w], job{"skopeo", harness.WriteOCILayout(t, "v1", img), ref, img, harness.Exact})
				}
			}
		}

		var (
			mu      sync.Mutex
			results []*pushResult
			acked   int
			killed  bool
			ackCh   = make(chan struct{}, workers*perWorker)
		)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n, j := range jobs[w] {
					mu.Lock()
					stop := killed
					mu.Unlock()
					if stop {
						return
					}
					var args []string
					tool := crane
					if j.client == "crane" {
						args = []string{"push", "--insecure", j.src, j.ref}
					} else {
						tool = skopeo
						args = []string{"copy", "--dest-tls-verify=false", "--preserve-digests", "--retry-times=0", "oci:" + j.src + ":v1", "docker://" + j.ref}
					}
					r := &pushResult{worker: w, n: n, client: j.client, ref: j.ref, img: j.img, same: j.same}
					mu.Lock()
					results = append(results, r)
					mu.Unlock()
					out, err := tool.Command(ctx, args...).CombinedOutput()
					mu.Lock()
					if err == nil {
						r.acked = true
						acked++
					} else {
						r.err = fmt.Errorf("%w: %s", err, lastLine(string(out)))
					}
					mu.Unlock()
					if err == nil {
						ackCh <- struct{}{}
					}
				}
			}()
		}

		// Kill once enough pushes were acknowledged, while the rest run.
		for range killAfterAck {
			select {
			case <-ackCh:
			case <-ctx.Done():
				t.Fatalf("only some pushes finished before the test's time bound")
			}
		}
		mu.Lock()
		killed = true
		var inFlight []string
		for _, r := range results {
			if !r.acked && r.err == nil {
				inFlight = append(inFlight, r.ref)
			}
		}
		mu.Unlock()
		reg.Kill(t)
		t.Logf("killed %s after %d acknowledged pushes; in flight: %v", tg.Name, killAfterAck, inFlight)
		wg.Wait() // the in-flight clients fail (or finish if they got their last answer)

		reg.Start(t)
		var ackedN, failedN int
		for _, r := range results {
			if r.acked {
				ackedN++
				harness.VerifyRemoteImage(t, r.ref, r.img, r.same)
				continue
			}
			failedN++
			t.Logf("interrupted: %s push to %s: %v", r.client, r.ref, r.err)
			// Nothing partial may be visible: the tag is either unknown or
			// names a complete image.
			raw := harness.NewRawClient(reg.URL())
			repo, tag := splitRef(t, r.ref, reg.Addr())
			head := raw.Do(t, http.MethodHead, "/v2/"+repo+"/manifests/"+tag, http.Header{"Accept": {
				"application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"}}, nil)
			switch head.Status {
			case http.StatusNotFound:
			case http.StatusOK:
				harness.VerifyRemoteImage(t, r.ref, r.img, r.same)
			default:
				t.Errorf("HEAD %s after restart: %d, want 200 or 404", r.ref, head.Status)
			}
			// And a retry of the interrupted push succeeds.
			if r.client == "crane" {
				crane.Must(t, "push", "--insecure", filepath.Join(jobs[r.worker][r.n].src), r.ref)
			} else {
				skopeo.Must(t, "copy", "--dest-tls-verify=false", "--preserve-digests", "oci:"+jobs[r.worker][r.n].src+":v1", "docker://"+r.ref)
			}
			harness.VerifyRemoteImage(t, r.ref, r.img, r.same)
		}
		t.Logf("%d pushes acknowledged and verified after kill -9 + restart, %d interrupted", ackedN, failedN)
		if ackedN < killAfterAck {
			t.Errorf("only %d acknowledged pushes recorded, want at least %d", ackedN, killAfterAck)
		}
		if len(inFlight) == 0 {
			t.Errorf("no push was in flight at the kill; the test proved nothing about interrupted pushes")
		}
	})
}

// splitRef splits "addr/repo:tag" into repo and tag.
func splitRef(t *testing.T, ref, addr string) (string, string) {
	t.Helper()
	rest, ok := strings.CutPrefix(ref, addr+"/")
	if !ok {
		t.Fatalf("reference %s is not on %s", ref, addr)
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		t.Fatalf("reference %s has no tag", ref)
	}
	return rest[:i], rest[i+1:]
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
