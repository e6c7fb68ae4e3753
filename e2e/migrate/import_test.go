// Package migrate tests `wharf import` (issue #12) against the real thing:
// Debian's docker-registry receives pushes from crane and docker, is
// stopped, and wharf takes its storage root over in place.
package migrate

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/wharf-dev/wharf/e2e/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// pushed is one repository:tag as docker-registry served it.
type pushed struct {
	ref      string // repo:tag or repo@digest, without host
	manifest string // the exact bytes
	digest   string
}

// snapshot records, through crane, the exact manifest and digest
// docker-registry serves for every ref.
func snapshot(t *testing.T, crane *harness.Tool, host string, refs []string) []pushed {
	t.Helper()
	var out []pushed
	for _, ref := range refs {
		out = append(out, pushed{
			ref:      ref,
			manifest: crane.Must(t, "manifest", "--insecure", host+"/"+ref),
			digest:   strings.TrimSpace(crane.Must(t, "digest", "--insecure", host+"/"+ref)),
		})
	}
	return out
}

// mustServeSame checks that wharf serves every ref byte-identical, and
// that crane validates every blob of it (digest and size).
func mustServeSame(t *testing.T, crane *harness.Tool, host string, want []pushed) {
	t.Helper()
	for _, p := range want {
		got := crane.Must(t, "manifest", "--insecure", host+"/"+p.ref)
		if got != p.manifest {
			t.Errorf("%s: wharf serves a different manifest:\n%s\nwant\n%s", p.ref, got, p.manifest)
		}
		if d := strings.TrimSpace(crane.Must(t, "digest", "--insecure", host+"/"+p.ref)); d != p.digest {
			t.Errorf("%s: digest %s, want %s", p.ref, d, p.digest)
		}
		crane.Must(t, "validate", "--insecure", "--remote", host+"/"+p.ref)
	}
}

var summary = regexp.MustCompile(`(?:imported|would import) (\d+) repositories, (\d+) tags, (\d+) manifests, (\d+) blobs .*; already there: (\d+) tags, (\d+) manifests, (\d+) blobs; (\d+) skipped`)

// runImport runs `wharf import` and returns its output and the numbers of
// its summary line.
func runImport(t *testing.T, args ...string) (string, []string) {
	t.Helper()
	cmd := exec.Command(harness.WharfBinary(t), append([]string{"import"}, args...)...)
	out, err := cmd.CombinedOutput()
	t.Logf("wharf import %s:\n%s", strings.Join(args, " "), out)
	if err != nil {
		t.Fatalf("wharf import: %v\n%s", err, out)
	}
	// the memory bound, for the whole process
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > 128<<10 {
		t.Errorf("wharf import peaked at %d KiB RSS, above 128 MiB", ru.Maxrss)
	}
	m := summary.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no summary line in:\n%s", out)
	}
	return string(out), m[1:]
}

func TestImportFromDockerRegistry(t *testing.T) {
	crane := harness.Crane(t)
	docker := harness.Docker(t)
	reg := harness.StartDockerRegistry(t, "")
	host := reg.Addr()
	push := func(img any, ref string) {
		t.Helper()
		switch x := img.(type) {
		case v1.Image:
			crane.Must(t, "push", "--insecure", harness.WriteDockerArchive(t, x, "wharf-e2e.test/tmp:x"), host+"/"+ref)
		case v1.ImageIndex:
			crane.Must(t, "push", "--insecure", harness.WriteOCILayout(t, "x", x), host+"/"+ref)
		}
	}

	// crane: two repositories, an image pushed twice under one tag, an
	// OCI index, a Docker manifest list built from two pushed images.
	app1 := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 256<<10)
	app2 := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 256<<10)
	push(app1, "team/app:v1")
	push(app1, "team/app:stable")
	push(app2, "team/app:stable") // the tag moves
	idx := harness.RandomIndex(t, []string{"linux/amd64", "linux/arm64"}, 1, 128<<10)
	push(idx, "multi:oci")
	amd := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 1, 128<<10)
	arm := harness.RandomImage(t, harness.DockerFormat, "linux/arm64", 1, 128<<10)
	push(amd, "multi:amd64")
	push(arm, "multi:arm64")
	crane.Must(t, "index", "append", "--insecure", "--docker-empty-base", "-m", host+"/multi:amd64", "-m", host+"/multi:arm64", "-t", host+"/multi:list")
	// a deleted manifest (and with it its tag)
	gone := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 1, 64<<10)
	push(gone, "team/app:gone")
	goneDigest := strings.TrimSpace(crane.Must(t, "digest", "--insecure", host+"/team/app:gone"))
	crane.Must(t, "delete", "--insecure", host+"/team/app@"+goneDigest)
	// docker: a push through the Docker client
	dimg := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 256<<10)
	docker.Must(t, "load", "-i", harness.WriteDockerArchive(t, dimg, "wharf-e2e.test/migrate-docker:v1"))
	docker.Must(t, "tag", "wharf-e2e.test/migrate-docker:v1", host+"/docker/img:v1")
	docker.Must(t, "push", host+"/docker/img:v1")

	app1Digest := harness.MustDigest(t, app1).String()
	want := snapshot(t, crane, host, []string{"team/app:v1", "team/app:stable", "team/app@" + app1Digest, "multi:oci", "multi:list", "multi:amd64", "multi:arm64", "docker/img:v1"})
	if err := reg.Stop(t); err != nil {
		t.Logf("stop docker-registry: %v", err)
	}

	// htpasswd lines as the old setup has them: htpasswd -B at cost 5 and
	// 10, and the `docker run httpd htpasswd -Bbn` form.
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	for _, c := range [][]string{
		{"-B", "-C", "5", "-b", "-c", htpasswd, "alice", "alice-pw"},
		{"-B", "-C", "10", "-b", htpasswd, "bob", "bob-pw"},
	} {
		if out, err := exec.Command(harness.Require(t, "htpasswd"), c...).CombinedOutput(); err != nil {
			t.Fatalf("htpasswd %v: %v\n%s", c, err, out)
		}
	}
	line, err := exec.Command(harness.Require(t, "htpasswd"), "-Bbn", "carol", "carol-pw").Output()
	if err != nil {
		t.Fatalf("htpasswd -Bbn: %v", err)
	}
	f, _ := os.OpenFile(htpasswd, os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte(strings.TrimSpace(string(line)) + "\n"))
	f.Close()

	w := harness.StartWharf(t, `data_dir = "{{.DataDir}}"
[listen]
http  = "{{.HTTP}}"
https = ""
admin = ""
[auth]
htpasswd = "{{index .Vars "htpasswd"}}"
[[site]]
host    = "127.0.0.1"
backend = "registry"
tls     = "off"
auth    = "basic"
[site.registry]
root = "registry"
`, harness.WithVars(map[string]any{"htpasswd": htpasswd}))

	// While wharf serves the site: a dry run writes nothing, the import
	// takes everything, a second one finds everything there.
	_, n := runImport(t, "-from", reg.Root, "-config", w.ConfigPath, "-site", "127.0.0.1", "-dry-run")
	if n[1] != "7" || n[4] != "0" {
		t.Errorf("dry run: %v, want 7 tags to import and none there", n)
	}
	out, n := runImport(t, "-from", reg.Root, "-config", w.ConfigPath, "-site", "127.0.0.1")
	if n[0] != "3" || n[1] != "7" || n[7] != "0" {
		t.Errorf("import: %v, want 3 repositories, 7 tags, nothing skipped", n)
	}
	if !strings.Contains(out, "hard-linked, 0 copied") {
		t.Errorf("blobs were copied, not hard-linked, on one file system:\n%s", out)
	}

	for _, u := range [][2]string{{"alice", "alice-pw"}, {"bob", "bob-pw"}, {"carol", "carol-pw"}} {
		if out, err := crane.Run(t, "auth", "login", w.Addr(), "-u", u[0], "-p", u[1]); err != nil {
			t.Fatalf("crane auth login %s: %v\n%s", u[0], err, out)
		}
		mustServeSame(t, crane, w.Addr(), want)
	}
	harness.VerifyRemoteImage(t, w.Addr()+"/team/app:stable", app2, harness.Exact, harness.RemoteOptions(basicAuth("carol", "carol-pw"))...)
	harness.VerifyRemoteIndex(t, w.Addr()+"/multi:oci", idx, harness.RemoteOptions(basicAuth("alice", "alice-pw"))...)
	if out, err := crane.Run(t, "manifest", "--insecure", w.Addr()+"/team/app@"+goneDigest); err == nil {
		t.Errorf("the deleted manifest is served:\n%s", out)
	}
	if out, err := crane.Run(t, "manifest", "--insecure", w.Addr()+"/team/app:gone"); err == nil {
		t.Errorf("the deleted tag is served:\n%s", out)
	}
	docker.Must(t, "rmi", host+"/docker/img:v1")
	if _, err := harness.Login(t, docker, w.Addr(), "bob", "bob-pw"); err != nil {
		t.Fatalf("docker login: %v", err)
	}
	docker.Must(t, "pull", w.Addr()+"/docker/img:v1")
	harness.VerifyRemoteImage(t, w.Addr()+"/docker/img:v1", dimg, harness.Same{Config: true}, harness.RemoteOptions(basicAuth("bob", "bob-pw"))...)

	// More pushes to the old registry, then a second import adds only them.
	reg.Start(t)
	app3 := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 3, 64<<10)
	push(app3, "team/app:v3")
	push(app3, "fresh/repo:v1")
	want = append(want, snapshot(t, crane, host, []string{"team/app:v3", "fresh/repo:v1"})...)
	if err := reg.Stop(t); err != nil {
		t.Logf("stop docker-registry: %v", err)
	}
	_, n = runImport(t, "-from", reg.Root, "-config", w.ConfigPath, "-site", "127.0.0.1")
	// new: 2 tags, the manifest's revision in each of the two
	// repositories, 5 blobs (manifest, config and 3 layers, stored once)
	if n[1] != "2" || n[2] != "2" || n[3] != "5" || n[4] != "7" || n[7] != "0" {
		t.Errorf("second import: %v, want 2 tags, 2 manifests, 5 blobs new and the 7 old tags there", n)
	}
	mustServeSame(t, crane, w.Addr(), want)
}

func basicAuth(user, password string) remote.Option {
	return remote.WithAuth(&authn.Basic{Username: user, Password: password})
}
