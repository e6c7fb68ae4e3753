package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/internal/testlog"
	"github.com/wharf-dev/wharf/webhook"
)

// TestEvents: a manifest push, pull, tag delete and manifest delete
// through the gateway reach a real HTTP endpoint as registry:2 events,
// signed, filtered by action and repository, naming the logged-in user.
func TestEvents(t *testing.T) {
	dir := t.TempDir()
	got := make(chan []byte, 100)
	var sigOK = true
	secret := "topsecret"
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if !webhook.Verify([]byte(secret), b, r.Header.Get(webhook.SignatureHeader)) || r.Header.Get("Content-Type") != webhook.MediaType {
			sigOK = false
		}
		got <- b
	}))
	defer hook.Close()
	os.WriteFile(filepath.Join(dir, "secret"), []byte(secret+"\n"), 0o600)
	writeHtpasswd(t, filepath.Join(dir, "htpasswd"), "alice")
	c, err := ParseConfig(filepath.Join(dir, "gw.toml"), []byte(fmt.Sprintf(`data_dir = "data"
[listen]
http = ":80"
[auth]
htpasswd = "htpasswd"
[[site]]
host = "r.example"
backend = "registry"
tls = "off"
auth = "basic"
[site.registry]
delete = true
[[webhook]]
url = "%s/hook"
secret_file = "secret"
actions = ["push", "delete", "pull"]
repos = ["team-a/*"]
`, hook.URL)))
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(t.Context(), c, testlog.New(t, zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	defer g.hooks.Load().Close()
	srv := httptest.NewServer(g)
	defer srv.Close()
	do := func(method, path, ctype string, body string) *http.Response {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Host = "r.example"
		req.Header.Set("User-Agent", "events-test")
		req.SetBasicAuth("alice", "pw")
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res
	}
	cfg := `{"os":"linux"}`
	cd := digest.FromString(cfg)
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[]}`, cd, len(cfg))
	md := digest.FromString(m)
	const mt = "application/vnd.oci.image.manifest.v1+json"
	for _, repo := range []string{"team-a/app", "team-b/app"} {
		if res := do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+cd.String(), "", cfg); res.StatusCode != 201 {
			t.Fatalf("blob: %d", res.StatusCode)
		}
		if res := do("PUT", "/v2/"+repo+"/manifests/v1", mt, m); res.StatusCode != 201 {
			t.Fatalf("manifest: %d", res.StatusCode)
		}
	}
	do("GET", "/v2/team-a/app/manifests/v1", "", "")
	do("HEAD", "/v2/team-a/app/manifests/v1", "", "")  // no event for HEAD
	do("GET", "/v2/team-a/app/manifests/nope", "", "") // 404: no event
	do("DELETE", "/v2/team-a/app/manifests/v1", "", "")
	do("DELETE", "/v2/team-a/app/manifests/"+md.String(), "", "")

	events := collectEvents(t, got, 4)
	if !sigOK {
		t.Errorf("an envelope had a bad signature or content type")
	}
	checkEvents(t, events, m, md, mt)
	select {
	case b := <-got:
		t.Errorf("unexpected event %s", b)
	default:
	}
}

// TestEventsReload: SIGHUP's Reload with other [[webhook]] endpoints
// sends the next events to the new endpoint only.
func TestEventsReload(t *testing.T) {
	dir := t.TempDir()
	hits := map[string]chan string{"old": make(chan string, 10), "new": make(chan string, 10)}
	servers := map[string]*httptest.Server{}
	for name, ch := range hits {
		ch := ch
		servers[name] = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var env webhook.Envelope
			json.NewDecoder(r.Body).Decode(&env)
			for _, e := range env.Events {
				ch <- e.Target.Tag
			}
		}))
		defer servers[name].Close()
	}
	cfgFor := func(url string) *Config {
		c, err := ParseConfig(filepath.Join(dir, "gw.toml"), []byte(`data_dir = "data"
[listen]
http = ":80"
[[site]]
host = "r.example"
backend = "registry"
tls = "off"
[[webhook]]
url = "`+url+`"
actions = ["pull"]
`))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	g, err := New(t.Context(), cfgFor(servers["old"].URL), testlog.New(t, zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { g.hooks.Load().Close() }()
	srv := httptest.NewServer(g)
	defer srv.Close()
	pull := func(tag string) {
		req, _ := http.NewRequest("GET", srv.URL+"/v2/app/manifests/"+tag, nil)
		req.Host = "r.example"
		// an event needs a 200: push a manifest under the tag first
		cfg := `{"tag":"` + tag + `"}`
		cd := digest.FromString(cfg)
		post, _ := http.NewRequest("POST", srv.URL+"/v2/app/blobs/uploads/?digest="+cd.String(), strings.NewReader(cfg))
		post.Host = "r.example"
		if res, err := http.DefaultClient.Do(post); err != nil || res.StatusCode != 201 {
			t.Fatalf("blob: %v %v", res, err)
		}
		m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[]}`, cd, len(cfg))
		put, _ := http.NewRequest("PUT", srv.URL+"/v2/app/manifests/"+tag, strings.NewReader(m))
		put.Host = "r.example"
		put.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		if res, err := http.DefaultClient.Do(put); err != nil || res.StatusCode != 201 {
			t.Fatalf("manifest: %v %v", res, err)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("pull: %v %v", res, err)
		}
		res.Body.Close()
	}
	wait := func(name, want string) {
		t.Helper()
		select {
		case got := <-hits[name]:
			if got != want {
				t.Errorf("%s endpoint got %q, want %q", name, got, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s endpoint got nothing", name)
		}
	}
	pull("one")
	wait("old", "one")
	if err := g.Reload(t.Context(), cfgFor(servers["new"].URL)); err != nil {
		t.Fatal(err)
	}
	pull("two")
	wait("new", "two")
	select {
	case got := <-hits["old"]:
		t.Errorf("old endpoint still got %q after the reload", got)
	default:
	}
}

// TestUIDeleteEvent: a delete made in the web UI sends the same delete
// event as an API DELETE, naming the UI's user; a failed delete sends none.
func TestUIDeleteEvent(t *testing.T) {
	dir := t.TempDir()
	got := make(chan []byte, 10)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- b
	}))
	defer hook.Close()
	os.WriteFile(filepath.Join(dir, "secret"), []byte("s3cret\n"), 0o600)
	c, err := ParseConfig(filepath.Join(dir, "gw.toml"), []byte(fmt.Sprintf(`data_dir = "data"
[listen]
http = ":80"
[[site]]
host = "r.example"
backend = "registry"
tls = "off"
[site.registry]
delete = true
[[webhook]]
url = "%s/hook"
secret_file = "secret"
actions = ["delete"]
`, hook.URL)))
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(t.Context(), c, testlog.New(t, zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	defer g.hooks.Load().Close()

	failing := g.uiDelete("r.example", func(context.Context, string, string) error { return errors.New("no such tag") })
	if err := failing(t.Context(), "alice", "team/app", "v1"); err == nil {
		t.Fatal("the wrapped delete's error was lost")
	}
	ok := g.uiDelete("r.example", func(context.Context, string, string) error { return nil })
	d := digest.FromString("x").String()
	for _, ref := range []string{"v1", d} {
		if err := ok(t.Context(), "alice", "team/app", ref); err != nil {
			t.Fatal(err)
		}
	}
	var events []webhook.Event
	for len(events) < 2 {
		select {
		case b := <-got:
			var env webhook.Envelope
			if err := json.Unmarshal(b, &env); err != nil {
				t.Fatal(err)
			}
			events = append(events, env.Events...)
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d events arrived: %+v", len(events), events)
		}
	}
	want := []webhook.Target{{Repository: "team/app", Tag: "v1"}, {Repository: "team/app", Digest: d}}
	for i, w := range want {
		e := events[i]
		if e.Action != webhook.ActionDelete || e.Target.Repository != w.Repository || e.Target.Tag != w.Tag || e.Target.Digest != w.Digest || e.Actor.Name != "alice" {
			t.Errorf("event %d: %s %+v by %q, want delete %+v by alice", i, e.Action, e.Target, e.Actor.Name, w)
		}
	}
	select {
	case b := <-got:
		t.Errorf("unexpected event (from the failed delete?) %s", b)
	case <-time.After(200 * time.Millisecond):
	}
}

// collectEvents reads envelopes from got until n events have arrived.
func collectEvents(t *testing.T, got chan []byte, n int) []webhook.Event {
	t.Helper()
	var events []webhook.Event
	for len(events) < n {
		select {
		case b := <-got:
			var env webhook.Envelope
			if err := json.Unmarshal(b, &env); err != nil {
				t.Fatal(err)
			}
			events = append(events, env.Events...)
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d events arrived: %+v", len(events), events)
		}
	}
	return events
}

// checkEvents: TestEvents' four events, in order, with their targets.
func checkEvents(t *testing.T, events []webhook.Event, m string, md digest.Digest, mt string) {
	t.Helper()
	want := []struct{ action, tag, digest string }{
		{"push", "v1", md.String()},
		{"pull", "v1", md.String()},
		{"delete", "v1", ""},
		{"delete", "", md.String()},
	}
	if len(events) != len(want) {
		t.Fatalf("events %+v", events)
	}
	for i, w := range want {
		e := events[i]
		if e.Action != w.action || e.Target.Tag != w.tag || e.Target.Digest != w.digest || e.Target.Repository != "team-a/app" {
			t.Errorf("event %d: %s %+v, want %+v", i, e.Action, e.Target, w)
		}
		if e.Actor.Name != "alice" {
			t.Errorf("event %d: actor %q, want alice", i, e.Actor.Name)
		}
		if e.Request.Host != "r.example" || e.Request.UserAgent != "events-test" || e.Request.ID == "" || e.Source.InstanceID == "" || e.ID == "" {
			t.Errorf("event %d: request/source %+v %+v", i, e.Request, e.Source)
		}
	}
	if p := events[0].Target; p.MediaType != mt || p.Size != int64(len(m)) || p.Length != p.Size || p.URL != "http://r.example/v2/team-a/app/manifests/"+md.String() {
		t.Errorf("push target %+v", p)
	}
	if p := events[1].Target; p.MediaType != mt || p.Size != int64(len(m)) {
		t.Errorf("pull target %+v", p)
	}
}
