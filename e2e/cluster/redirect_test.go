package cluster_test

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// TestPullWithRedirect: with [site.registry.s3] redirect = true, crane
// and docker pull images through the balancer; every blob GET is
// answered 307 with a pre-signed URL and the clients fetch the bytes
// from versitygw (on 127.0.0.1, reachable by them), checked byte for
// byte (crane) and by image ID, which docker verifies against every
// layer (docker).
func TestPullWithRedirect(t *testing.T) {
	c := startClusterConfig(t, 2, config+"redirect = true\n")
	crane := harness.Crane(t)
	img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 3, 1<<20)
	ref := c.lb.Addr + "/redirect/app:v1"
	crane.Must(t, "push", "--insecure", harness.WriteDockerArchive(t, img, "wharf-e2e.test/redirect:v1"), ref)

	out := filepath.Join(t.TempDir(), "pulled.tar")
	crane.Must(t, "pull", "--insecure", ref, out)
	got, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := harness.CompareImages(got, img, harness.Same{Config: true, LayerBlobs: true}); err != nil {
		t.Fatalf("crane pulled through redirects: %v", err)
	}
	harness.VerifyRemoteImage(t, ref, img, harness.Exact)

	docker := harness.Docker(t)
	docker.Must(t, "pull", ref)
	want := harness.MustDigestOf(t, img.ConfigName).String()
	if id := strings.TrimSpace(docker.Must(t, "image", "inspect", "--format", "{{.Id}}", ref)); id != want {
		t.Fatalf("docker pulled image id %s, want %s", id, want)
	}
	docker.Must(t, "rmi", "-f", ref)

	// The blobs came from S3: wharf answered blob GETs with 307 and no
	// body, so the clients above read every layer and config from the
	// pre-signed URLs.
	redirected := regexp.MustCompile(`"method":"GET","path":"/v2/redirect/app/blobs/sha256:[0-9a-f]{64}","status":307`)
	n := 0
	for _, w := range c.instances {
		n += len(redirected.FindAllString(w.Log(), -1))
	}
	// crane, ggcr and docker each fetch the config and 3 layers.
	if n < 12 {
		t.Fatalf("wharf answered %d blob GETs with 307, want at least 12", n)
	}
}

// redirectAuthConfig: one instance on S3 with redirect = true behind
// logins (token auth, wharf's default): alice may pull and push, nobody
// else anything.
const redirectAuthConfig = `data_dir = "{{.DataDir}}"

[listen]
http  = "{{.HTTP}}"
https = ""
admin = ""

[auth]
htpasswd = "{{.Vars.Htpasswd}}"

[[policy]]
repos = ["*"]
users = ["alice"]
allow = ["pull", "push"]

[[site]]
host    = "127.0.0.1"
backend = "registry"
tls     = "off"
[site.registry]
storage = "s3"
[site.registry.s3]
bucket          = "` + bucket + `"
endpoint        = "{{.Vars.Endpoint}}"
path_style      = true
access_key_file = "{{.Vars.AccessFile}}"
secret_key_file = "{{.Vars.SecretFile}}"
redirect        = true
`

// TestRedirectBehindLogin: with logins on, a blob GET without a token
// is refused by wharf (401, no redirect: authorization comes first), and
// docker and crane logged in as alice pull through the redirects: the
// pre-signed URL carries its own signature, and the clients do not send
// wharf's token to S3 (which would refuse a second authorization).
func TestRedirectBehindLogin(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	dir := t.TempDir()
	htpasswd := filepath.Join(dir, "htpasswd")
	cmd := exec.Command(harness.WharfBinary(t), "passwd", "alice")
	cmd.Stdin = strings.NewReader("alice-pw\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("wharf passwd: %v", err)
	}
	vars := map[string]any{
		"Endpoint":   gw.Endpoint,
		"Htpasswd":   htpasswd,
		"AccessFile": filepath.Join(dir, "access"),
		"SecretFile": filepath.Join(dir, "secret"),
	}
	for f, v := range map[string]string{"access": gw.AccessKey, "secret": gw.SecretKey, "htpasswd": strings.TrimSpace(string(out))} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	w := harness.StartWharf(t, redirectAuthConfig, harness.WithVars(vars))
	ref := w.Addr() + "/team/app:v1"

	crane := harness.Crane(t)
	if out, err := crane.RunStdin(t, "alice-pw\n", "auth", "login", w.Addr(), "-u", "alice", "--password-stdin"); err != nil {
		t.Fatalf("crane auth login: %v\n%s", err, out)
	}
	img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 512<<10)
	crane.Must(t, "push", "--insecure", harness.WriteDockerArchive(t, img, "wharf-e2e.test/redirect-auth:v1"), ref)

	// Anonymous: 401 from wharf, not a redirect.
	cfg := harness.MustDigestOf(t, img.ConfigName)
	r := harness.NewRawClient(w.URL()).Do(t, http.MethodGet, "/v2/team/app/blobs/"+cfg.String(), nil, nil)
	if r.Status != http.StatusUnauthorized || r.Header.Get("Location") != "" {
		t.Fatalf("anonymous blob GET: %d, Location %q", r.Status, r.Header.Get("Location"))
	}

	out2 := filepath.Join(t.TempDir(), "pulled.tar")
	crane.Must(t, "pull", "--insecure", ref, out2)
	got, err := tarball.ImageFromPath(out2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := harness.CompareImages(got, img, harness.Same{Config: true, LayerBlobs: true}); err != nil {
		t.Fatalf("crane pulled through redirects with a login: %v", err)
	}

	docker := harness.Docker(t)
	if out, err := harness.Login(t, docker, w.Addr(), "alice", "alice-pw"); err != nil {
		t.Fatalf("docker login: %v\n%s", err, out)
	}
	defer docker.Run(t, "logout", w.Addr())
	docker.Must(t, "pull", ref)
	if id := strings.TrimSpace(docker.Must(t, "image", "inspect", "--format", "{{.Id}}", ref)); id != cfg.String() {
		t.Fatalf("docker pulled image id %s, want %s", id, cfg)
	}
	docker.Must(t, "rmi", "-f", ref)
	if n := strings.Count(w.Log(), `"status":307`); n < 6 {
		t.Fatalf("wharf answered %d requests with 307, want at least 6 (config and 2 layers, twice)", n)
	}
}
