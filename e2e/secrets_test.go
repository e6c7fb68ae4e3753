package e2e_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// secretsConfig: logins required, debug logging (the most a log ever says).
const secretsConfig = `data_dir = "{{.DataDir}}"

[listen]
http  = "{{.HTTP}}"
https = ""
admin = ""

[log]
level  = "debug"
format = "json"

[auth]
htpasswd = "{{.Vars.htpasswd}}"

[[site]]
host    = "127.0.0.1"
backend = "registry"
tls     = "off"
[site.registry]
root = "registry"
`

var (
	realmRE   = regexp.MustCompile(`realm="([^"]+)"`)
	serviceRE = regexp.MustCompile(`service="([^"]+)"`)
)

// TestSecretsNeverLogged (issue #4): after logins with right and wrong
// passwords, a push and a pull by docker, and a token fetched and used by
// hand, wharf's log (at debug level) holds no password, no Basic
// credentials and no token.
func TestSecretsNeverLogged(t *testing.T) {
	const user, password, wrong = "alice", "s3cret-pass-word-1", "wr0ng-pass-word-2"
	docker := harness.Docker(t)
	line, err := exec.Command(harness.Require(t, "htpasswd"), "-nbB", user, password).Output()
	if err != nil {
		t.Fatalf("htpasswd: %v", err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, line, 0o600); err != nil {
		t.Fatal(err)
	}
	w := harness.StartWharf(t, secretsConfig, harness.WithVars(map[string]any{"htpasswd": htpasswd}))

	if out, err := harness.Login(t, docker, w.Addr(), user, wrong); err == nil {
		t.Fatalf("login with a wrong password succeeded:\n%s", out)
	}
	if _, err := harness.Login(t, docker, w.Addr(), user, password); err != nil {
		t.Fatal(err)
	}
	img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 64<<10)
	src := "wharf-e2e.test/secrets:v1"
	docker.Must(t, "load", "-i", harness.WriteDockerArchive(t, img, src))
	ref := w.Addr() + "/secrets/app:v1"
	docker.Must(t, "tag", src, ref)
	docker.Must(t, "push", ref)
	docker.Must(t, "rmi", "-f", harness.MustDigestOf(t, img.ConfigName).String())
	docker.Must(t, "pull", ref)

	// Fetch a token the way clients do and use it, so we know its value.
	raw := harness.NewRawClient(w.URL())
	ping := raw.Do(t, http.MethodGet, "/v2/", nil, nil)
	m := realmRE.FindStringSubmatch(ping.Header.Get("WWW-Authenticate"))
	secrets := []string{password, wrong, base64.StdEncoding.EncodeToString([]byte(user + ":" + password)),
		base64.StdEncoding.EncodeToString([]byte(user + ":" + wrong))}
	if m != nil {
		q := url.Values{"scope": {"repository:secrets/app:pull"}}
		if sm := serviceRE.FindStringSubmatch(ping.Header.Get("WWW-Authenticate")); sm != nil {
			q.Set("service", sm[1])
		}
		req, err := http.NewRequest(http.MethodGet, m[1]+"?"+q.Encode(), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(user, password)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("token endpoint %s: %v", m[1], err)
		}
		var tok struct {
			Token       string `json:"token"`
			AccessToken string `json:"access_token"`
		}
		err = json.NewDecoder(resp.Body).Decode(&tok)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("token endpoint %s: %s %v", m[1], resp.Status, err)
		}
		for _, s := range []string{tok.Token, tok.AccessToken} {
			if s == "" {
				continue
			}
			secrets = append(secrets, s)
			r := raw.Do(t, http.MethodGet, "/v2/secrets/app/tags/list", http.Header{"Authorization": {"Bearer " + s}}, nil)
			if r.Status != http.StatusOK {
				t.Errorf("tags/list with a fresh token: %d %s", r.Status, r.Body)
			}
		}
	} else {
		t.Logf("no Bearer realm in %q: checking passwords only", ping.Header.Get("WWW-Authenticate"))
	}

	t.Logf("checking wharf's log for %d secrets (passwords, Basic credentials, tokens)", len(secrets))
	log := w.Log()
	if !strings.Contains(log, "/v2/") {
		t.Fatalf("wharf's log shows no requests; nothing was checked:\n%s", log)
	}
	for _, s := range secrets {
		if strings.Contains(log, s) {
			t.Errorf("wharf's log contains a secret (%.6s...)", s)
		}
	}
}
