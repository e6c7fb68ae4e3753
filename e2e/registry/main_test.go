// Package registry_test runs real clients (docker, podman, skopeo, crane)
// against wharf's embedded registry (issue #2) over plain HTTP. Set
// WHARF_E2E_TARGETS=docker-registry (or all) to run the same suite against
// Debian's docker-registry as a reference.
package registry_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/wharf-dev/wharf/e2e/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// Test images are small: a few MiB keep the suite inside its CI budget while
// still spanning several layers and several upload requests.
const (
	imageLayers = 3
	layerSize   = 1 << 20
)

// repoName makes a repository name unique to a (sub)test, because the
// dockerd and its image store are shared by the whole test binary.
func repoName(t *testing.T, suffix string) string {
	n := strings.ToLower(t.Name())
	n = strings.NewReplacer("/", "-", "_", "-").Replace(n)
	return "e2e/" + n + "/" + suffix
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
