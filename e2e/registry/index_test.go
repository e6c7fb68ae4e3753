package registry_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// TestMultiPlatformIndex: an OCI index of two platform images is pushed
// with `crane push`, copied registry to registry with `skopeo copy --all`
// and with `crane copy`, and pulled back out with `skopeo copy --all`; the
// index and every child stay byte-identical at each step.
func TestMultiPlatformIndex(t *testing.T) {
	harness.ForEachTarget(t, func(t *testing.T, tg harness.Target) {
		skopeo := harness.Skopeo(t)
		crane := harness.Crane(t)
		reg := tg.Start(t)
		idx := harness.RandomIndex(t, []string{"linux/amd64", "linux/arm64/v8"}, 2, 512<<10)
		want := harness.MustDigest(t, idx)
		dir := harness.WriteOCILayout(t, "multi", idx)

		first := reg.Addr() + "/" + repoName(t, "multi") + ":crane"
		out := strings.TrimSpace(crane.Must(t, "push", "--insecure", dir, first))
		if !strings.HasSuffix(out, "@"+want.String()) {
			t.Fatalf("crane push printed %q, want a reference ending in @%s", out, want)
		}
		harness.VerifyRemoteIndex(t, first, idx)

		second := reg.Addr() + "/" + repoName(t, "copy") + ":skopeo"
		skopeo.Must(t, "copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false", "docker://"+first, "docker://"+second)
		harness.VerifyRemoteIndex(t, second, idx)

		third := reg.Addr() + "/" + repoName(t, "copy2") + ":crane"
		crane.Must(t, "copy", "--insecure", second, third)
		harness.VerifyRemoteIndex(t, third, idx)
		harness.VerifyRemoteIndex(t, reg.Addr()+"/"+repoName(t, "copy2")+"@"+want.String(), idx)

		back := filepath.Join(t.TempDir(), "back")
		skopeo.Must(t, "copy", "--all", "--preserve-digests", "--src-tls-verify=false", "docker://"+third, "oci:"+back+":back")
		desc, layoutIdx := harness.ReadOCILayout(t, back, "back")
		if desc.Digest != want {
			t.Fatalf("index pulled back has digest %s, pushed %s", desc.Digest, want)
		}
		got, err := layoutIdx.ImageIndex(desc.Digest)
		if err != nil {
			t.Fatalf("index in layout: %v", err)
		}
		if err := harness.CompareIndexes(got, idx); err != nil {
			t.Fatalf("index pulled back differs: %v", err)
		}
	})
}
