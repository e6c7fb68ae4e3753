// Package cluster_test runs several `wharf serve` processes with one
// config on one S3 bucket (versitygw) behind Debian's nginx doing
// round-robin (issue #15): uploads continue across instances, images
// pushed through the balancer pull back byte-identical from every
// instance, and a kill -9 of one instance during pushes loses nothing a
// client was told was stored.
package cluster_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/wharf-dev/wharf/e2e/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

const bucket = "wharf"

// config is one instance's gateway.toml: the same for every instance but
// data_dir and the listen address.
const config = `data_dir = "{{.DataDir}}"

[listen]
http  = "{{.HTTP}}"
https = ""
admin = ""

[cluster]
shared_dir = "{{.Vars.Shared}}"

[[site]]
host    = "127.0.0.1"
backend = "registry"
tls     = "off"
[site.registry]
storage = "s3"
delete  = true
[site.registry.s3]
bucket          = "` + bucket + `"
endpoint        = "{{.Vars.Endpoint}}"
path_style      = true
access_key_file = "{{.Vars.AccessFile}}"
secret_key_file = "{{.Vars.SecretFile}}"
`

type cluster struct {
	gw        *harness.VersityGW
	instances []*harness.Wharf
	lb        *harness.Nginx
}

// startCluster starts versitygw, n wharf instances on it and nginx in
// front of them.
func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	return startClusterConfig(t, n, config)
}

// startClusterConfig is startCluster with another config template.
func startClusterConfig(t *testing.T, n int, config string) *cluster {
	t.Helper()
	harness.Require(t, "nginx")
	gw := harness.StartVersityGW(t, bucket)
	dir := t.TempDir()
	vars := map[string]any{
		"Endpoint":   gw.Endpoint,
		"Shared":     filepath.Join(dir, "shared"),
		"AccessFile": filepath.Join(dir, "access"),
		"SecretFile": filepath.Join(dir, "secret"),
	}
	for f, v := range map[string]string{"access": gw.AccessKey, "secret": gw.SecretKey} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := &cluster{gw: gw}
	var addrs []string
	for i := 0; i < n; i++ {
		w := harness.StartWharf(t, config, harness.WithVars(vars))
		c.instances = append(c.instances, w)
		addrs = append(addrs, w.Addr())
	}
	c.lb = harness.StartNginx(t, addrs...)
	return c
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestUploadContinuesOnAnotherInstance drives one chunked upload over
// three instances (POST on the first, a PATCH on each of the others, PUT
// on the first) and reads the blob back from every instance.
func TestUploadContinuesOnAnotherInstance(t *testing.T) {
	c := startCluster(t, 3)
	clients := make([]*harness.RawClient, len(c.instances))
	for i, w := range c.instances {
		clients[i] = harness.NewRawClient(w.URL())
	}
	chunks := [][]byte{randomBytes(t, 6<<20), randomBytes(t, 1<<20+17)}
	all := bytes.Join(chunks, nil)
	d := digest.FromBytes(all)

	r := clients[0].Do(t, "POST", "/v2/team/app/blobs/uploads/", nil, nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("POST: %d %s", r.Status, r.Body)
	}
	loc := r.Header.Get("Location")
	off := 0
	for i, ch := range chunks {
		cl := clients[1+i]
		h := http.Header{
			"Content-Type":  {"application/octet-stream"},
			"Content-Range": {fmt.Sprintf("%d-%d", off, off+len(ch)-1)},
		}
		r := cl.Do(t, "PATCH", loc, h, ch)
		if r.Status != http.StatusAccepted {
			t.Fatalf("PATCH %d on instance %d: %d %s", i, 1+i, r.Status, r.Body)
		}
		off += len(ch)
		if got, want := r.Header.Get("Range"), fmt.Sprintf("0-%d", off-1); got != want {
			t.Fatalf("PATCH %d: Range %q, want %q", i, got, want)
		}
		loc = r.Header.Get("Location")
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	r = clients[0].Do(t, "PUT", loc+sep+"digest="+string(d), nil, nil)
	if r.Status != http.StatusCreated {
		t.Fatalf("PUT: %d %s", r.Status, r.Body)
	}
	for i, cl := range clients {
		r := cl.Do(t, "GET", "/v2/team/app/blobs/"+string(d), nil, nil)
		if r.Status != http.StatusOK || !bytes.Equal(r.Body, all) {
			t.Fatalf("instance %d: GET blob: %d, %d bytes (want %d)", i, r.Status, len(r.Body), len(all))
		}
	}
}

// TestPushThroughBalancer pushes multi-layer images with crane, docker and skopeo through
// nginx (the requests of one push land on different instances) and pulls
// each back byte-identical from every instance.
func TestPushThroughBalancer(t *testing.T) {
	c := startCluster(t, 3)
	crane := harness.Crane(t)
	imgs := map[string]v1.Image{}
	for i := 0; i < 3; i++ {
		img := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 4, 1<<20)
		repo := fmt.Sprintf("lb/img%d:v1", i)
		crane.Must(t, "push", "--insecure", harness.WriteDockerArchive(t, img, "wharf-e2e.test/"+repo), c.lb.Addr+"/"+repo)
		imgs[repo] = img
	}
	// docker through the balancer too; it recompresses layers, so
	// contents and config are compared, as for crane.
	docker := harness.Docker(t)
	img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 3, 1<<20)
	src := "wharf-e2e.test/cluster-lb/docker:v1"
	docker.Must(t, "load", "-i", harness.WriteDockerArchive(t, img, src))
	dst := c.lb.Addr + "/lb/docker:v1"
	docker.Must(t, "tag", src, dst)
	docker.Must(t, "push", dst)
	imgs["lb/docker:v1"] = img
	// skopeo (containers/image, as podman and CRI-O push) keeps the
	// layers as they are.
	skopeo := harness.Skopeo(t)
	simg := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 3, 1<<20)
	dir := harness.WriteOCILayout(t, "v1", simg)
	skopeo.Must(t, "copy", "--dest-tls-verify=false", "--preserve-digests", "oci:"+dir+":v1", "docker://"+c.lb.Addr+"/lb/skopeo:v1")
	imgs["lb/skopeo:v1"] = simg
	used := c.lb.Backends(t)
	for _, w := range c.instances {
		if used[w.Addr()] == 0 {
			t.Fatalf("nginx sent no request to %s: %v", w.Addr(), used)
		}
	}
	for repo, img := range imgs {
		same := harness.Same{Config: true}
		if repo == "lb/skopeo:v1" {
			same = harness.Exact
		}
		for _, w := range c.instances {
			harness.VerifyRemoteImage(t, w.Addr()+"/"+repo, img, same)
		}
	}
}

// TestKillDuringPushes kills one of three instances with SIGKILL while
// six pushes run through the balancer. A push that fails is retried by
// its client (a new crane run); every push a client saw succeed must be
// complete on every instance, the killed one after its restart too.
func TestKillDuringPushes(t *testing.T) {
	pushesWhile(t, "kill -9", func(_ *cluster, w *harness.Wharf) { w.Kill(t) }, true, false)
}

// TestRestartAndReloadDuringPushes: SIGTERM (drain, exit) and a start
// again, and SIGHUP (reload), of one instance each in the middle of
// pushes through the balancer are not even seen by the clients: no
// request fails (nginx opens a connection per request, so one refused
// by a draining instance goes to the next) and no push is run again.
func TestRestartAndReloadDuringPushes(t *testing.T) {
	t.Run("SIGTERM", func(t *testing.T) {
		pushesWhile(t, "SIGTERM", func(_ *cluster, w *harness.Wharf) {
			if err := w.Stop(t); err != nil {
				t.Errorf("SIGTERM during pushes: %v", err)
			}
		}, true, true)
	})
	t.Run("SIGHUP", func(t *testing.T) {
		pushesWhile(t, "SIGHUP", func(_ *cluster, w *harness.Wharf) {
			w.Reload(t)
			for deadline := time.Now().Add(30 * time.Second); !strings.Contains(w.Log(), `"reloaded config"`); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("no reload logged after SIGHUP:\n%s", w.LogTail(4<<10))
				}
			}
		}, false, true)
	})
}

// pushesWhile runs six crane pushes of three-layer images through the
// balancer to three instances, does what (to the cluster or the victim
// instance) once the victim is taking an upload chunk, starts the victim
// again if restart, and checks that every push finished (crane retries,
// and a push is run again up to five times, a second apart) and pulls
// back byte-identical from every instance. graceful: no request may
// fail at all. It returns nginx's access log.
func pushesWhile(t *testing.T, what string, do func(c *cluster, victim *harness.Wharf), restart, graceful bool) string {
	c := startCluster(t, 3)
	crane := harness.Crane(t)
	const pushes = 6
	type job struct {
		repo, tar string
		img       v1.Image
	}
	jobs := make([]job, pushes)
	for i := range jobs {
		img := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 3, 4<<20)
		repo := fmt.Sprintf("pushes/img%d:v1", i)
		jobs[i] = job{repo: repo, tar: harness.WriteDockerArchive(t, img, "wharf-e2e.test/"+repo), img: img}
	}
	victim := c.instances[1]
	started := make(chan struct{}, pushes)
	var wg sync.WaitGroup
	fails := make([]int, pushes)
	errs := make([]string, pushes)
	for i := range jobs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			started <- struct{}{}
			for attempt := 0; attempt < 5; attempt++ {
				out, err := crane.Run(t, "push", "--insecure", jobs[i].tar, c.lb.Addr+"/"+jobs[i].repo)
				if err == nil {
					errs[i] = ""
					return
				}
				fails[i]++
				errs[i] = out
				time.Sleep(time.Second)
			}
		}(i)
	}
	// Kill as soon as every push has started and the victim has taken
	// a chunk of a layer: it is in the middle of pushes.
	for i := 0; i < pushes; i++ {
		<-started
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
poll:
	for {
		if strings.Contains(victim.Log(), `"method":"PATCH"`) {
			break
		}
		select {
		case <-allDone:
			break poll
		case <-time.After(10 * time.Millisecond):
		}
	}
	do(c, victim)
	wg.Wait()
	failed := 0
	for i := range jobs {
		if errs[i] != "" {
			t.Errorf("push %s failed 5 times, last: %s", jobs[i].repo, errs[i])
		}
		failed += fails[i]
	}
	lb, _ := os.ReadFile(c.lb.AccessLog)
	t.Logf("%s: crane runs that failed and were run again: %d; requests nginx answered 502 (cut) / 503 (storage down), retried by crane itself: %d / %d",
		what, failed, strings.Count(string(lb), " 502 "), strings.Count(string(lb), " 503 "))
	if n := strings.Count(string(lb), " 502 "); graceful && (failed > 0 || n > 0) {
		t.Errorf("%s is not graceful: %d crane runs failed, nginx answered 502 %d times", what, failed, n)
	}
	if restart {
		victim.Start(t)
	}
	for _, j := range jobs {
		for _, w := range c.instances {
			harness.VerifyRemoteImage(t, w.Addr()+"/"+j.repo, j.img, harness.Same{Config: true})
		}
	}
	return string(lb)
}

// TestUploadResumesAfterKill: an instance is killed (SIGKILL) while a
// PATCH body streams into it. The session on another instance still
// says exactly what was acknowledged before (the Range of a status GET),
// the client sends the rest from there to a third instance, and the
// committed blob is byte-identical: the cut chunk left nothing behind.
func TestUploadResumesAfterKill(t *testing.T) {
	c := startCluster(t, 3)
	a, b, z := c.instances[0], c.instances[1], c.instances[2]
	ca, cb, cz := harness.NewRawClient(a.URL()), harness.NewRawClient(b.URL()), harness.NewRawClient(z.URL())
	first, second := randomBytes(t, 6<<20), randomBytes(t, 20<<20)
	all := append(append([]byte{}, first...), second...)
	d := digest.FromBytes(all)

	r := ca.Do(t, "POST", "/v2/team/resume/blobs/uploads/", nil, nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("POST: %d %s", r.Status, r.Body)
	}
	loc := r.Header.Get("Location")
	h := http.Header{"Content-Type": {"application/octet-stream"}, "Content-Range": {fmt.Sprintf("0-%d", len(first)-1)}}
	if r = ca.Do(t, "PATCH", loc, h, first); r.Status != http.StatusAccepted {
		t.Fatalf("first PATCH: %d %s", r.Status, r.Body)
	}
	loc = r.Header.Get("Location")

	// The second chunk streams into a; a dies half-way.
	patch := ca.StartPatch(t, loc)
	patch.Write(t, second[:12<<20])
	a.Kill(t)
	patch.Cut(t)

	r = cb.Do(t, "GET", loc, nil, nil)
	if r.Status != http.StatusNoContent {
		t.Fatalf("status on b: %d %s", r.Status, r.Body)
	}
	if got, want := r.Header.Get("Range"), fmt.Sprintf("0-%d", len(first)-1); got != want {
		t.Fatalf("Range after the kill: %q, want %q (only the acknowledged chunk)", got, want)
	}
	h = http.Header{"Content-Type": {"application/octet-stream"}, "Content-Range": {fmt.Sprintf("%d-%d", len(first), len(all)-1)}}
	if r = cz.Do(t, "PATCH", loc, h, second); r.Status != http.StatusAccepted {
		t.Fatalf("PATCH of the rest on z: %d %s", r.Status, r.Body)
	}
	loc = r.Header.Get("Location")
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	if r = cb.Do(t, "PUT", loc+sep+"digest="+string(d), nil, nil); r.Status != http.StatusCreated {
		t.Fatalf("PUT on b: %d %s", r.Status, r.Body)
	}
	a.Start(t)
	for i, cl := range []*harness.RawClient{ca, cb, cz} {
		r := cl.Do(t, "GET", "/v2/team/resume/blobs/"+string(d), nil, nil)
		if r.Status != http.StatusOK || !bytes.Equal(r.Body, all) {
			t.Fatalf("instance %d: GET blob: %d, %d bytes (want %d)", i, r.Status, len(r.Body), len(all))
		}
	}
}
