package ui

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"html"

	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/wharf-dev/wharf/auth"
	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/registry"
	"github.com/wharf-dev/wharf/policy"
)

// fixture is a real registry on a temporary directory, pushed to through
// its own HTTP API, with a real auth service (htpasswd, throttle) and a
// policy, and the UI on top of its store.
type fixture struct {
	t   testing.TB
	reg *registry.Registry
	svc *auth.Service
	ui  *UI
	// deletedBy lists the user Config.Delete was called for, per call
	deletedBy []string
}

// testRules: anonymous sees public/*, bob pulls everything but secret/*,
// alice may pull and delete everywhere.
var testRules = []policy.Rule{
	{Repos: []string{"secret/*"}, Users: []string{"alice"}, Allow: []string{"pull", "push", "delete"}},
	{Repos: []string{"secret/*"}, Users: []string{"*"}, Allow: []string{}},
	{Repos: []string{"public/*"}, Users: []string{"anonymous"}, Allow: []string{"pull"}},
	{Users: []string{"alice"}, Allow: []string{"pull", "push", "delete"}},
	{Users: []string{"bob"}, Allow: []string{"pull"}},
}

const testPassword = "correct horse"

type fixtureOpts struct {
	noAuth   bool
	throttle auth.Throttle
	delete   bool
	mutate   func(*Config)
}

func newFixture(t testing.TB, o fixtureOpts) *fixture {
	t.Helper()
	ctx := context.Background()
	reg, err := registry.New(ctx, registry.Options{Root: t.TempDir(), Delete: o.delete})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	f := &fixture{t: t, reg: reg}
	cfg := Config{Host: "registry.test", Kind: KindRegistry, Store: reg.Store(), Log: zerolog.Nop()}
	if o.delete {
		cfg.Delete = func(ctx context.Context, user, repo, ref string) error {
			f.deletedBy = append(f.deletedBy, user)
			return reg.Delete(ctx, repo, ref)
		}
	}
	if !o.noAuth {
		dir := t.TempDir()
		var lines []string
		for _, u := range []string{"alice", "bob"} {
			h, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
			if err != nil {
				t.Fatal(err)
			}
			lines = append(lines, u+":"+string(h))
		}
		hp := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(hp, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		svc, err := auth.New(ctx, auth.Config{Htpasswd: hp, Watch: -1, Throttle: o.throttle}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		f.svc = svc
		pol, err := policy.New(testRules, nil)
		if err != nil {
			t.Fatal(err)
		}
		key, err := LoadKey(filepath.Join(dir, "ui.key"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Auth, cfg.Policy, cfg.Key = svc, pol, key
	}
	if o.mutate != nil {
		o.mutate(&cfg)
	}
	u, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.ui = u
	return f
}

// api sends one request to the registry's API in process.
func (f *fixture) api(method, path, ct string, body []byte) *httptest.ResponseRecorder {
	f.t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	rec := httptest.NewRecorder()
	f.reg.ServeHTTP(rec, req)
	if rec.Code >= 300 {
		f.t.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body)
	}
	return rec
}

func (f *fixture) blob(repo string, data []byte) backend.Descriptor {
	d := digest.FromBytes(data)
	f.api("POST", "/v2/"+repo+"/blobs/uploads/?digest="+string(d), "application/octet-stream", data)
	return backend.Descriptor{Digest: d, Size: int64(len(data))}
}

// image pushes an image with a config (platform, labels, created) and
// layers of the given sizes, tags it when tag != "", and returns its
// manifest's descriptor.
func (f *fixture) image(repo, tag, platform string, labels map[string]string, layerSizes ...int) backend.Descriptor {
	f.t.Helper()
	os, arch, _ := strings.Cut(platform, "/")
	cfg := map[string]any{
		"architecture": arch, "os": os, "created": "2026-01-02T03:04:05Z",
		"config": map[string]any{"Labels": labels, "Entrypoint": []string{"/bin/app"}, "Env": []string{"PATH=/bin"},
			"ExposedPorts": map[string]any{"8080/tcp": struct{}{}}},
		"history": []map[string]any{{"created_by": "COPY app /bin/app"}},
		"rootfs":  map[string]any{"type": "layers"},
	}
	raw, _ := json.Marshal(cfg)
	c := f.blob(repo, raw)
	c.MediaType = "application/vnd.oci.image.config.v1+json"
	m := backend.Manifest{SchemaVersion: 2, MediaType: backend.MediaTypeOCIManifest, Config: &c}
	for i, n := range layerSizes {
		data := bytes.Repeat([]byte{byte(i + 1)}, n)
		data = append(data, []byte(repo+tag+platform)...)
		l := f.blob(repo, data)
		l.MediaType = "application/vnd.oci.image.layer.v1.tar+gzip"
		m.Layers = append(m.Layers, l)
	}
	return f.manifest(repo, tag, &m)
}

func (f *fixture) manifest(repo, tag string, m *backend.Manifest) backend.Descriptor {
	f.t.Helper()
	body, _ := json.Marshal(m)
	d := digest.FromBytes(body)
	ref := string(d)
	if tag != "" {
		ref = tag
	}
	f.api("PUT", "/v2/"+repo+"/manifests/"+ref, m.MediaType, body)
	return backend.Descriptor{MediaType: m.MediaType, Digest: d, Size: int64(len(body))}
}

// index pushes one image per platform and an index of them under tag.
func (f *fixture) index(repo, tag string, platforms ...string) (backend.Descriptor, []backend.Descriptor) {
	f.t.Helper()
	idx := backend.Manifest{SchemaVersion: 2, MediaType: backend.MediaTypeOCIIndex}
	var kids []backend.Descriptor
	for _, p := range platforms {
		d := f.image(repo, "", p, nil, 1000, 2000)
		os, arch, _ := strings.Cut(p, "/")
		d.Platform = &backend.Platform{OS: os, Architecture: arch}
		idx.Manifests = append(idx.Manifests, d)
		kids = append(kids, d)
	}
	return f.manifest(repo, tag, &idx), kids
}

// client is a browser-like session against the UI.
type client struct {
	f      *fixture
	cookie *http.Cookie
	tls    bool
}

type resp struct {
	user   string // who Serve says it served (the access log's user)
	status int
	header http.Header
	body   string
	cookie *http.Cookie
}

func (c *client) do(method, target string, form url.Values, hdr ...string) *resp {
	c.f.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, target, body)
	req.Host = "registry.test"
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	req.TLS = nil
	if c.tls {
		req.TLS = &tls.ConnectionState{}
	}
	if c.cookie != nil {
		req.AddCookie(c.cookie)
	}
	rec := httptest.NewRecorder()
	user := c.f.ui.Serve(rec, req)
	p := &resp{user: user, status: rec.Code, header: rec.Header(), body: rec.Body.String()}
	for _, ck := range rec.Result().Cookies() {
		if ck.Name == CookieName {
			p.cookie = ck
		}
	}
	return p
}

func (c *client) get(target string) *resp { return c.do("GET", target, nil) }

// login logs in through the form and keeps the cookie.
func (c *client) login(user string) {
	c.f.t.Helper()
	p := c.do("POST", "/login", url.Values{"username": {user}, "password": {testPassword}})
	if p.status != http.StatusSeeOther || p.cookie == nil {
		c.f.t.Fatalf("login %s: %d %s", user, p.status, p.body)
	}
	c.cookie = p.cookie
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the token the page shows in its forms.
func csrfOf(t *testing.T, p *resp) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no csrf token in page:\n%s", p.body)
	}
	return m[1]
}

// has looks for s in the page's text (entities decoded); raw in its HTML.
func (p *resp) has(s string) bool { return strings.Contains(html.UnescapeString(p.body), s) }
func (p *resp) raw(s string) bool { return strings.Contains(p.body, s) }

func mustStatus(t *testing.T, p *resp, want int, what string) {
	t.Helper()
	if p.status != want {
		t.Fatalf("%s: status %d, want %d\n%s", what, p.status, want, p.body)
	}
}
