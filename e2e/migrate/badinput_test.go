package migrate

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/e2e/harness"
)

var (
	genOnce sync.Once
	genPath string
	genErr  error
)

// mkregistry2 builds bench/cmd/mkregistry2 (the benchmark's generator of
// registry:2 roots) once per test binary.
func mkregistry2(t *testing.T) string {
	t.Helper()
	genOnce.Do(func() {
		root, err := harness.ModuleRoot()
		if err != nil {
			genErr = err
			return
		}
		dir, err := harness.BinaryTempDir(t, "wharf-e2e-gen-")
		if err != nil {
			genErr = err
			return
		}
		genPath = filepath.Join(dir, "mkregistry2")
		cmd := exec.Command("go", "build", "-o", genPath, "./bench/cmd/mkregistry2")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			genErr = fmt.Errorf("build mkregistry2: %v\n%s", err, out)
		}
	})
	if genErr != nil {
		t.Fatal(genErr)
	}
	return genPath
}

// openDir is a 0755 temp folder (t.TempDir's parents are 0700, closed to
// the unprivileged user some tests run wharf as).
func openDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wharf-e2e-migrate-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// genRoot writes a registry:2 root of images images (3 layers each) in
// 4 repositories.
func genRoot(t *testing.T, dir string, images int, size string) string {
	t.Helper()
	root := filepath.Join(dir, "registry2")
	out, err := exec.Command(mkregistry2(t), "-root", root, "-size", size, "-blobs", fmt.Sprint(images*4), "-repos", "4").CombinedOutput()
	if err != nil {
		t.Fatalf("mkregistry2: %v\n%s", err, out)
	}
	return root
}

// config writes a gateway.toml with one registry site "registry.test"
// whose data lives in dir/data.
func config(t *testing.T, dir string) (path, regRoot string) {
	t.Helper()
	path = filepath.Join(dir, "gateway.toml")
	data := filepath.Join(dir, "data")
	os.MkdirAll(data, 0o755)
	cfg := fmt.Sprintf("data_dir = %q\n[listen]\nhttp = \"127.0.0.1:1\"\nhttps = \"\"\nadmin = \"\"\n[[site]]\nhost = \"registry.test\"\nbackend = \"registry\"\ntls = \"off\"\n", data)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, filepath.Join(data, "registry", "registry.test")
}

func wharfImport(t *testing.T, cred *syscall.Credential, args ...string) (string, error) {
	t.Helper()
	bin := harness.WharfBinary(t)
	if cred != nil {
		// the harness's build folder is private: copy the binary out
		dir := openDir(t)
		b, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		bin = filepath.Join(dir, "wharf")
		os.WriteFile(bin, b, 0o755)
	}
	cmd := exec.Command(bin, append([]string{"import"}, args...)...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.CombinedOutput()
	t.Logf("wharf import %s: %v\n%s", strings.Join(args, " "), err, out)
	return string(out), err
}

// checkBlobs hashes every blob below a wharf registry root: each must
// hash to its name (nothing half-written or wrong visible).
func checkBlobs(t *testing.T, regRoot string) int {
	t.Helper()
	n := 0
	filepath.Walk(filepath.Join(regRoot, "blobs", "sha256"), func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			t.Errorf("open %s: %v", p, err)
			return nil
		}
		defer f.Close()
		h := sha256.New()
		io.Copy(h, f)
		if got := hex.EncodeToString(h.Sum(nil)); got != filepath.Base(p) {
			t.Errorf("blob %s holds content hashing to %s", p, got)
		}
		n++
		return nil
	})
	return n
}

func TestImportBadInput(t *testing.T) {
	t.Run("not a registry root", func(t *testing.T) {
		dir := t.TempDir()
		cfg, _ := config(t, dir)
		empty := filepath.Join(dir, "empty")
		os.Mkdir(empty, 0o755)
		out, err := wharfImport(t, nil, "-from", empty, "-config", cfg, "-site", "registry.test")
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(out, "not a registry:2/registry:3 storage root") {
			t.Errorf("exit %v, output %q: want exit 1 saying it is not a storage root", err, out)
		}
		out, err = wharfImport(t, nil, "-from", empty, "-config", cfg, "-site", "other.test")
		if err == nil || !strings.Contains(out, `no site with host = "other.test"`) {
			t.Errorf("unknown site: %v %q", err, out)
		}
	})

	t.Run("content not matching its digest", func(t *testing.T) {
		dir := t.TempDir()
		src := genRoot(t, dir, 4, "8MiB")
		cfg, regRoot := config(t, dir)
		// corrupt one layer in place (same size, one byte changed)
		victim := layerOf(t, src, "bench/repo002")
		f, _ := os.OpenFile(victim, os.O_RDWR, 0)
		f.WriteAt([]byte{0xff ^ firstByte(t, victim)}, 0)
		f.Close()
		hexName := filepath.Base(filepath.Dir(victim))
		out, err := wharfImport(t, nil, "-from", src, "-config", cfg, "-site", "registry.test")
		if err != nil {
			t.Fatalf("import: %v", err)
		}
		if !strings.Contains(out, "skipped blob sha256:"+hexName+": content does not match its digest") {
			t.Errorf("no report of the bad blob:\n%s", out)
		}
		if !strings.Contains(out, "which is not available") || !strings.Contains(out, "imported 4 repositories, 3 tags, 3 manifests") {
			t.Errorf("the image using the bad blob should be left out, the 3 others imported:\n%s", out)
		}
		if _, err := os.Stat(filepath.Join(regRoot, "blobs", "sha256", hexName[:2], hexName)); err == nil {
			t.Errorf("the bad blob is in wharf's store")
		}
		checkBlobs(t, regRoot)
	})

	t.Run("partly unreadable", func(t *testing.T) {
		harness.RequireRoot(t, "run wharf import as an unprivileged user")
		dir := openDir(t)
		src := genRoot(t, dir, 8, "8MiB")
		cfg, regRoot := config(t, dir)
		// one repository's folder and one blob cannot be read by uid 65534
		os.Chmod(filepath.Join(src, "docker/registry/v2/repositories/bench/repo001"), 0)
		victim := layerOf(t, src, "bench/repo002")
		os.Chmod(victim, 0)
		os.Chown(filepath.Join(dir, "data"), 65534, 65534)
		out, err := wharfImport(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "-from", src, "-config", cfg, "-site", "registry.test")
		if err != nil {
			t.Fatalf("import: %v", err)
		}
		if !strings.Contains(out, "repo001: cannot read folder") || !strings.Contains(out, "permission denied") {
			t.Errorf("the unreadable repository is not reported:\n%s", out)
		}
		if !strings.Contains(out, "skipped blob sha256:"+filepath.Base(filepath.Dir(victim))) {
			t.Errorf("the unreadable blob is not reported:\n%s", out)
		}
		// 8 images in 4 repositories: repo001's 2 are unreadable, one more
		// uses the unreadable blob, 5 arrive
		if !strings.Contains(out, "imported 3 repositories, 5 tags, 5 manifests") {
			t.Errorf("want the 5 readable images imported:\n%s", out)
		}
		checkBlobs(t, regRoot)
	})

	t.Run("as root into a folder another user owns", func(t *testing.T) {
		harness.RequireRoot(t, "give the imported files to the data folder's owner")
		dir := t.TempDir()
		src := genRoot(t, dir, 2, "1MiB")
		cfg, regRoot := config(t, dir)
		os.Chown(filepath.Join(dir, "data"), 65534, 65534)
		out, err := wharfImport(t, nil, "-from", src, "-config", cfg, "-site", "registry.test")
		if err != nil {
			t.Fatalf("import: %v", err)
		}
		if !strings.Contains(out, "to uid:gid 65534:65534") {
			t.Errorf("no word of the files given to the data folder's owner:\n%s", out)
		}
		n := 0
		filepath.Walk(filepath.Join(dir, "data"), func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return nil
			}
			n++
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65534 {
				t.Errorf("%s belongs to %d:%d; wharf serve running as 65534 could not write there", p, st.Uid, st.Gid)
			}
			return nil
		})
		if n < 10 || checkBlobs(t, regRoot) != 10 {
			t.Errorf("%d files below the data folder; want the 10 blobs and their records", n)
		}
	})

	t.Run("kill -9 and run again", func(t *testing.T) {
		dir := t.TempDir()
		src := genRoot(t, dir, 16, "256MiB")
		cfg, regRoot := config(t, dir)
		blobsDir := filepath.Join(regRoot, "blobs", "sha256")
		// copying (not linking), one blob at a time, is slow enough to be
		// caught in the middle
		cmd := exec.Command(harness.WharfBinary(t), "import", "-from", src, "-config", cfg, "-site", "registry.test", "-copy", "-workers", "1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			ents, _ := os.ReadDir(blobsDir)
			if len(ents) >= 3 {
				break
			}
			select {
			case err := <-done:
				t.Fatalf("the import finished (%v) before it could be killed; make the root bigger", err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatal("no blob imported within the bound")
			}
			time.Sleep(2 * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
		before := checkBlobs(t, regRoot)
		if before >= 16*5 {
			t.Fatalf("all %d blobs were there when killed; the test proves nothing", before)
		}
		if repos, _ := os.ReadDir(filepath.Join(regRoot, "repositories")); len(repos) > 0 {
			// blobs go first: no repository record can exist before all blobs are in
			t.Logf("repositories present after the kill: %d", len(repos))
		}
		out, err := wharfImport(t, nil, "-from", src, "-config", cfg, "-site", "registry.test")
		if err != nil {
			t.Fatalf("re-run: %v", err)
		}
		if !strings.Contains(out, "imported 4 repositories, 16 tags, 16 manifests") || !strings.Contains(out, "; 0 skipped") {
			t.Errorf("the re-run did not complete the import:\n%s", out)
		}
		if after := checkBlobs(t, regRoot); after != 16*5 {
			t.Errorf("%d blobs after the re-run, want 80", after)
		}
		// and wharf serves it: every blob of one repository's images
		// arrives with its digest (the synthetic layers are not gzip, so
		// crane validate does not apply)
		w := harness.StartWharf(t, `data_dir = "`+filepath.Join(dir, "data")+`"
[listen]
http  = "{{.HTTP}}"
https = ""
admin = ""
[[site]]
host    = "127.0.0.1"
backend = "registry"
tls     = "off"
[site.registry]
root = "`+regRoot+`"
`)
		crane := harness.Crane(t)
		tags := strings.Fields(crane.Must(t, "ls", "--insecure", w.Addr()+"/bench/repo002"))
		if len(tags) != 4 {
			t.Errorf("bench/repo002 has tags %v, want 4", tags)
		}
		for _, tag := range tags {
			var m struct {
				Config struct{ Digest string }
				Layers []struct{ Digest string }
			}
			if err := json.Unmarshal([]byte(crane.Must(t, "manifest", "--insecure", w.Addr()+"/bench/repo002:"+tag)), &m); err != nil {
				t.Fatal(err)
			}
			for _, l := range append(m.Layers, m.Config) {
				resp, err := http.Get(w.URL() + "/v2/bench/repo002/blobs/" + l.Digest)
				if err != nil {
					t.Fatal(err)
				}
				h := sha256.New()
				io.Copy(h, resp.Body)
				resp.Body.Close()
				if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); resp.StatusCode != 200 || got != l.Digest {
					t.Errorf("GET blob %s: %d, content %s", l.Digest, resp.StatusCode, got)
				}
			}
		}
	})
}

// layerOf returns the data file of a layer (not a config) of repo.
func layerOf(t *testing.T, src, repo string) string {
	t.Helper()
	v2 := filepath.Join(src, "docker", "registry", "v2")
	links, err := os.ReadDir(filepath.Join(v2, "repositories", repo, "_layers", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		h := l.Name()
		p := filepath.Join(v2, "blobs", "sha256", h[:2], h, "data")
		if fi, err := os.Stat(p); err == nil && fi.Size() > 64<<10 {
			return p
		}
	}
	t.Fatalf("no layer in %s", repo)
	return ""
}

func firstByte(t *testing.T, p string) byte {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.Read(b)
	return b[0]
}
