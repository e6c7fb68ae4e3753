package ui

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzSession: no cookie value but one issue made verifies, and none
// panics.
func FuzzSession(f *testing.F) {
	s := &sessions{key: make([]byte, 32), host: "registry.test", ttl: time.Hour, now: time.Now}
	good, _ := s.issue("alice")
	for _, seed := range []string{good, "", ".", "..", "YWxpY2U.1.x", good + "x", strings.Replace(good, ".", "..", 1)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v string) {
		user, ok := s.check(v)
		if ok && (v != good || user != "alice") {
			t.Fatalf("forged session %q accepted as %q", v, user)
		}
		if s.checkCSRF(v, v) && v != "" {
			t.Fatalf("a cookie value passed as its own CSRF token")
		}
	})
}

// FuzzPages: any path, query and method gets an answer below 500 with the
// security headers, never a panic.
func FuzzPages(f *testing.F) {
	fx := newFixture(f, fixtureOpts{noAuth: true, delete: true})
	fx.image("lib/web", "v1", "linux/amd64", map[string]string{"a": "<xss>"}, 10)
	for _, seed := range []string{"/", "/r/lib/web", "/r/lib/web@sha256:00", "/r/lib/web@", "/r/", "/r/@", "/-/static/app.js",
		"/-/static/%2e%2e/ui.go", "/-/delete?repo=lib/web&ref=v1", "/login?next=//x", "/?q=%00&page=99999999999999999999"} {
		f.Add("GET", seed)
		f.Add("POST", seed)
	}
	f.Fuzz(func(t *testing.T, method, target string) {
		if !strings.HasPrefix(target, "/") {
			return
		}
		u, err := url.ParseRequestURI(target)
		if err != nil || (method != "GET" && method != "POST" && method != "HEAD") {
			return
		}
		req := httptest.NewRequest(method, "http://registry.test/", nil)
		req.URL = u
		rec := httptest.NewRecorder()
		fx.ui.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s: %d", method, target, rec.Code)
		}
		if rec.Header().Get("Content-Security-Policy") != csp {
			t.Fatalf("%s %s: no CSP", method, target)
		}
		if rec.Code == http.StatusOK && strings.Contains(rec.Body.String(), "<xss>") {
			t.Fatalf("%s %s: label not escaped", method, target)
		}
	})
}
