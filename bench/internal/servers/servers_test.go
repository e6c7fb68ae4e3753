package servers

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/internal/testpeer"
)

func testEnv(t *testing.T) *Env {
	t.Helper()
	for _, b := range []string{"nginx", "docker-registry"} {
		if _, err := exec.LookPath(b); err != nil {
			testpeer.Missing(t, "%s not installed", b)
		}
	}
	ng, _ := exec.LookPath("nginx")
	dr, _ := exec.LookPath("docker-registry")
	return &Env{TempRoot: t.TempDir(), DockerRegistryBin: dr, NginxBin: ng, Poll: &http.Client{Timeout: 2 * time.Second}}
}

// TestNginxStaticAndStop starts nginx serving a file, checks the file
// comes back, that the group holds master and workers, and that Stop ends
// them and removes the stack's folder.
func TestNginxStaticAndStop(t *testing.T) {
	e := testEnv(t)
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "f.bin"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, base, err := e.NginxStatic(context.Background(), root, "127.0.0.1", "", "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(base + "/f.bin")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != 5 {
		t.Fatalf("GET f.bin: %s, length %d", resp.Status, resp.ContentLength)
	}
	g := st.Group()
	if len(g) < 2 {
		t.Fatalf("group %v: want master and at least one worker", g)
	}
	if _, err := g.PeakRSS(); err != nil {
		t.Fatal(err)
	}
	st.Stop(false)
	if _, err := os.Stat(st.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stack folder left behind: %v", err)
	}
	// Workers die with their process group; give the kernel a moment.
	for _, pid := range g {
		for i := 0; i < 100 && running(pid); i++ {
			time.Sleep(50 * time.Millisecond)
		}
		if running(pid) {
			t.Errorf("process %d still running 5 s after Stop", pid)
		}
	}
}

// TestDockerRegistryAnswers starts registry 2.8 and pings /v2/.
func TestDockerRegistryAnswers(t *testing.T) {
	e := testEnv(t)
	st, base, err := e.DockerRegistry(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Stop(false)
	resp, err := http.Get(base + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
		t.Fatalf("ping: %s %v", resp.Status, resp.Header)
	}
}

// TestWharfUnavailable checks that a wharf that exits at once is reported
// as not available, not as a suite failure.
func TestWharfUnavailable(t *testing.T) {
	e := testEnv(t)
	e.WharfBin = "/bin/false"
	_, _, err := e.Wharf(context.Background(), WharfSpec{Backend: "registry", Host: "127.0.0.1"})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	e.WharfBin = ""
	if _, _, err := e.Wharf(context.Background(), WharfSpec{Backend: "registry"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("no binary: err = %v, want ErrUnavailable", err)
	}
}

// running reports whether pid exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "State:") {
			return !strings.ContainsAny(l, "ZX")
		}
	}
	return true
}
