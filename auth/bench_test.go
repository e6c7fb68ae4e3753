package auth

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/wharf-dev/wharf/backend"
)

// BenchmarkHandler measures auth alone (the Guard asked as the gateway
// asks it, stub backend, no network) for the requests the acceptance
// benchmark makes.
func BenchmarkHandler(b *testing.B) {
	p := b.TempDir() + "/htpasswd"
	writeHtpasswd(b, p, testPasswords)
	s, err := New(b.Context(), Config{Htpasswd: p, Watch: -1}, discardLogger())
	if err != nil {
		b.Fatal(err)
	}
	h := asGateway(s.Guard(Site{Host: testHost, Policy: mustPolicy(b)}), func(http.ResponseWriter, *http.Request, *backend.Route, backend.Access, string) {})
	tok, _ := s.sig.sign(&Claims{Issuer: "wharf", Subject: "alice", Audience: testHost, Expiry: 1 << 40,
		Access: []Access{{"repository", "team-a/app", []string{"pull"}}}})
	for _, bc := range []struct{ name, authz string }{
		{"bearer", "Bearer " + tok},
		{"basic-cached", basic("alice", "apw")},
		{"anonymous-public", ""},
	} {
		b.Run(bc.name, func(b *testing.B) {
			path := "/v2/team-a/app/manifests/latest"
			if bc.authz == "" {
				path = "/v2/public/x/manifests/latest"
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				req := httptest.NewRequest("HEAD", path, nil)
				if bc.authz != "" {
					req.Header.Set("Authorization", bc.authz)
				}
				for pb.Next() {
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					if rec.Code != 200 {
						b.Fatalf("status %d", rec.Code)
					}
				}
			})
		})
	}
	b.ReportMetric(float64(s.BcryptChecks()), "bcrypts")
}
