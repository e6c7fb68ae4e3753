package registry_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// TestConcurrentPushesOfSameBlobs: several clients push the same image at
// once, to the same tag, to other repositories, with crane and skopeo. All
// of them succeed and every copy verifies: the same blob uploaded twice at
// once must not fail or corrupt either upload.
func TestConcurrentPushesOfSameBlobs(t *testing.T) {
	harness.ForEachTarget(t, func(t *testing.T, tg harness.Target) {
		tg.SkipIfBroken(t, harness.FeatureConcurrentSameBlob)
		crane := harness.Crane(t)
		skopeo := harness.Skopeo(t)
		reg := tg.Start(t)
		img := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", imageLayers, layerSize)
		tar := harness.WriteDockerArchive(t, img, "wharf-e2e.test/same:v1")
		dir := harness.WriteOCILayout(t, "v1", img)

		shared := reg.Addr() + "/" + repoName(t, "shared") + ":v1"
		type push struct {
			tool *harness.Tool
			args []string
			ref  string
		}
		var pushes []push
		for i := range 3 {
			pushes = append(pushes,
				push{crane, []string{"push", "--insecure", tar, shared}, shared},
				push{skopeo, []string{"copy", "--dest-tls-verify=false", "--preserve-digests", "oci:" + dir + ":v1", "docker://" + shared}, shared})
			other := fmt.Sprintf("%s/%s:v1", reg.Addr(), repoName(t, fmt.Sprintf("other%d", i)))
			pushes = append(pushes, push{crane, []string{"push", "--insecure", tar, other}, other})
		}
		// The crane tarball and the OCI layout hold the same layer blobs;
		// only the manifests differ (Docker vs OCI media types), so the
		// shared tag ends up naming one of the two.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		errs := make([]error, len(pushes))
		var wg sync.WaitGroup
		for i, p := range pushes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if out, err := p.tool.Command(ctx, p.args...).CombinedOutput(); err != nil {
					errs[i] = fmt.Errorf("%s %v: %w\n%s", p.tool.Name, p.args, err, out)
				}
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
		for _, p := range pushes {
			harness.VerifyRemoteImage(t, p.ref, img, harness.Same{LayerBlobs: true, Config: true})
		}
	})
}
