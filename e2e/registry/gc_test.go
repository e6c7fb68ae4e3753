package registry_test

import (
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// TestGCWhileServing: crane pushes an image, a second one built on top of
// it (sharing its layers, in another repository) and an unrelated one.
// The first and the unrelated one are deleted by digest through the API.
// `wharf gc -config` runs while wharf serves: -dry-run lists exactly the
// freed blobs and removes nothing; the real run removes them (their files
// are gone, HEAD says 404), and the second image still pulls completely
// with crane and verifies byte for byte. The deleted image can be pushed
// again afterwards.
func TestGCWhileServing(t *testing.T) {
	if !harness.WharfEnabled(t) {
		t.Skip("wharf is not among WHARF_E2E_TARGETS")
	}
	crane := harness.Crane(t)
	w := harness.StartWharf(t, harness.RegistryConfig)
	raw := harness.NewRawClient(w.URL())
	repoA, repoB := repoName(t, "a"), repoName(t, "b")

	base := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 256<<10)
	extra, err := random.Layer(256<<10, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	derived, err := mutate.AppendLayers(base, extra)
	if err != nil {
		t.Fatal(err)
	}
	unrelated := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 256<<10)
	push := func(img v1.Image, ref string) {
		crane.Must(t, "push", "--insecure", harness.WriteDockerArchive(t, img, "wharf-e2e.test/gc:x"), w.Addr()+"/"+ref)
	}
	push(base, repoA+":base")
	push(unrelated, repoA+":unrelated")
	push(derived, repoB+":v1")

	// freed: base's manifest and config, all of unrelated
	var freed []v1.Hash
	for _, img := range []v1.Image{base, unrelated} {
		d := harness.MustDigest(t, img)
		if r := raw.Do(t, http.MethodDelete, "/v2/"+repoA+"/manifests/"+d.String(), nil, nil); r.Status != http.StatusAccepted {
			t.Fatalf("DELETE manifest %s: %d %s", d, r.Status, r.Body)
		}
		freed = append(freed, d, harness.MustDigestOf(t, img.ConfigName))
	}
	ls, err := unrelated.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		freed = append(freed, harness.MustDigestOf(t, l.Digest))
	}

	// Everything so far is older than the default grace period of 1h.
	root := filepath.Join(w.Config.DataDir, "registry")
	past := time.Now().Add(-2 * time.Hour)
	if err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		return os.Chtimes(p, past, past)
	}); err != nil {
		t.Fatal(err)
	}
	blobFile := func(h v1.Hash) string {
		return filepath.Join(root, "blobs", h.Algorithm, h.Hex[:2], h.Hex)
	}
	gc := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(harness.WharfBinary(t), append([]string{"gc", "-config", w.ConfigPath}, args...)...)
		out, err := cmd.CombinedOutput()
		t.Logf("$ wharf gc %s\n%s", strings.Join(args, " "), out)
		if err != nil {
			t.Fatalf("wharf gc %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	checkListed := func(out, verb string) {
		t.Helper()
		if n := strings.Count(out, verb+" blob "); n != len(freed) {
			t.Errorf("%d blobs listed, want %d", n, len(freed))
		}
		for _, h := range freed {
			if !strings.Contains(out, verb+" blob "+h.String()) {
				t.Errorf("blob %s not listed as %q", h, verb)
			}
		}
	}

	out := gc("-dry-run")
	checkListed(out, "would remove")
	for _, h := range freed {
		if _, err := os.Stat(blobFile(h)); err != nil {
			t.Fatalf("dry run removed %s: %v", h, err)
		}
	}

	out = gc()
	checkListed(out, "removed")
	if !strings.Contains(out, "removed 0 manifests, 6 blobs") {
		t.Errorf("summary missing or wrong:\n%s", out)
	}
	for _, h := range freed {
		if _, err := os.Stat(blobFile(h)); !os.IsNotExist(err) {
			t.Errorf("freed blob %s still on disk: %v", h, err)
		}
	}
	for _, l := range ls {
		d := harness.MustDigestOf(t, l.Digest)
		if r := raw.Do(t, http.MethodHead, "/v2/"+repoA+"/blobs/"+d.String(), nil, nil); r.Status != http.StatusNotFound {
			t.Errorf("HEAD freed layer %s: %d, want 404", d, r.Status)
		}
	}

	// the image that shares base's layers pulls completely and verifies
	ref := w.Addr() + "/" + repoB + ":v1"
	crane.Must(t, "pull", "--insecure", ref, filepath.Join(t.TempDir(), "v1.tar"))
	crane.Must(t, "validate", "--insecure", "--remote", ref)
	harness.VerifyRemoteImage(t, ref, derived, harness.Exact)

	// a second run finds nothing; the deleted image can be pushed again
	if out := gc(); strings.Contains(out, "removed blob") {
		t.Errorf("second run removed more:\n%s", out)
	}
	push(unrelated, repoA+":again")
	harness.VerifyRemoteImage(t, w.Addr()+"/"+repoA+":again", unrelated, harness.Exact)
}
