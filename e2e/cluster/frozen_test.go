package cluster_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// TestFrozenS3 stops versitygw with SIGSTOP: it keeps its connections
// and its listening socket but answers nothing, as a hung S3 server or
// a route that drops packets. Every request to every instance must end
// with 503 UNAVAILABLE (the registry's own waits, at most a minute), not
// wait for minio-go's ten tries of a minute each; after SIGCONT pushes
// and pulls work again and nothing pushed before is lost.
func TestFrozenS3(t *testing.T) {
	c := startCluster(t, 2)
	crane := harness.Crane(t)
	img := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 2, 1<<20)
	tar := harness.WriteDockerArchive(t, img, "wharf-e2e.test/frozen/a:v1")
	if out, err := crane.Run(t, "push", "--insecure", tar, c.lb.Addr+"/frozen/a:v1"); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	layer, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}

	c.gw.Signal(t, syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			c.gw.Signal(t, syscall.SIGCONT)
		}
	}()
	type req struct{ method, path string }
	reqs := []req{
		{"GET", "/v2/frozen/a/manifests/v1"},
		{"HEAD", "/v2/frozen/a/blobs/" + layer.String()},
		{"GET", "/v2/frozen/a/blobs/" + layer.String()},
		{"POST", "/v2/frozen/b/blobs/uploads/"},
		{"GET", "/v2/frozen/a/tags/list"},
	}
	// The client's own limit is far above the registry's waits: it
	// only turns a hang into a failure.
	client := &http.Client{Timeout: 4 * time.Minute}
	var wg sync.WaitGroup
	for _, w := range c.instances {
		for _, r := range reqs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				hr, _ := http.NewRequest(r.method, "http://"+w.Addr()+r.path, nil)
				hr.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
				resp, err := client.Do(hr)
				if err != nil {
					t.Errorf("%s %s on %s with S3 frozen: %v", r.method, r.path, w.Addr(), err)
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Logf("%s %s: %d after %s", r.method, r.path, resp.StatusCode, time.Since(start).Round(100*time.Millisecond))
				if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
					r.method != "HEAD" && !strings.Contains(string(body), `"UNAVAILABLE"`) {
					t.Errorf("%s %s with S3 frozen: %d %q (Retry-After %q), want 503 UNAVAILABLE",
						r.method, r.path, resp.StatusCode, body, resp.Header.Get("Retry-After"))
				}
			}()
		}
	}
	wg.Wait()

	c.gw.Signal(t, syscall.SIGCONT)
	stopped = false
	img2 := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 2, 1<<20)
	tar2 := harness.WriteDockerArchive(t, img2, "wharf-e2e.test/frozen/b:v1")
	if out, err := crane.Run(t, "push", "--insecure", tar2, c.lb.Addr+"/frozen/b:v1"); err != nil {
		t.Fatalf("push after SIGCONT: %v\n%s", err, out)
	}
	for i, w := range c.instances {
		harness.VerifyRemoteImage(t, w.Addr()+"/frozen/a:v1", img, harness.Same{Config: true})
		harness.VerifyRemoteImage(t, w.Addr()+"/frozen/b:v1", img2, harness.Same{Config: true})
		t.Logf("instance %d serves both images", i)
	}
}

// TestS3RestartDuringPushes kills the S3 server (SIGKILL) while pushes
// run through the balancer to three instances and starts it again three
// seconds later on the same directory. The instances answer 503 in
// between; crane's retries (and a new crane run when one gives up)
// finish every push, and every image pulls back byte-identical from
// every instance.
func TestS3RestartDuringPushes(t *testing.T) {
	lb := pushesWhile(t, "S3 restart", func(c *cluster, _ *harness.Wharf) {
		c.gw.Kill(t)
		time.Sleep(3 * time.Second)
		c.gw.Start(t)
	}, false, false)
	// Those answers come after minio-go's retries, so only once every
	// push has ended.
	if !strings.Contains(lb, " 503 ") {
		t.Error("no request got 503 while S3 was down: the pushes had ended before")
	}
}
