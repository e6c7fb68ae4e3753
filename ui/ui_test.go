package ui

import (
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/auth"
	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/layout"
)

// seed pushes a few repositories: two public, one secret, one private.
func seed(f *fixture) {
	f.image("public/web", "v1", "linux/amd64", map[string]string{"org.opencontainers.image.title": "web"}, 100, 200)
	f.image("public/web", "v2", "linux/amd64", nil, 300)
	f.image("public/db", "latest", "linux/arm64", nil, 50)
	f.image("secret/keys", "v1", "linux/amd64", nil, 10)
	f.image("team/app", "1.0", "linux/amd64", nil, 10)
}

func TestPolicyFiltering(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	seed(f)
	anon := &client{f: f}
	bob := &client{f: f}
	bob.login("bob")
	alice := &client{f: f}
	alice.login("alice")
	for _, tc := range []struct {
		name      string
		c         *client
		see, hide []string
	}{
		{"anonymous", anon, []string{"public/web", "public/db"}, []string{"secret/keys", "team/app"}},
		{"bob", bob, []string{"public/web", "public/db", "team/app"}, []string{"secret/keys"}},
		{"alice", alice, []string{"public/web", "public/db", "team/app", "secret/keys"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.c.get("/")
			mustStatus(t, p, 200, "repositories")
			for _, r := range tc.see {
				if !p.has(`href="/r/` + r + `"`) {
					t.Errorf("%s does not see %s on /", tc.name, r)
				}
				mustStatus(t, tc.c.get("/r/"+r), 200, "/r/"+r)
			}
			for _, r := range tc.hide {
				if p.has(r) {
					t.Errorf("%s sees hidden %s on /", tc.name, r)
				}
				// hidden is 404, exactly like a repository that does not exist
				hidden, missing := tc.c.get("/r/"+r), tc.c.get("/r/"+r+"-nothere")
				mustStatus(t, hidden, 404, "/r/"+r)
				if errorText(hidden) != errorText(missing) {
					t.Errorf("a hidden repository's page differs from a missing one's")
				}
				if q := tc.c.get("/?q=" + url.QueryEscape(r)); q.has(`href="/r/`+r) || !q.has("0 repositories") {
					t.Errorf("search finds hidden %s", r)
				}
			}
		})
	}
}

func TestSearchAndPagination(t *testing.T) {
	f := newFixture(t, fixtureOpts{noAuth: true, mutate: func(c *Config) { c.PageSize = 2 }})
	for i := range 5 {
		f.image(fmt.Sprintf("lib/app%d", i), "v1", "linux/amd64", nil, 10)
	}
	f.image("other/thing", "v1", "linux/amd64", nil, 10)
	c := &client{f: f}
	p := c.get("/?q=app")
	mustStatus(t, p, 200, "search")
	if !p.has("5 repositories") || !p.has("lib/app0") || !p.has("lib/app1") || p.has("lib/app2") || p.has("other/thing") {
		t.Fatalf("search page 1 wrong:\n%s", p.body)
	}
	if !p.has("page 1 of 3") || !p.raw(`href="/?page=2&amp;q=app"`) {
		t.Fatalf("no pager:\n%s", p.body)
	}
	p = c.get("/?q=app&page=3")
	if !p.has("lib/app4") || p.has("lib/app3") || !p.has("page 3 of 3") {
		t.Fatalf("search page 3 wrong:\n%s", p.body)
	}
	// bad page numbers clamp instead of failing
	for _, q := range []string{"page=-1", "page=999", "page=x"} {
		mustStatus(t, c.get("/?"+q), 200, q)
	}
}

func TestTagsPage(t *testing.T) {
	f := newFixture(t, fixtureOpts{noAuth: true})
	one := f.image("lib/web", "b-older", "linux/amd64", map[string]string{"maintainer": "ops"}, 1000, 24)
	idx, kids := f.index("lib/web", "a-multi", "linux/amd64", "linux/arm64")
	c := &client{f: f}
	p := c.get("/r/lib/web")
	mustStatus(t, p, 200, "tags")
	for _, want := range []string{"b-older", "a-multi", "linux/amd64, linux/arm64", "maintainer", "ops", string(one.Digest)[7:19],
		string(idx.Digest)[7:19], "application/vnd.oci.image.index.v1+json", "2026-01-02 03:04 UTC"} {
		if !p.has(want) {
			t.Errorf("tags page lacks %q", want)
		}
	}
	if strings.Index(p.body, "a-multi") > strings.Index(p.body, "b-older") {
		t.Errorf("not sorted by name")
	}
	// the index's size is its own bytes plus each child's manifest, config and layers
	var total int64 = idx.Size
	for _, k := range kids {
		s, err := f.ui.b.manifest(t.Context(), "lib/web", k.Digest)
		if err != nil {
			t.Fatal(err)
		}
		total += k.Size + s.Config.Size + s.Layers[0].Size + s.Layers[1].Size
	}
	if !p.has(humanSize(total)) {
		t.Errorf("tags page lacks the index size %s (%d)", humanSize(total), total)
	}
	// sort by date: the newest push first (file times need to differ)
	time.Sleep(20 * time.Millisecond)
	f.image("lib/web", "0-newest", "linux/amd64", nil, 10)
	p = c.get("/r/lib/web?sort=date")
	if !(strings.Index(p.body, "0-newest") < strings.Index(p.body, "a-multi") && strings.Index(p.body, "a-multi") < strings.Index(p.body, "b-older")) {
		t.Errorf("not sorted by date")
	}
	p = c.get("/r/lib/web")
	if strings.Index(p.body, "0-newest") > strings.Index(p.body, "a-multi") {
		t.Errorf("not sorted by name")
	}
}

func TestImagePage(t *testing.T) {
	f := newFixture(t, fixtureOpts{noAuth: true})
	img := f.image("lib/web", "v1", "linux/amd64", map[string]string{"a": "b"}, 1500, 2500)
	c := &client{f: f}
	p := c.get("/r/lib/web@" + string(img.Digest))
	mustStatus(t, p, 200, "image")
	for _, want := range []string{"docker pull registry.test/lib/web:v1", "podman pull registry.test/lib/web:v1",
		"docker pull registry.test/lib/web@" + string(img.Digest), "/bin/app", "8080/tcp", "PATH=/bin", "COPY app /bin/app",
		"No signatures"} {
		if !p.has(want) {
			t.Errorf("image page lacks %q", want)
		}
	}
	s, err := f.ui.b.manifest(t.Context(), "lib/web", img.Digest)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range s.Layers {
		if !p.has(`<td class="num size">` + humanSize(l.Size) + `</td>`) {
			t.Errorf("image page lacks the layer size %s", humanSize(l.Size))
		}
	}
	if !p.has(humanSize(s.Size + s.Config.Size + s.Layers[0].Size + s.Layers[1].Size)) {
		t.Errorf("image page lacks the total size")
	}
	// /r/<repository>:<tag> leads to the image
	if p := c.get("/r/lib/web:v1"); p.status != http.StatusFound || p.header.Get("Location") != "/r/lib/web@"+string(img.Digest) {
		t.Errorf("/r/lib/web:v1: %d to %q", p.status, p.header.Get("Location"))
	}
	for _, bad := range []string{"/r/lib/web:nope", "/r/lib/web:", "/r/lib/web:a:b", "/r/lib/web@sha256:0000", "/r/lib/web@nonsense", "/r/lib/web@sha256:" + strings.Repeat("0", 64), "/r/Bad..Name"} {
		mustStatus(t, c.get(bad), 404, bad)
	}
}

func TestReferrersByArtifactType(t *testing.T) {
	f := newFixture(t, fixtureOpts{noAuth: true})
	img := f.image("lib/web", "v1", "linux/amd64", nil, 10)
	empty := f.blob("lib/web", []byte("{}"))
	empty.MediaType = "application/vnd.oci.empty.v1+json"
	for _, at := range []string{"application/vnd.dev.cosign.artifact.sig.v1+json", "application/spdx+json", "application/vnd.in-toto+json"} {
		subj := img
		f.manifest("lib/web", "", &backend.Manifest{SchemaVersion: 2, MediaType: backend.MediaTypeOCIManifest, ArtifactType: at,
			Config: &empty, Layers: []backend.Descriptor{empty}, Subject: &subj})
	}
	p := (&client{f: f}).get("/r/lib/web@" + string(img.Digest))
	for _, want := range []string{"signature", "SBOM", "attestation", "application/spdx+json"} {
		if !p.has(want) {
			t.Errorf("referrers lack %q", want)
		}
	}
}

func TestEscapesHostileLabels(t *testing.T) {
	f := newFixture(t, fixtureOpts{noAuth: true})
	hostile := `<script>alert("x")</script><img src=x onerror=alert(1)>`
	img := f.image("lib/web", "v1", "linux/amd64", map[string]string{"evil": hostile, `"><b>k`: "v"}, 10)
	c := &client{f: f}
	for _, path := range []string{"/r/lib/web", "/r/lib/web@" + string(img.Digest)} {
		p := c.get(path)
		mustStatus(t, p, 200, path)
		if p.raw("<script>alert") || p.raw("<img src=x") || p.raw(`"><b>k`) {
			t.Fatalf("%s: hostile label not escaped:\n%s", path, p.body)
		}
		if !p.raw("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
			t.Fatalf("%s: label not shown as text:\n%s", path, p.body)
		}
	}
	// the search box echoes the query escaped too
	p := c.get("/?q=" + url.QueryEscape(`"><script>x</script>`))
	if p.raw("<script>x") {
		t.Fatalf("search query not escaped")
	}
}

func TestSecurityHeaders(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	c := &client{f: f}
	for _, path := range []string{"/", "/login", "/nothing", "/r/none", "/-/static/style.css", "/-/static/", "/-/static/../ui.go"} {
		p := c.get(path)
		h := p.header
		if h.Get("Content-Security-Policy") != csp {
			t.Errorf("%s: CSP %q", path, h.Get("Content-Security-Policy"))
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") == "" || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: headers %v", path, h)
		}
		if strings.Contains(p.body, "<script>") || strings.Contains(p.body, " style=") || strings.Contains(p.body, "onclick") {
			t.Errorf("%s: inline script or style", path)
		}
	}
	for _, path := range []string{"/-/static/", "/-/static/..%2fui.go", "/-/static/.hidden", "/-/static/x.js"} {
		mustStatus(t, c.get(path), 404, path)
	}
	p := c.get("/-/static/app.js")
	mustStatus(t, p, 200, "app.js")
	if !strings.HasPrefix(p.header.Get("Content-Type"), "text/javascript") {
		t.Errorf("app.js type %q", p.header.Get("Content-Type"))
	}
	mustStatus(t, c.do("PUT", "/", nil), 405, "PUT /")
	mustStatus(t, c.do("DELETE", "/-/static/app.js", nil), 405, "DELETE static")
}

func TestLoginCookieAndThrottle(t *testing.T) {
	f := newFixture(t, fixtureOpts{throttle: auth.Throttle{UserFree: 2, AddrFree: 100, Backoff: time.Minute}})
	for _, overTLS := range []bool{false, true} {
		c := &client{f: f, tls: overTLS}
		p := c.do("POST", "/login", url.Values{"username": {"bob"}, "password": {testPassword}, "next": {"/r/team/app"}})
		mustStatus(t, p, http.StatusSeeOther, "login")
		ck := p.cookie
		if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure != overTLS || ck.Path != "/" {
			t.Fatalf("cookie over TLS=%v: %+v", overTLS, ck)
		}
		if d := time.Until(ck.Expires); d > DefaultSessionTTL || d < DefaultSessionTTL-time.Minute {
			t.Errorf("cookie lives %v", d)
		}
		if p.header.Get("Location") != "/r/team/app" {
			t.Errorf("redirect to %q", p.header.Get("Location"))
		}
	}
	// a next= that leaves the site goes home instead
	c := &client{f: f}
	p := c.do("POST", "/login", url.Values{"username": {"bob"}, "password": {testPassword}, "next": {"//evil.example/"}})
	if p.header.Get("Location") != "/" {
		t.Errorf("open redirect to %q", p.header.Get("Location"))
	}
	// wrong passwords: UserFree failures are free, the next one blocks, and
	// from then on the auth throttle answers 429
	for i, want := range []int{401, 401, 401, 429} {
		p := c.do("POST", "/login", url.Values{"username": {"alice"}, "password": {"wrong"}})
		if p.status != want || p.cookie != nil {
			t.Fatalf("attempt %d: %d (cookie %v), want %d", i, p.status, p.cookie, want)
		}
		if want == 429 && p.header.Get("Retry-After") == "" {
			t.Errorf("429 without Retry-After")
		}
	}
	// throttled even with the right password: the throttle decides first
	p = c.do("POST", "/login", url.Values{"username": {"alice"}, "password": {testPassword}})
	mustStatus(t, p, 429, "right password while blocked")
	mustStatus(t, c.do("POST", "/login", url.Values{"username": {""}}), 400, "empty form")
	mustStatus(t, c.do("POST", "/login", url.Values{"username": {"bob"}, "password": {"x"}}, "Origin: https://evil.example"), 403, "cross-site login")
}

func TestSessionTampering(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	seed(f)
	c := &client{f: f}
	if p := c.get("/"); p.user != "" {
		t.Fatalf("Serve names %q before any login", p.user)
	}
	c.login("bob")
	if p := c.get("/"); !p.has(`id="user">bob<`) || p.user != "bob" {
		t.Fatalf("not logged in (Serve names %q)", p.user)
	}
	good := c.cookie.Value
	parts := strings.Split(good, ".")
	forged := []string{
		b64.EncodeToString([]byte("alice")) + "." + parts[1] + "." + parts[2], // other user, same MAC
		parts[0] + ".99999999999." + parts[2],                                 // stretched expiry
		parts[0] + "." + parts[1] + ".AAAA",                                   // bad MAC
		"garbage", "", strings.Repeat("a.", 800),
	}
	for _, v := range forged {
		c.cookie = &http.Cookie{Name: CookieName, Value: v}
		p := c.get("/r/secret/keys")
		mustStatus(t, p, 404, "forged cookie")
		if p.has(`id="user"`) || p.user != "" {
			t.Errorf("forged cookie %q accepted", v)
		}
	}
	// expired
	f.ui.sess.now = func() time.Time { return time.Now().Add(13 * time.Hour) }
	c.cookie = &http.Cookie{Name: CookieName, Value: good}
	if c.get("/").has(`id="user"`) {
		t.Error("expired session accepted")
	}
	f.ui.sess.now = time.Now
	// another site's key (or host) does not verify
	other := &sessions{key: f.ui.sess.key, host: "other.test", ttl: time.Hour, now: time.Now}
	v, _ := other.issue("alice")
	c.cookie = &http.Cookie{Name: CookieName, Value: v}
	if c.get("/").has(`id="user"`) {
		t.Error("another site's session accepted")
	}
}

func TestDeleteWithCSRF(t *testing.T) {
	f := newFixture(t, fixtureOpts{delete: true})
	seed(f)
	img := f.image("team/app", "2.0", "linux/amd64", nil, 10)
	alice, bob := &client{f: f}, &client{f: f}
	alice.login("alice")
	bob.login("bob")

	// bob may pull but not delete: no buttons, and the endpoints refuse
	p := bob.get("/r/team/app")
	if p.has("Delete") {
		t.Fatal("bob sees a delete button")
	}
	if bob.get("/r/team/app@" + string(img.Digest)).has("Delete this manifest") {
		t.Fatal("bob sees a manifest delete button")
	}
	mustStatus(t, bob.get("/-/delete?repo=team/app&ref=1.0"), 403, "bob confirm")
	mustStatus(t, bob.do("POST", "/-/delete", url.Values{"repo": {"team/app"}, "ref": {"1.0"}, "csrf": {csrfOf(t, p)}}), 403, "bob delete")
	// anonymous: the repository does not even exist
	mustStatus(t, (&client{f: f}).do("POST", "/-/delete", url.Values{"repo": {"team/app"}, "ref": {"1.0"}}), 403, "anon delete")

	// alice sees the button; the confirmation page carries her token
	p = alice.get("/r/team/app")
	if !p.raw(`<button class="danger" type="submit">Delete</button>`) {
		t.Fatal("alice sees no delete button")
	}
	conf := alice.get("/-/delete?repo=team/app&ref=1.0")
	mustStatus(t, conf, 200, "confirm")
	tok := csrfOf(t, conf)
	form := func(tok string) url.Values {
		return url.Values{"repo": {"team/app"}, "ref": {"1.0"}, "csrf": {tok}}
	}
	// no token, a wrong one, bob's token, a cross-site origin: refused, the tag stays
	mustStatus(t, alice.do("POST", "/-/delete", form("")), 403, "no token")
	mustStatus(t, alice.do("POST", "/-/delete", form("x"+tok)), 403, "wrong token")
	mustStatus(t, alice.do("POST", "/-/delete", form(csrfOf(t, bob.get("/")))), 403, "bob's token")
	mustStatus(t, alice.do("POST", "/-/delete", form(tok), "Origin: http://evil.example"), 403, "cross origin")
	mustStatus(t, alice.do("POST", "/-/delete", form(tok), "Sec-Fetch-Site: cross-site"), 403, "cross site")
	if !alice.get("/r/team/app").has(`data-tag="1.0"`) {
		t.Fatal("tag gone after refused deletes")
	}
	// the real one
	p = alice.do("POST", "/-/delete", form(tok), "Origin: http://registry.test")
	mustStatus(t, p, http.StatusSeeOther, "delete")
	// the delete runs for alice (the webhook event's actor) and the
	// access log gets her name from Serve
	if len(f.deletedBy) != 1 || f.deletedBy[0] != "alice" || p.user != "alice" {
		t.Fatalf("delete ran for %q, Serve named %q; want alice", f.deletedBy, p.user)
	}
	if alice.get("/r/team/app").has(`data-tag="1.0"`) {
		t.Fatal("tag still listed after delete")
	}
	f.api("GET", "/v2/team/app/manifests/2.0", "", nil) // the other tag stays
	mustStatus(t, alice.do("POST", "/-/delete", form(tok)), 404, "delete again")

	// deleting a manifest removes its tags too, like the API
	conf = alice.get("/-/delete?repo=team/app&ref=" + string(img.Digest))
	if !conf.has("2.0") {
		t.Errorf("confirmation does not name the tags that go: %s", conf.body)
	}
	p = alice.do("POST", "/-/delete", url.Values{"repo": {"team/app"}, "ref": {string(img.Digest)}, "csrf": {tok}})
	mustStatus(t, p, http.StatusSeeOther, "delete manifest")
	mustStatus(t, alice.get("/r/team/app@"+string(img.Digest)), 404, "deleted manifest")

	// logout needs the token too, and ends the session
	mustStatus(t, alice.do("POST", "/logout", url.Values{"csrf": {"nope"}}), 403, "logout without token")
	p = alice.do("POST", "/logout", url.Values{"csrf": {tok}})
	mustStatus(t, p, http.StatusSeeOther, "logout")
	if p.cookie == nil || p.cookie.MaxAge >= 0 {
		t.Errorf("logout does not clear the cookie: %+v", p.cookie)
	}
}

func TestNoDeleteWhenSiteForbids(t *testing.T) {
	f := newFixture(t, fixtureOpts{delete: false})
	seed(f)
	alice := &client{f: f}
	alice.login("alice")
	if alice.get("/r/team/app").has("Delete") {
		t.Fatal("delete button on a site with delete = false")
	}
	mustStatus(t, alice.get("/-/delete?repo=team/app&ref=1.0"), 403, "confirm")
}

func TestRemovedUserLosesSession(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	seed(f)
	c := &client{f: f}
	c.login("bob")
	f.ui.cfg.Auth = removed{f.svc, "bob"}
	if c.get("/").has(`id="user"`) {
		t.Fatal("session of a removed user still valid")
	}
}

type removed struct {
	*auth.Service
	gone string
}

func (r removed) HasUser(u string) bool { return u != r.gone && r.Service.HasUser(u) }

func TestCacheSite(t *testing.T) {
	now := time.Now()
	f := newFixture(t, fixtureOpts{noAuth: true, mutate: func(c *Config) {
		c.Kind, c.Upstream, c.MaxAge = KindCache, "https://upstream.test", 48*time.Hour
		c.Now = func() time.Time { return now.Add(40 * time.Hour) }
	}})
	d := f.image("library/alpine", "3", "linux/amd64", nil, 10)
	// the cache's tag record: JSON with the digest and the last check
	rec := fmt.Sprintf(`{"digest":%q,"mediaType":%q,"size":%d,"checked":"2026-02-03T04:05:06Z"}`, d.Digest, d.MediaType, d.Size)
	if err := f.reg.Store().PutRecord(t.Context(), "library/alpine", layout.Tag("3"), []byte(rec)); err != nil {
		t.Fatal(err)
	}
	p := (&client{f: f}).get("/r/library/alpine")
	mustStatus(t, p, 200, "cache tags")
	for _, want := range []string{"cache of https://upstream.test", "Last pulled", "2026-02-03 04:05 UTC", "(soon)", string(d.Digest)[7:19]} {
		if !p.has(want) {
			t.Errorf("cache page lacks %q", want)
		}
	}
}

// errorText is the sentence of an error page.
func errorText(p *resp) string {
	_, after, _ := strings.Cut(p.body, `id="error-message">`)
	msg, _, _ := strings.Cut(after, "<")
	return msg
}

// The repository list is reused for ListTTL and then refreshed in the
// background: a new repository shows up on a later page.
func TestRepoListRefresh(t *testing.T) {
	f := newFixture(t, fixtureOpts{noAuth: true})
	f.image("lib/one", "v1", "linux/amd64", nil, 10)
	c := &client{f: f}
	if !c.get("/").has("lib/one") {
		t.Fatal("first repository missing")
	}
	f.image("lib/two", "v1", "linux/amd64", nil, 10)
	if c.get("/").has("lib/two") {
		t.Fatal("the list was not reused within ListTTL")
	}
	// the tags page reads the store directly, so the new one is there already
	mustStatus(t, c.get("/r/lib/two"), 200, "new repository's page")
	f.ui.namesMu.Lock()
	f.ui.namesAt = f.ui.namesAt.Add(-ListTTL)
	f.ui.namesMu.Unlock()
	c.get("/") // starts the background listing
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		f.ui.namesMu.Lock()
		done := !f.ui.refreshing
		f.ui.namesMu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the background listing never finished") // a hang guard
		}
	}
	if !c.get("/").has("lib/two") {
		t.Fatal("the new repository never showed up")
	}
}

// A Docker schema 2 image and a buildx-style index with an attestation
// manifest (platform unknown/unknown): platforms skip the attestation,
// the Docker config is read like an OCI one.
func TestDockerImageAndAttestationIndex(t *testing.T) {
	f := newFixture(t, fixtureOpts{noAuth: true})
	cfg := f.blob("lib/d", []byte(`{"architecture":"arm","variant":"v7","os":"linux","config":{"Labels":{"k":"v"}}}`))
	cfg.MediaType = "application/vnd.docker.container.image.v1+json"
	layer := f.blob("lib/d", []byte("layer"))
	layer.MediaType = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	img := f.manifest("lib/d", "", &backend.Manifest{SchemaVersion: 2, MediaType: backend.MediaTypeDockerManifest, Config: &cfg, Layers: []backend.Descriptor{layer}})
	img.Platform = &backend.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
	att := img
	att.Platform = &backend.Platform{OS: "unknown", Architecture: "unknown"}
	f.manifest("lib/d", "v1", &backend.Manifest{SchemaVersion: 2, MediaType: backend.MediaTypeDockerManifestList, Manifests: []backend.Descriptor{img, att}})
	c := &client{f: f}
	p := c.get("/r/lib/d")
	if row := between(p.body, `data-tag="v1"`, "</tr>"); !strings.Contains(row, `<td class="platforms">linux/arm/v7</td>`) || !strings.Contains(row, "k</b>=v") {
		t.Fatalf("index row: %s", row)
	}
	p = c.get("/r/lib/d@" + string(img.Digest))
	if !p.has("linux/arm/v7") || !p.has("application/vnd.docker.image.rootfs.diff.tar.gzip") {
		t.Fatalf("docker image page:\n%s", p.body)
	}
}

func between(s, from, to string) string {
	_, after, _ := strings.Cut(s, from)
	in, _, _ := strings.Cut(after, to)
	return in
}

// The login links bring the viewer back to the page they were on.
func TestLoginComesBack(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	seed(f)
	c := &client{f: f}
	p := c.get("/r/team/app")
	mustStatus(t, p, 404, "hidden for anonymous")
	m := regexp.MustCompile(`href="/login\?next=([^"]+)"`).FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no login link on the 404 page:\n%s", p.body)
	}
	next, err := url.QueryUnescape(html.UnescapeString(m[1]))
	if err != nil || next != "/r/team/app" {
		t.Fatalf("next = %q (%v)", next, err)
	}
	form := c.get("/login?next=" + url.QueryEscape(next))
	if !form.raw(`name="next" value="/r/team/app"`) {
		t.Fatalf("login form does not carry next:\n%s", form.body)
	}
	p = c.do("POST", "/login", url.Values{"username": {"bob"}, "password": {testPassword}, "next": {next}})
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/r/team/app" {
		t.Fatalf("login: %d to %q", p.status, p.header.Get("Location"))
	}
	c.cookie = p.cookie
	mustStatus(t, c.get("/r/team/app"), 200, "after login")
}

func TestSpan(t *testing.T) {
	for d, want := range map[time.Duration]string{720 * time.Hour: "30 days", 36 * time.Hour: "36h", 90 * time.Minute: "1h30m", 48 * time.Hour: "2 days", 24 * time.Hour: "24h", 45 * time.Second: "45s"} {
		if got := span(d); got != want {
			t.Errorf("span(%v) = %q, want %q", d, got, want)
		}
	}
}

// In a repository with more than maxTagScan tags the image page names the
// tag it was opened from instead of reading every tag.
func TestImageTagsInBigRepository(t *testing.T) {
	f := newFixture(t, fixtureOpts{noAuth: true})
	img := f.image("lib/big", "keep", "linux/amd64", nil, 10)
	body, err := storage.ReadBlob(t.Context(), f.reg.Store(), img.Digest, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxTagScan {
		f.api("PUT", fmt.Sprintf("/v2/lib/big/manifests/t%d", i), img.MediaType, body)
	}
	c := &client{f: f}
	p := c.get("/r/lib/big@" + string(img.Digest) + "?tag=t7")
	if got := strings.TrimSpace(between(p.body, `id="image-tags">`, "<")); got != "t7" || !p.has("of 501 were not searched") {
		t.Fatalf("tags %q:\n%s", got, p.body)
	}
	if !p.has("docker pull registry.test/lib/big:t7") {
		t.Error("no pull line for the hinted tag")
	}
	// a hint that does not name this image is not shown
	p = c.get("/r/lib/big@" + string(img.Digest) + "?tag=nope")
	if got := strings.TrimSpace(between(p.body, `id="image-tags">`, "<")); got != "" {
		t.Fatalf("tags %q for a wrong hint", got)
	}
	// the repositories page does not sum the size of so many tags
	if p := c.get("/"); !p.raw(`title="more than 500 tags: not summed here"`) || !p.has("501") {
		t.Errorf("repositories row of a big repository:\n%s", p.body)
	}
	// the tags page links with the hint
	if !c.get("/r/lib/big").raw(`@` + string(img.Digest) + `?tag=keep"`) {
		t.Error("tags page links without ?tag=")
	}
}

// A mirror with an upstream table says which upstream each repository
// comes from.
func TestCacheUpstreamOf(t *testing.T) {
	f := newFixture(t, fixtureOpts{noAuth: true, mutate: func(c *Config) {
		c.Kind, c.Upstream = KindCache, "https://registry-1.docker.io"
		c.Upstreams = map[string]string{"ghcr.io": "https://ghcr.io", "ghcr.io/org": "https://org.example"}
	}})
	for _, tc := range []struct{ repo, want string }{
		{"library/alpine", "https://registry-1.docker.io"},
		{"ghcr.io/x/y", "https://ghcr.io"},
		{"ghcr.io/org/y", "https://org.example"},
		{"ghcr.iox/y", "https://registry-1.docker.io"},
	} {
		if got := f.ui.upstreamOf(tc.repo); got != tc.want {
			t.Errorf("upstreamOf(%s) = %q, want %q", tc.repo, got, tc.want)
		}
	}
	f.image("ghcr.io/x/y", "v1", "linux/amd64", nil, 10)
	if p := (&client{f: f}).get("/r/ghcr.io/x/y"); !p.has("cached from https://ghcr.io") {
		t.Errorf("repository page does not name its upstream:\n%s", p.body)
	}
}
