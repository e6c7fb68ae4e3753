package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// DockerRegistry is a running Debian docker-registry (distribution 2.8), the
// reference registry: a baseline for wharf and an upstream for the cache and
// proxy backends.
type DockerRegistry struct {
	*Process
	// Root is the filesystem storage root.
	Root string
	// HTTPAddr is the plain-HTTP listen address.
	HTTPAddr string
}

// StartDockerRegistry starts docker-registry on a free loopback port with
// filesystem storage in a temp folder and deletes enabled, and stops it when
// t ends. extraYAML is appended to the config (top-level keys only).
func StartDockerRegistry(t testing.TB, extraYAML string) *DockerRegistry {
	t.Helper()
	bin := Require(t, "docker-registry")
	dir := t.TempDir()
	r := &DockerRegistry{Root: filepath.Join(dir, "storage"), HTTPAddr: FreeAddr(t)}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: wharf-e2e-fixed-secret
  draintimeout: 10s
  headers:
    X-Content-Type-Options: [nosniff]
%s`, r.Root, r.HTTPAddr, extraYAML)
	path := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatalf("write docker-registry config: %v", err)
	}
	r.Process = &Process{
		Name:       "docker-registry",
		Path:       bin,
		Args:       []string{"serve", path},
		Dir:        dir,
		ReadyAddrs: []string{r.HTTPAddr},
		LogPath:    filepath.Join(dir, "docker-registry.log"),
	}
	StartProcess(t, r.Process)
	return r
}

// Addr is the registry host ("127.0.0.1:port").
func (r *DockerRegistry) Addr() string { return r.HTTPAddr }

// URL is the base URL.
func (r *DockerRegistry) URL() string { return "http://" + r.HTTPAddr }

// Name identifies the server in test names.
func (r *DockerRegistry) Name() string { return "docker-registry" }
