// Package e2e_test runs real clients (docker, podman, skopeo) against a
// wharf with logins and a policy (issue #4): allowed, denied and anonymous
// callers, a wrong password, anonymous pulls and logged-in pushes on one
// host, and an htpasswd change that takes effect without a restart.
package e2e_test

import (
	"bufio"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/wharf-dev/wharf/acme/acmetest"
	"github.com/wharf-dev/wharf/e2e/harness"
	"github.com/wharf-dev/wharf/internal/testpeer"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// authConfig: one plain-HTTP registry site; anonymous callers and every
// logged-in user may pull public/*, the devs group may push there, only
// alice may use team/*. bob can log in but has no rights beyond public
// pulls.
const authConfig = `data_dir = "{{.DataDir}}"

[listen]
http  = "{{.HTTP}}"
https = ""
admin = "{{.Admin}}"

[auth]
htpasswd = "{{.Vars.htpasswd}}"

[groups]
devs = ["alice"]

[[site]]
host    = "127.0.0.1"
backend = "registry"
tls     = "off"
[site.registry]
root   = "registry"
delete = true

[[policy]]
repos = ["public/*"]
users = ["@devs"]
allow = ["pull", "push"]

[[policy]]
repos = ["public/*"]
users = ["anonymous", "*"]
allow = ["pull"]

[[policy]]
repos = ["team/*"]
users = ["alice"]
allow = ["pull", "push"]
`

var passwords = map[string]string{"alice": "alice-pw", "bob": "bob-pw"}

// passwdLine runs `wharf passwd USER` with the password on stdin.
func passwdLine(t *testing.T, user, pw string) string {
	t.Helper()
	cmd := exec.Command(harness.WharfBinary(t), "passwd", user)
	cmd.Stdin = strings.NewReader(pw + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("wharf passwd %s: %v", user, err)
	}
	return strings.TrimSpace(string(out))
}

func writeUsers(t *testing.T, path string, users map[string]string) {
	t.Helper()
	var b strings.Builder
	for u, pw := range users {
		b.WriteString(passwdLine(t, u, pw) + "\n")
	}
	// write and rename, as an editor or a deploy tool would
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func startAuthWharf(t *testing.T) (*harness.Wharf, string) {
	t.Helper()
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	writeUsers(t, htpasswd, passwords)
	w := harness.StartWharf(t, authConfig, harness.WithVars(map[string]any{"htpasswd": htpasswd}))
	return w, htpasswd
}

// mustFail runs a client command that must fail and returns its output; if
// want is not empty the output must contain it (case-insensitive).
func mustFail(t *testing.T, tool *harness.Tool, want string, args ...string) string {
	t.Helper()
	out, err := tool.Run(t, args...)
	if err == nil {
		t.Fatalf("%s %s succeeded, want a failure:\n%s", tool.Name, strings.Join(args, " "), out)
	}
	if want != "" && !strings.Contains(strings.ToLower(out), want) {
		t.Fatalf("%s %s failed without saying %q:\n%s", tool.Name, strings.Join(args, " "), want, out)
	}
	return out
}

// bcryptChecks reads wharf's bcrypt counter from /metrics, or -1 if the
// admin endpoint does not export it.
func bcryptChecks(t *testing.T, w *harness.Wharf) float64 {
	t.Helper()
	resp, err := http.Get("http://" + w.AdminAddr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && strings.HasPrefix(f[0], "wharf_auth_bcrypt_checks_total") {
			v, err := strconv.ParseFloat(f[1], 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

// TestAuthDocker: the Docker client against one host that takes anonymous
// pulls and logged-in pushes.
func TestAuthDocker(t *testing.T) {
	docker := harness.Docker(t)
	w, _ := startAuthWharf(t)
	r := w.Addr()
	img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 3, 256<<10)
	src := "wharf-e2e.test/auth-docker:src"
	docker.Must(t, "load", "-i", harness.WriteDockerArchive(t, img, src))
	public, team, teamBob := r+"/public/app:v1", r+"/team/app:v1", r+"/team/app:bob"
	for _, ref := range []string{public, team, teamBob} {
		docker.Must(t, "tag", src, ref)
	}
	cfgDigest := harness.MustDigestOf(t, img.ConfigName).String()

	// Not logged in: no push, not even where anonymous may pull.
	mustFail(t, docker, "", "push", public)

	// A wrong password: the login fails and says so.
	if out, err := harness.Login(t, docker, r, "alice", "wrong"); err == nil || !strings.Contains(out, "unauthorized") {
		t.Fatalf("login with a wrong password: err=%v\n%s", err, out)
	}

	// alice: login, push to both areas, on the host anonymous pulls from.
	if out, err := harness.Login(t, docker, r, "alice", passwords["alice"]); err != nil || !strings.Contains(out, "Login Succeeded") {
		t.Fatalf("alice login: %v\n%s", err, out)
	}
	docker.Must(t, "push", public)
	before := bcryptChecks(t, w)
	docker.Must(t, "push", team)
	if before >= 0 {
		if n := bcryptChecks(t, w) - before; n > 1 {
			t.Errorf("a logged-in push cost %v bcrypt checks, want at most 1", n)
		}
	}
	harness.VerifyRemoteImage(t, public, img, harness.Same{Config: true})

	// bob may log in but neither push to team/* nor pull from it: Docker
	// says "denied".
	docker.Must(t, "logout", r)
	if _, err := harness.Login(t, docker, r, "bob", passwords["bob"]); err != nil {
		t.Fatalf("bob login: %v", err)
	}
	mustFail(t, docker, "denied", "push", teamBob)
	docker.Must(t, "rmi", team)
	mustFail(t, docker, "denied", "pull", team)
	// ... but he may pull what anonymous callers may.
	docker.Must(t, "rmi", "-f", cfgDigest)
	docker.Must(t, "pull", public)

	// Logged out: anonymous pull of public/* works, team/* does not.
	docker.Must(t, "logout", r)
	docker.Must(t, "rmi", "-f", cfgDigest)
	docker.Must(t, "pull", public)
	mustFail(t, docker, "", "pull", team)

	// alice pulls team/* again; a pull costs at most one bcrypt check.
	if _, err := harness.Login(t, docker, r, "alice", passwords["alice"]); err != nil {
		t.Fatalf("alice login: %v", err)
	}
	docker.Must(t, "rmi", "-f", cfgDigest)
	before = bcryptChecks(t, w)
	docker.Must(t, "pull", team)
	if before >= 0 {
		if n := bcryptChecks(t, w) - before; n > 1 {
			t.Errorf("a pull of a %d-layer image cost %v bcrypt checks, want at most 1", 3, n)
		}
	} else {
		t.Log("admin /metrics has no wharf_auth_bcrypt_checks_total; bcrypt count not checked")
	}
	out := docker.Must(t, "image", "inspect", "--format", "{{.Id}}", team)
	if strings.TrimSpace(out) != cfgDigest {
		t.Fatalf("pulled image %s, pushed %s", out, cfgDigest)
	}
}

// TestAuthPodman: the same matrix with podman (containers/image).
func TestAuthPodman(t *testing.T) {
	podman := harness.Podman(t)
	w, _ := startAuthWharf(t)
	r := w.Addr()
	img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 256<<10)
	src := "wharf-e2e.test/auth-podman:src"
	podman.Must(t, "load", "-i", harness.WriteDockerArchive(t, img, src))
	public, team := r+"/public/pod:v1", r+"/team/pod:v1"
	podman.Must(t, "tag", src, public)
	podman.Must(t, "tag", src, team)
	tls := "--tls-verify=false"

	mustFail(t, podman, "", "push", tls, public)
	if out, err := harness.Login(t, podman, r, "alice", "wrong", tls); err == nil || !strings.Contains(strings.ToLower(out), "invalid username/password") {
		t.Fatalf("login with a wrong password: err=%v\n%s", err, out)
	}
	if _, err := harness.Login(t, podman, r, "alice", passwords["alice"], tls); err != nil {
		t.Fatalf("alice login: %v", err)
	}
	podman.Must(t, "push", tls, public)
	podman.Must(t, "push", tls, team)

	podman.Must(t, "logout", r)
	if _, err := harness.Login(t, podman, r, "bob", passwords["bob"], tls); err != nil {
		t.Fatalf("bob login: %v", err)
	}
	podman.Must(t, "tag", src, r+"/team/pod:bob")
	mustFail(t, podman, "denied", "push", tls, r+"/team/pod:bob")
	podman.Must(t, "rmi", "-f", team, r+"/team/pod:bob")
	mustFail(t, podman, "", "pull", tls, team)

	podman.Must(t, "logout", r)
	podman.Must(t, "rmi", "-f", public)
	podman.Must(t, "pull", tls, public)
	mustFail(t, podman, "", "pull", tls, team)
}

// TestAuthSkopeo: skopeo with --creds, and anonymous.
func TestAuthSkopeo(t *testing.T) {
	skopeo := harness.Skopeo(t)
	w, _ := startAuthWharf(t)
	r := w.Addr()
	img := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 2, 128<<10)
	layout := harness.WriteOCILayout(t, "v1", img)
	src := "oci:" + layout + ":v1"
	tls := "--dest-tls-verify=false"

	skopeo.Must(t, "copy", "--preserve-digests", tls, "--dest-creds", "alice:"+passwords["alice"], src, "docker://"+r+"/team/sk:v1")
	skopeo.Must(t, "copy", "--preserve-digests", tls, "--dest-creds", "alice:"+passwords["alice"], src, "docker://"+r+"/public/sk:v1")
	mustFail(t, skopeo, "denied", "copy", tls, "--dest-creds", "bob:"+passwords["bob"], src, "docker://"+r+"/team/sk:bob")
	mustFail(t, skopeo, "", "copy", tls, "--dest-creds", "alice:nope", src, "docker://"+r+"/team/sk:nope")
	mustFail(t, skopeo, "", "copy", tls, src, "docker://"+r+"/public/sk:anon")

	// Anonymous inspect of public/*, not of team/*; alice sees team/*.
	skopeo.Must(t, "inspect", "--tls-verify=false", "docker://"+r+"/public/sk:v1")
	mustFail(t, skopeo, "", "inspect", "--tls-verify=false", "docker://"+r+"/team/sk:v1")
	skopeo.Must(t, "inspect", "--tls-verify=false", "--creds", "alice:"+passwords["alice"], "docker://"+r+"/team/sk:v1")

	// What alice pushed is byte for byte what was in the layout.
	got := harness.RemoteImage(t, r+"/team/sk:v1", remote.WithAuth(&authn.Basic{Username: "alice", Password: passwords["alice"]}))
	if err := harness.CompareImages(got, img, harness.Exact); err != nil {
		t.Fatal(err)
	}
}

// TestAuthHtpasswdReload: users added to or removed from the htpasswd file
// count without a restart; a broken file keeps the old users.
func TestAuthHtpasswdReload(t *testing.T) {
	w, htpasswd := startAuthWharf(t)
	rc := harness.NewRawClient(w.URL())
	status := func(user, pw string) int {
		h := http.Header{}
		req, _ := http.NewRequest("GET", "/", nil)
		req.SetBasicAuth(user, pw)
		h.Set("Authorization", req.Header.Get("Authorization"))
		return rc.Do(t, "GET", "/v2/", h, nil).Status
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second) // a hang guard, not a speed check
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("wharf never saw the htpasswd change: %s", what)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if s := status("carol", "carol-pw"); s != 401 {
		t.Fatalf("carol before she exists: %d", s)
	}
	writeUsers(t, htpasswd, map[string]string{"alice": passwords["alice"], "carol": "carol-pw"})
	waitFor("carol added", func() bool { return status("carol", "carol-pw") == 200 })
	waitFor("bob removed", func() bool { return status("bob", passwords["bob"]) == 401 })

	// A real client logs in as the new user.
	crane := harness.Crane(t)
	crane.Must(t, "auth", "login", w.Addr(), "-u", "carol", "-p", "carol-pw")
	crane.Must(t, "catalog", "--insecure", w.Addr())

	// A broken file (an MD5 line) is refused: alice and carol stay.
	if err := os.WriteFile(htpasswd, []byte("carol:$apr1$abc$defghijklmnopqrstuvwx\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w.Reload(t) // SIGHUP rereads at once
	waitFor("broken file reported", func() bool {
		b, _ := os.ReadFile(filepath.Join(w.Config.Dir, "wharf.log"))
		return strings.Contains(string(b), "keeping the previous users")
	})
	if s := status("alice", passwords["alice"]); s != 200 {
		t.Fatalf("alice after a broken htpasswd: %d", s)
	}
}

// tlsConfig is authConfig's policy on a TLS site with a manual certificate,
// so the token endpoint's realm is an https URL the clients must trust.
const tlsConfig = `data_dir = "{{.DataDir}}"

[listen]
http  = "{{.HTTP}}"
https = "{{.HTTPS}}"
admin = ""

[auth]
htpasswd = "{{.Vars.htpasswd}}"

[[site]]
host    = "auth.test"
backend = "registry"
tls     = "manual"
cert    = "{{.Vars.cert}}"
key     = "{{.Vars.key}}"
[site.registry]
root = "registry"

[[policy]]
repos = ["team/*"]
users = ["alice"]
allow = ["pull", "push"]

[[policy]]
repos = ["public/*"]
users = ["alice"]
allow = ["pull", "push"]

[[policy]]
repos = ["public/*"]
users = ["anonymous", "*"]
allow = ["pull"]
`

// TestAuthTLS: the token dance over TLS with certificate checks on (skopeo
// with the CA in --cert-dir, crane with SSL_CERT_FILE): the realm wharf
// names is https on the port the client used.
func TestAuthTLS(t *testing.T) {
	if addrs, err := net.LookupHost("auth.test"); err != nil || len(addrs) == 0 || addrs[0] != "127.0.0.1" {
		testpeer.Missing(t, "auth.test does not resolve to 127.0.0.1 (the test setup adds it to /etc/hosts)")
	}
	skopeo, crane := harness.Skopeo(t), harness.Crane(t)
	certDir := t.TempDir()
	cert, key, _ := acmetest.SelfSigned(t, certDir, "site", "auth.test")
	ca, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certDir, "ca.crt"), ca, 0o644); err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	writeUsers(t, htpasswd, passwords)
	w := harness.StartWharf(t, tlsConfig, harness.WithVars(map[string]any{"htpasswd": htpasswd, "cert": cert, "key": key}))
	_, port, _ := net.SplitHostPort(w.HTTPSAddr)
	r := "auth.test:" + port

	img := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 2, 128<<10)
	src := "oci:" + harness.WriteOCILayout(t, "v1", img) + ":v1"
	skopeo.Must(t, "copy", "--preserve-digests", "--dest-cert-dir", certDir, "--dest-creds", "alice:"+passwords["alice"], src, "docker://"+r+"/public/tls:v1")
	mustFail(t, skopeo, "denied", "copy", "--dest-cert-dir", certDir, "--dest-creds", "bob:"+passwords["bob"], src, "docker://"+r+"/team/tls:v1")
	mustFail(t, skopeo, "", "copy", "--dest-cert-dir", certDir, src, "docker://"+r+"/public/tls:anon")
	skopeo.Must(t, "inspect", "--cert-dir", certDir, "docker://"+r+"/public/tls:v1")

	crane.Env = append(crane.Env, "SSL_CERT_FILE="+cert)
	want := harness.MustDigest(t, img).String()
	if got := strings.TrimSpace(crane.Must(t, "digest", r+"/public/tls:v1")); got != want {
		t.Fatalf("crane digest %s, pushed %s", got, want)
	}
	mustFail(t, crane, "", "digest", r+"/team/tls:v1")
}
