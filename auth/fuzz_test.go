package auth

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/wharf-dev/wharf/policy"
)

// FuzzParseHtpasswd: any bytes give users or an error, never a panic, and
// whatever is accepted is a usable bcrypt table.
func FuzzParseHtpasswd(f *testing.F) {
	f.Add([]byte("alice:$2y$04$CC4bUwBUr8sWz3Jh3rmn5.Dw7a0L1Xq0Q2sZ9h8kR0Z5QyZc2m6ha\n"))
	f.Add([]byte("\xef\xbb\xbf# c\r\n\r\nbob:$apr1$x$y\r\n"))
	f.Add(utf16le("a:b\r\n", true))
	f.Add([]byte{0xff, 0xfe, 0x41})
	f.Fuzz(func(t *testing.T, data []byte) {
		users, _, err := ParseHtpasswd("f", data)
		if err != nil {
			if users != nil {
				t.Fatal("users and an error")
			}
			return
		}
		for u, h := range users {
			if u == "" || strings.ContainsAny(u, ": \t\r\n") {
				t.Fatalf("bad user name %q accepted", u)
			}
			if hashKind(string(h)) != "" {
				t.Fatalf("non-bcrypt hash %q accepted", h)
			}
		}
	})
}

// FuzzAuthorization sends any Authorization header to Decide and to the
// token endpoint: the answer is never a 5xx.
func FuzzAuthorization(f *testing.F) {
	htpasswd := t0Htpasswd(f)
	s, err := New(context.Background(), Config{Htpasswd: htpasswd, Watch: -1, Throttle: Throttle{UserFree: 1 << 30, AddrFree: 1 << 30}}, zerolog.Nop())
	if err != nil {
		f.Fatal(err)
	}
	pol, _ := policy.New(testRules, map[string][]string{"ci": {"ci-bot"}})
	h := asGateway(s.Guard(Site{Host: testHost, Policy: pol}), stubBackend)
	good, _ := s.sig.sign(&Claims{Issuer: "wharf", Subject: "alice", Audience: testHost, Expiry: time.Now().Add(time.Hour).Unix(),
		Access: []Access{{"repository", "team-a/app", []string{"pull"}}}})
	for _, seed := range []string{
		"", "Basic", "Basic ", basic("alice", "apw"), basic("alice", "x"), basic("", ""), "Basic YWxpY2U=", "Basic ====",
		"Bearer", "Bearer " + good, "Bearer " + good[:len(good)/2], "Bearer a.b.c", "bearer " + good + " x",
		"Digest realm=x", "Basic " + strings.Repeat("A", 100), "\x00\xff",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, authz string) {
		for _, target := range []string{"/v2/", "/v2/team-a/app/manifests/latest", TokenPath + "?scope=repository:team-a/app:pull"} {
			req := httptest.NewRequest("GET", target, nil)
			req.Header["Authorization"] = []string{authz}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code >= 500 {
				t.Fatalf("%s with %q: %d", target, authz, rec.Code)
			}
			if rec.Code == 401 && rec.Header().Get("WWW-Authenticate") == "" {
				t.Fatalf("%s: 401 without a challenge", target)
			}
		}
	})
}

// FuzzVerifyToken: no input other than a token wharf signed verifies.
func FuzzVerifyToken(f *testing.F) {
	s := newSigner("wharf", []byte("0123456789abcdef0123456789abcdef"))
	now := time.Unix(1_800_000_000, 0)
	good, _ := s.sign(&Claims{Issuer: "wharf", Subject: "a", Audience: "h", Expiry: now.Unix() + 60})
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(s.ring.Load().current.header + "..")
	f.Add("e30.e30.")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := s.verify(tok, "h", now)
		if err == nil && (tok != good || c.Subject != "a") {
			t.Fatalf("forged token %q verified", tok)
		}
	})
}

// t0Htpasswd writes the test users once for a fuzz target.
func t0Htpasswd(f *testing.F) string {
	p := f.TempDir() + "/htpasswd"
	writeHtpasswd(f, p, testPasswords)
	return p
}
