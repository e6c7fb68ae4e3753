package auth

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wharf-dev/wharf/internal/testpeer"
)

// registryClient does what the Docker client does against a registry with
// token auth: try, and on a Bearer challenge fetch a token from the realm
// the challenge names (with Basic credentials if it has any) and retry.
type registryClient struct {
	t        *testing.T
	base     string
	user, pw string
	token    string
	fetched  int // tokens fetched
}

func parseChallenge(h string) (scheme string, params map[string]string) {
	scheme, rest, _ := strings.Cut(h, " ")
	params = map[string]string{}
	for rest != "" {
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		k = strings.TrimSpace(strings.TrimPrefix(k, ","))
		if !strings.HasPrefix(v, `"`) {
			break
		}
		end := strings.Index(v[1:], `"`)
		if end < 0 {
			break
		}
		params[k] = v[1 : 1+end]
		rest = v[2+end:]
	}
	return scheme, params
}

func (c *registryClient) send(method, path string) *http.Response {
	req, err := http.NewRequest(method, c.base+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp
}

// do sends a request, following one Bearer challenge like Docker does.
func (c *registryClient) do(method, path string, extraScopes ...string) *http.Response {
	resp := c.send(method, path)
	if resp.StatusCode != http.StatusUnauthorized {
		return resp
	}
	resp.Body.Close()
	scheme, p := parseChallenge(resp.Header.Get("WWW-Authenticate"))
	if scheme != "Bearer" || p["realm"] == "" || p["service"] == "" {
		c.t.Fatalf("challenge %q", resp.Header.Get("WWW-Authenticate"))
	}
	q := url.Values{"service": {p["service"]}}
	if p["scope"] != "" {
		q["scope"] = append([]string{p["scope"]}, extraScopes...)
	}
	if path == "/v2/" {
		q.Set("offline_token", "true") // what `docker login` sends
		q.Set("client_id", "docker")
		q.Set("account", c.user)
	}
	req, _ := http.NewRequest("GET", p["realm"]+"?"+q.Encode(), nil)
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pw)
	}
	tr, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer tr.Body.Close()
	if tr.StatusCode != 200 {
		return tr // e.g. wrong password: the login fails here
	}
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(tr.Body).Decode(&body); err != nil {
		c.t.Fatal(err)
	}
	c.token = body.Token
	c.fetched++
	return c.send(method, path)
}

func TestTokenDance(t *testing.T) {
	f := newFixture(t, Site{}, Config{})
	status := func(resp *http.Response) int { resp.Body.Close(); return resp.StatusCode }

	// Anonymous: the ping challenges, an anonymous token logs "in", a
	// public pull works, a private one does not, a push does not.
	anon := &registryClient{t: t, base: f.srv.URL}
	if s := status(anon.do("GET", "/v2/")); s != 200 {
		t.Fatalf("anonymous ping after token: %d", s)
	}
	anon.token = ""
	if s := status(anon.do("GET", "/v2/public/x/manifests/latest")); s != 200 {
		t.Fatalf("anonymous pull: %d", s)
	}
	if s := status(anon.do("GET", "/v2/team-a/app/manifests/latest")); s != 401 {
		t.Fatalf("anonymous pull of a private repo: %d", s)
	}
	if s := status(anon.do("PUT", "/v2/public/x/manifests/latest")); s != 401 {
		t.Fatalf("anonymous push: %d", s)
	}

	// alice: login, pull a 30-layer image, push to the same host.
	before := f.s.BcryptChecks()
	alice := &registryClient{t: t, base: f.srv.URL, user: "alice", pw: "apw"}
	if s := status(alice.do("GET", "/v2/")); s != 200 {
		t.Fatalf("login: %d", s)
	}
	alice.token = "" // a new operation starts without a token, as in Docker
	if s := status(alice.do("GET", "/v2/team-a/app/manifests/latest")); s != 200 {
		t.Fatalf("pull manifest: %d", s)
	}
	for i := 0; i < 30; i++ {
		path := fmt.Sprintf("/v2/team-a/app/blobs/sha256:%064x", i)
		if s := status(alice.do("GET", path)); s != 200 {
			t.Fatalf("layer %d: %d", i, s)
		}
	}
	if s := status(alice.do("GET", "/v2/public/x/manifests/latest")); s != 200 { // another scope: one more token
		t.Fatalf("public pull as alice: %d", s)
	}
	if s := status(alice.do("PUT", "/v2/team-a/app/manifests/v2", "repository:team-a/base:pull")); s != 200 {
		t.Fatalf("push: %d", s)
	}
	if alice.fetched != 4 {
		t.Errorf("alice fetched %d tokens, want 4 (login, pull, public pull, push)", alice.fetched)
	}
	if n := f.s.BcryptChecks() - before; n != 1 {
		t.Errorf("login + 30-layer pull + push cost %d bcrypt checks, want 1", n)
	}

	// bob may not: the client ends with 403 DENIED, which Docker shows as "denied".
	bob := &registryClient{t: t, base: f.srv.URL, user: "bob", pw: "bpw"}
	resp := bob.do("PUT", "/v2/team-a/app/manifests/latest")
	if resp.StatusCode != 403 || errCode(t, resp) != "DENIED" {
		t.Fatalf("denied push: %d", resp.StatusCode)
	}
	resp.Body.Close()

	// A wrong password fails at the token endpoint, as `docker login` expects.
	eve := &registryClient{t: t, base: f.srv.URL, user: "alice", pw: "guess"}
	if s := status(eve.do("GET", "/v2/")); s != 401 {
		t.Fatalf("wrong password login: %d", s)
	}
}

// TestCrane runs go-containerregistry's crane, a real client, through the
// token flow, if it is installed.
func TestCrane(t *testing.T) {
	crane, err := exec.LookPath("crane")
	if err != nil {
		if _, err2 := os.Stat("/root/go/bin/crane"); err2 != nil {
			testpeer.Missing(t, "crane not installed (go install github.com/google/go-containerregistry/cmd/crane@latest)")
		}
		crane = "/root/go/bin/crane"
	}
	f := newFixture(t, Site{}, Config{})
	host := strings.TrimPrefix(f.srv.URL, "http://")
	want := digestOf(manifest)
	run := func(cfgDir string, args ...string) (string, error) {
		cmd := exec.Command(crane, append(args, "--insecure")...)
		cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+cfgDir, "HOME="+cfgDir)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	login := func(user, pw string) string {
		dir := t.TempDir()
		cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, strings.TrimPrefix(basic(user, pw), "Basic "))
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	tests := []struct {
		name, cfg, ref string
		ok             bool
		errSubstr      string
	}{
		{"anonymous public", t.TempDir(), "public/x:latest", true, ""},
		{"anonymous private", t.TempDir(), "team-a/app:latest", false, "UNAUTHORIZED"},
		{"alice", login("alice", "apw"), "team-a/app:latest", true, ""},
		{"bob denied", login("bob", "bpw"), "team-a/app:latest", false, "DENIED"},
		{"wrong password", login("alice", "nope"), "team-a/app:latest", false, "incorrect username or password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := run(tt.cfg, "digest", host+"/"+tt.ref)
			if tt.ok {
				if err != nil || out != want {
					t.Fatalf("crane digest: %v: %s", err, out)
				}
				return
			}
			if err == nil || !strings.Contains(out, tt.errSubstr) {
				t.Fatalf("crane digest: err=%v, output %q lacks %q", err, out, tt.errSubstr)
			}
		})
	}
	// crane catalog goes through the registry:catalog:* scope and sees
	// only what alice may pull.
	out, err := run(login("alice", "apw"), "catalog", host)
	if err != nil || out != "public/y\nteam-a/app" {
		t.Fatalf("crane catalog: %v: %q", err, out)
	}
}
