package migrate

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// storageConfig is a registry site on the file system with the bucket it
// moves to already described: the state before the switch-over.
const storageConfig = `data_dir = "{{.DataDir}}"

[listen]
http  = "{{.HTTP}}"
https = ""
admin = ""

[[site]]
host    = "127.0.0.1"
backend = "registry"
tls     = "off"
[site.registry]
storage = "filesystem"
root    = "registry"
delete  = true
[site.registry.s3]
bucket          = "wharf"
prefix          = "moved"
endpoint        = "{{.Vars.Endpoint}}"
path_style      = true
access_key_file = "{{.Vars.AccessFile}}"
secret_key_file = "{{.Vars.SecretFile}}"
`

var migrateSummary = regexp.MustCompile(`copied (\d+) blobs \([^)]*\) and (\d+) records \((\d+) tags, (\d+) moved\) of (\d+) repositories; already there: (\d+) blobs, (\d+) records; (\d+) skipped`)

// migrateCounts is a migrate-storage summary line's numbers.
type migrateCounts struct {
	blobs, records, tags, moved, repos, blobsPresent, recordsPresent, skipped int
}

func runMigrate(t *testing.T, config, to string) migrateCounts {
	t.Helper()
	cmd := exec.Command(harness.WharfBinary(t), "migrate-storage", "-config", config, "-site", "127.0.0.1", "-to", to)
	out, err := cmd.CombinedOutput()
	t.Logf("wharf migrate-storage -to %s:\n%s", to, out)
	if err != nil {
		t.Fatalf("wharf migrate-storage: %v", err)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > 128<<10 {
		t.Errorf("wharf migrate-storage peaked at %d KiB RSS, above 128 MiB", ru.Maxrss)
	}
	m := migrateSummary.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no summary line in:\n%s", out)
	}
	n := make([]int, len(m)-1)
	for i, s := range m[1:] {
		n[i], _ = strconv.Atoi(s)
	}
	return migrateCounts{n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7]}
}

// editConfig replaces one line of the config file (the operator's edit).
func editConfig(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("%s has no %q", path, old)
	}
	if err := os.WriteFile(path, bytes.Replace(b, []byte(old), []byte(new), 1), 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond (bounded: a hang becomes a failure).
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for i := 0; i < 600; i++ {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("gave up waiting for %s after 30 s", what)
}

// waitLog waits until the process has logged msg.
func waitLog(t *testing.T, w *harness.Wharf, msg string) {
	t.Helper()
	waitFor(t, func() bool { return strings.Contains(w.Log(), msg) }, "wharf to log "+msg)
}

// TestMigrateStorage moves a serving site from the file system to S3 and
// back as README.md's steps say: crane pushes, a first copy while pushes
// go on (one copy killed with -9 and run again), a tag moved before the
// second copy, the switch to storage = "s3" and a restart, the final
// copy; then every image pulls byte-identical from the S3 site with the
// local root gone. The way back ends the same on a fresh root.
func TestMigrateStorage(t *testing.T) {
	crane := harness.Crane(t)
	gw := harness.StartVersityGW(t, "wharf")
	dir := t.TempDir()
	vars := map[string]any{
		"Endpoint":   gw.Endpoint,
		"AccessFile": filepath.Join(dir, "access"),
		"SecretFile": filepath.Join(dir, "secret"),
	}
	for f, v := range map[string]string{"access": gw.AccessKey, "secret": gw.SecretKey} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	w := harness.StartWharf(t, storageConfig, harness.WithVars(vars))
	host := w.Addr()

	var mu sync.Mutex
	images := map[string]v1.Image{} // what each ref must pull as at the end
	push := func(ref string, img v1.Image) {
		t.Helper()
		crane.Must(t, "push", "--insecure", harness.WriteDockerArchive(t, img, "wharf-e2e.test/tmp:x"), host+"/"+ref)
		mu.Lock()
		images[ref] = img
		mu.Unlock()
	}
	for i := 0; i < 4; i++ {
		push(fmt.Sprintf("team/app%d:v1", i), harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 3, 256<<10))
	}
	idx := harness.RandomIndex(t, []string{"linux/amd64", "linux/arm64"}, 1, 128<<10)
	crane.Must(t, "push", "--insecure", harness.WriteOCILayout(t, "multi", idx), host+"/multi:oci")

	// The first copy while crane keeps pushing; a copy killed with -9
	// at whatever point it reached first.
	killed := exec.Command(harness.WharfBinary(t), "migrate-storage", "-config", w.ConfigPath, "-site", "127.0.0.1", "-to", "s3")
	var killedOut bytes.Buffer
	killed.Stdout, killed.Stderr = &killedOut, &killedOut
	if err := killed.Start(); err != nil {
		t.Fatal(err)
	}
	var pushes sync.WaitGroup
	pushes.Add(1)
	go func() {
		defer pushes.Done()
		for i := 0; i < 6; i++ {
			push(fmt.Sprintf("busy/img%d:v1", i), harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 128<<10))
		}
	}()
	// kill -9 once it has written something to the bucket (or ended)
	exited := make(chan struct{})
	go func() { _ = killed.Wait(); close(exited) }()
	waitFor(t, func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		n := 0
		_ = filepath.WalkDir(filepath.Join(gw.Dir, "wharf", "moved"), func(_ string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				n++
			}
			return nil
		})
		return n > 0
	}, "migrate-storage to write to the bucket")
	_ = killed.Process.Signal(syscall.SIGKILL)
	<-exited
	t.Logf("killed migrate-storage said:\n%s", killedOut.String())
	first := runMigrate(t, w.ConfigPath, "s3")
	pushes.Wait()
	if first.skipped != 0 || first.blobs == 0 {
		t.Fatalf("first copy: %+v", first)
	}

	// Between copies: new pushes and a tag moved at the source.
	push("team/app0:v1", harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 128<<10))
	push("team/new:v1", harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 1, 64<<10))
	second := runMigrate(t, w.ConfigPath, "s3")
	if second.skipped != 0 || second.moved < 1 || second.blobsPresent == 0 {
		t.Fatalf("second copy: %+v", second)
	}

	// A push just before the switch, then storage = "s3" and a restart,
	// then the final copy brings that push over.
	push("team/late:v1", harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 64<<10))
	editConfig(t, w.ConfigPath, `storage = "filesystem"`, `storage = "s3"`)
	w.Restart(t)
	final := runMigrate(t, w.ConfigPath, "s3")
	if final.skipped != 0 || final.blobs != 4 || final.tags != 1 {
		t.Fatalf("final copy: %+v, want the late image's 4 blobs (2 layers, config, manifest) and its tag", final)
	}
	// The local root is out of the picture: move it away.
	root := filepath.Join(w.Config.DataDir, "registry")
	if err := os.Rename(root, root+".old"); err != nil {
		t.Fatal(err)
	}
	push("after/switch:v1", harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 1, 64<<10))
	verifyAll := func() {
		t.Helper()
		for ref, img := range images {
			harness.VerifyRemoteImage(t, host+"/"+ref, img, harness.Exact)
			crane.Must(t, "validate", "--insecure", "--remote", host+"/"+ref)
		}
		harness.VerifyRemoteIndex(t, host+"/multi:oci", idx)
	}
	verifyAll()
	if _, err := os.Stat(root); err == nil {
		t.Fatalf("the S3 site wrote into the old root %s", root)
	}

	// And back: a fresh root, the same steps the other way.
	editConfig(t, w.ConfigPath, `root    = "registry"`, `root    = "registry-back"`)
	back := runMigrate(t, w.ConfigPath, "filesystem")
	if back.skipped != 0 || back.blobs == 0 || back.blobsPresent != 0 {
		t.Fatalf("copy back: %+v", back)
	}
	// This time the switch is a SIGHUP: the changed site gets a new
	// backend on the new storage.
	editConfig(t, w.ConfigPath, `storage = "s3"`, `storage = "filesystem"`)
	w.Reload(t)
	waitLog(t, w, "reloaded config")
	if again := runMigrate(t, w.ConfigPath, "filesystem"); again.blobs != 0 || again.records != 0 {
		t.Fatalf("final copy back found new data though nothing was pushed: %+v", again)
	}
	if err := os.RemoveAll(filepath.Join(gw.Dir, "wharf", "moved")); err != nil {
		t.Fatal(err)
	}
	push("back/home:v1", harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 1, 64<<10))
	if _, err := os.Stat(filepath.Join(w.Config.DataDir, "registry-back", "repositories", "back", "home", "_tags", "v1")); err != nil {
		t.Fatalf("a push after the switch back did not land in the new root: %v", err)
	}
	verifyAll()
	if strings.Contains(w.Log(), `"level":"error"`) {
		t.Errorf("wharf logged errors:\n%s", w.LogTail(8<<10))
	}
}
