package cluster_test

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/backend/storage/s3store"
	"github.com/wharf-dev/wharf/cleanup"
	"github.com/wharf-dev/wharf/e2e/harness"
)

// TestGCSkipsWhileLeaseHeld: another collection (here the test itself,
// as a second instance would) holds the bucket's gc lease; `wharf gc`
// on an instance's config then removes nothing, says who holds the
// lease and until when, and exits 0. A dry run needs no lease. Once the
// lease is released, `wharf gc` collects the garbage.
func TestGCSkipsWhileLeaseHeld(t *testing.T) {
	c := startCluster(t, 1)
	crane := harness.Crane(t)
	raw := harness.NewRawClient("http://" + c.lb.Addr)
	img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 1, 64<<10)
	crane.Must(t, "push", "--insecure", harness.WriteDockerArchive(t, img, "wharf-e2e.test/lease:x"), c.lb.Addr+"/lease/old:v1")
	d := harness.MustDigest(t, img)
	if r := raw.Do(t, http.MethodDelete, "/v2/lease/old/manifests/"+d.String(), nil, nil); r.Status != http.StatusAccepted {
		t.Fatalf("DELETE: %d %s", r.Status, r.Body)
	}
	past := time.Now().Add(-2 * time.Hour)
	if err := filepath.WalkDir(filepath.Join(c.gw.Dir, bucket), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		return os.Chtimes(p, past, past)
	}); err != nil {
		t.Fatal(err)
	}
	cfgBlob := fmt.Sprintf("/v2/lease/old/blobs/%s", harness.MustDigestOf(t, img.ConfigName))

	holder, err := s3store.New(context.Background(), s3store.Options{
		Config:    s3store.Config{Bucket: bucket, Prefix: "127.0.0.1", Endpoint: c.gw.Endpoint, PathStyle: true, Region: "us-east-1"},
		AccessKey: c.gw.AccessKey, SecretKey: c.gw.SecretKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	_, release, err := cleanup.LockStore(context.Background(), holder, "e2e holder")
	if err != nil {
		t.Fatal(err)
	}
	gc := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(harness.WharfBinary(t), append([]string{"gc", "-config", c.instances[0].ConfigPath}, args...)...).CombinedOutput()
		t.Logf("$ wharf gc %s\n%s", strings.Join(args, " "), out)
		if err != nil {
			t.Fatalf("wharf gc %v: %v", args, err)
		}
		return string(out)
	}
	out := gc()
	if !strings.Contains(out, "skipped: gc already running on "+bucket+"/127.0.0.1 (held by ") || !strings.Contains(out, "(e2e holder) until ") {
		t.Fatalf("wharf gc while the lease is held does not say so:\n%s", out)
	}
	if strings.Contains(out, "removed") {
		t.Fatalf("wharf gc removed something without the lease:\n%s", out)
	}
	if r := raw.Do(t, http.MethodHead, cfgBlob, nil, nil); r.Status != http.StatusOK {
		t.Fatalf("HEAD %s while the lease is held: %d", cfgBlob, r.Status)
	}
	if out := gc("-dry-run"); !strings.Contains(out, "would remove blob") {
		t.Fatalf("dry run while the lease is held:\n%s", out)
	}
	release()
	if out := gc(); !strings.Contains(out, "removed blob") {
		t.Fatalf("wharf gc after release removed no blob:\n%s", out)
	}
	if r := raw.Do(t, http.MethodHead, cfgBlob, nil, nil); r.Status != http.StatusNotFound {
		t.Fatalf("HEAD %s after gc: %d, want 404", cfgBlob, r.Status)
	}
}
