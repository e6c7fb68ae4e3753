package harness

import (
	"os"
	"path/filepath"
	"testing"
)

// VersityGW is a running versitygw: a real S3 server (the S3 API over a
// POSIX directory) for wharf's S3 storage. It is installed by .ci/install
// (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0).
type VersityGW struct {
	*Process
	// Dir is the directory versitygw serves; every subdirectory is a
	// bucket.
	Dir string
	// Addr is the loopback address of the S3 API (plain HTTP); Endpoint
	// is it as a URL.
	Addr, Endpoint string
	// AccessKey and SecretKey are the root account's credentials.
	AccessKey, SecretKey string
}

// Fixed test credentials of the root account: versitygw only ever listens
// on loopback in tests.
const (
	VersityAccessKey = "wharf-test-access"
	VersitySecretKey = "wharf-test-secret-0123456789"
)

// StartVersityGW starts versitygw on a free loopback port over a temp
// folder with the given buckets created, and stops it when t ends. A
// missing versitygw ends the test through MissingPeer.
func StartVersityGW(t testing.TB, buckets ...string) *VersityGW {
	t.Helper()
	return startVersityGW(t, false, buckets)
}

// StartVersityGWKeepAlive is StartVersityGW with HTTP keep-alive on
// (versitygw closes every connection after one answer by default; AWS
// S3, MinIO and Ceph keep them open): for tests of connection reuse.
func StartVersityGWKeepAlive(t testing.TB, buckets ...string) *VersityGW {
	t.Helper()
	return startVersityGW(t, true, buckets)
}

func startVersityGW(t testing.TB, keepAlive bool, buckets []string) *VersityGW {
	t.Helper()
	bin := Require(t, "versitygw")
	dir := t.TempDir()
	g := &VersityGW{
		Dir:       filepath.Join(dir, "s3"),
		Addr:      FreeAddr(t),
		AccessKey: VersityAccessKey,
		SecretKey: VersitySecretKey,
	}
	g.Endpoint = "http://" + g.Addr
	for _, b := range buckets {
		// A bucket of the posix backend is a directory of its root.
		if err := os.MkdirAll(filepath.Join(g.Dir, b), 0o755); err != nil {
			t.Fatalf("create bucket %s: %v", b, err)
		}
	}
	args := []string{"--access", g.AccessKey, "--secret", g.SecretKey, "--port", g.Addr}
	if keepAlive {
		args = append(args, "--keep-alive")
	}
	g.Process = &Process{
		Name:       "versitygw",
		Path:       bin,
		Args:       append(args, "posix", "--sidecar", filepath.Join(dir, "meta"), g.Dir),
		Dir:        dir,
		ReadyAddrs: []string{g.Addr},
		LogPath:    filepath.Join(dir, "versitygw.log"),
	}
	if err := os.MkdirAll(filepath.Join(dir, "meta"), 0o755); err != nil {
		t.Fatal(err)
	}
	StartProcess(t, g.Process)
	return g
}
