package registry_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// TestServeWithoutConfig: plain `wharf serve` in an empty folder is a
// registry on 127.0.0.1:5000 keeping its data in ./wharf-data, tells the
// user how to push, and keeps the data across a restart.
func TestServeWithoutConfig(t *testing.T) {
	if !harness.WharfEnabled(t) {
		t.Skip("wharf is not among WHARF_E2E_TARGETS")
	}
	crane := harness.Crane(t)
	dir := t.TempDir()
	w := harness.StartWharfNoConfig(t, dir)

	img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 256<<10)
	ref := harness.DefaultAddr + "/" + repoName(t, "dev") + ":v1"
	crane.Must(t, "push", "--insecure", harness.WriteDockerArchive(t, img, "wharf-e2e.test/dev:v1"), ref)
	harness.VerifyRemoteImage(t, ref, img, harness.Exact)

	data := filepath.Join(dir, "wharf-data")
	if n := countFiles(t, data); n == 0 {
		t.Fatalf("no files under %s after a push", data)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 1 {
		t.Errorf("working folder holds %d entries (%v), want only wharf-data", len(entries), err)
	}
	if log := w.Log(); !strings.Contains(log, harness.DefaultAddr) || !strings.Contains(log, "push") {
		t.Errorf("wharf's start-up output does not tell the user how to push to %s:\n%s", harness.DefaultAddr, log)
	}

	w.Restart(t)
	harness.VerifyRemoteImage(t, ref, img, harness.Exact)
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return n
}
