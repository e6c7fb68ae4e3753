// Package auth_test runs issue #4's real-client matrix against wharf over
// plain HTTP: docker and podman log in, push and pull as an allowed user,
// are told "denied" as a user the policy refuses, are refused with a wrong
// password, pull anonymously from a host that takes logged-in pushes, and
// see an htpasswd change without a restart.
package auth_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/e2e/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// authConfig: logins from an htpasswd file, anonymous pulls, alice may push
// to team-a/*, everyone logged in may pull everything.
const authConfig = `data_dir = "{{.DataDir}}"

[listen]
http  = "{{.HTTP}}"
https = ""
admin = ""

[auth]
htpasswd = "{{.Vars.htpasswd}}"
realm    = "wharf-e2e"

[[site]]
host      = "127.0.0.1"
backend   = "registry"
tls       = "off"
anonymous = "pull"
[site.registry]
root   = "registry"
delete = true

[[policy]]
repos = ["team-a/*"]
users = ["alice"]
allow = ["pull", "push"]

[[policy]]
users = ["*", "anonymous"]
allow = ["pull"]
`

// users and their passwords; bob exists but may not push.
var passwords = map[string]string{"alice": "alice-secret-1", "bob": "bob-secret-2"}

// writeHtpasswd writes bcrypt lines made by Apache's htpasswd -B.
func writeHtpasswd(t *testing.T, path string, users map[string]string) {
	t.Helper()
	bin := harness.Require(t, "htpasswd")
	var lines []string
	for u, p := range users {
		out, err := exec.Command(bin, "-nbB", u, p).Output()
		if err != nil {
			t.Fatalf("htpasswd -nbB %s: %v", u, err)
		}
		lines = append(lines, strings.TrimSpace(string(out)))
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func startAuthWharf(t *testing.T) (*harness.Wharf, string) {
	t.Helper()
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	writeHtpasswd(t, htpasswd, passwords)
	w := harness.StartWharf(t, authConfig, harness.WithVars(map[string]any{"htpasswd": htpasswd}))
	return w, htpasswd
}

// client is one registry client under test: how it logs in, pushes and
// pulls a locally loaded image.
type client struct {
	name string
	new  func(t *testing.T) *harness.Tool
	// flags for plain HTTP on login, push and pull.
	tlsFlags []string
	rmi      []string
}

var clients = []client{
	{name: "docker", new: func(t *testing.T) *harness.Tool { return harness.Docker(t) }, rmi: []string{"rmi", "-f"}},
	{name: "podman", new: func(t *testing.T) *harness.Tool { return harness.Podman(t) }, tlsFlags: []string{"--tls-verify=false"}, rmi: []string{"rmi", "-f"}},
}

func (c client) args(verb string, rest ...string) []string {
	return append(append([]string{verb}, c.tlsFlags...), rest...)
}

func TestLoginPushPullMatrix(t *testing.T) {
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			w, _ := startAuthWharf(t)
			img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 256<<10)
			src := "wharf-e2e.test/" + c.name + "/auth:v1"
			alice, bob, anon, wrong := c.new(t), c.new(t), c.new(t), c.new(t)
			alice.Must(t, "load", "-i", harness.WriteDockerArchive(t, img, src))
			bob.Must(t, "load", "-i", harness.WriteDockerArchive(t, img, src))

			// Wrong password: login refused, nothing stored.
			out, err := harness.Login(t, wrong, w.Addr(), "alice", "not-the-password", c.tlsFlags...)
			if err == nil {
				t.Fatalf("%s login with a wrong password succeeded:\n%s", c.name, out)
			}
			// docker: "unauthorized: ..."; podman: "invalid username/password".
			if low := strings.ToLower(out); !strings.Contains(low, "unauthorized") && !strings.Contains(low, "invalid username/password") {
				t.Errorf("%s login with a wrong password: want an unauthorized error, got:\n%s", c.name, out)
			}

			// alice may push to team-a/*.
			if out, err := harness.Login(t, alice, w.Addr(), "alice", passwords["alice"], c.tlsFlags...); err != nil {
				t.Fatalf("alice login: %v", err)
			} else if !strings.Contains(out, "Login Succeeded") {
				t.Errorf("alice login printed %q", out)
			}
			ref := w.Addr() + "/team-a/" + c.name + ":v1"
			alice.Must(t, "tag", src, ref)
			alice.Must(t, c.args("push", ref)...)
			harness.VerifyRemoteImage(t, ref, img, harness.Same{Config: true})

			// bob is a valid user but the policy gives him pull only.
			if _, err := harness.Login(t, bob, w.Addr(), "bob", passwords["bob"], c.tlsFlags...); err != nil {
				t.Fatalf("bob login: %v", err)
			}
			bobRef := w.Addr() + "/team-a/" + c.name + ":bob"
			bob.Must(t, "tag", src, bobRef)
			out, err = bob.Run(t, c.args("push", bobRef)...)
			if err == nil {
				t.Fatalf("bob's push to team-a succeeded:\n%s", out)
			}
			if !strings.Contains(strings.ToLower(out), "denied") {
				t.Errorf("bob's refused push does not say denied:\n%s", out)
			}
			// ... and may pull.
			cfg := harness.MustDigestOf(t, img.ConfigName)
			bob.Must(t, append(c.rmi, cfg.String())...)
			bob.Must(t, c.args("pull", ref)...)

			// Anonymous: pull works on the same host, push does not.
			anon.Must(t, c.args("pull", ref)...)
			anonRef := w.Addr() + "/team-a/" + c.name + ":anon"
			anon.Must(t, "tag", ref, anonRef)
			out, err = anon.Run(t, c.args("push", anonRef)...)
			if err == nil {
				t.Fatalf("anonymous push succeeded:\n%s", out)
			}
			low := strings.ToLower(out)
			if !strings.Contains(low, "unauthorized") && !strings.Contains(low, "authentication required") && !strings.Contains(low, "denied") {
				t.Errorf("anonymous push refused without saying why:\n%s", out)
			}

			// No password, right or wrong, ever reaches wharf's log.
			log := w.Log()
			for _, pw := range []string{passwords["alice"], passwords["bob"], "not-the-password"} {
				if strings.Contains(log, pw) {
					t.Errorf("wharf's log contains the password %q", pw)
				}
			}
		})
	}
}

// TestHtpasswdChangeWithoutRestart: a user added to the htpasswd file can
// log in without a restart, and a removed one no longer can.
func TestHtpasswdChangeWithoutRestart(t *testing.T) {
	w, htpasswd := startAuthWharf(t)
	docker := harness.Docker(t)
	if out, err := harness.Login(t, docker, w.Addr(), "carol", "carol-secret-3"); err == nil {
		t.Fatalf("carol logged in before she was added:\n%s", out)
	}
	writeHtpasswd(t, htpasswd, map[string]string{"alice": passwords["alice"], "carol": "carol-secret-3"})
	waitFor(t, "carol's login to work after adding her", func() bool {
		_, err := harness.Login(t, harness.Docker(t), w.Addr(), "carol", "carol-secret-3")
		return err == nil
	})
	waitFor(t, "bob's login to fail after removing him", func() bool {
		_, err := harness.Login(t, harness.Docker(t), w.Addr(), "bob", passwords["bob"])
		return err != nil
	})
	if exited, err := w.Exited(); exited {
		t.Fatalf("wharf exited: %v", err)
	}
}

// waitFor polls cond, because a file change is picked up asynchronously.
// The bound only turns a change that never takes effect into a failure.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
