package regclient

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestLoginBearer runs the Docker token dance against a server that
// answers /v2/ with a Bearer challenge and issues a token for Basic
// credentials; later requests must carry the token, not the password.
func TestLoginBearer(t *testing.T) {
	var tokenCalls atomic.Int64
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/token":
			u, p, ok := r.BasicAuth()
			if !ok || u != "alice" || p != "pw" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			if got := r.URL.Query()["scope"]; len(got) != 2 || got[0] != "repository:a/b:pull,push" {
				t.Errorf("scopes %v", got)
			}
			if r.URL.Query().Get("service") != "svc" {
				t.Errorf("service %q", r.URL.Query().Get("service"))
			}
			tokenCalls.Add(1)
			_ = json.NewEncoder(w).Encode(map[string]string{"token": "tok123"})
		case r.Header.Get("Authorization") == "Bearer tok123":
			w.WriteHeader(http.StatusOK)
		default:
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+srv.URL+`/token",service="svc"`)
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer srv.Close()

	c, err := New(Options{Base: srv.URL, User: "alice", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	scheme, err := c.Login(context.Background(), "a/b", "c/d")
	if err != nil || scheme != "bearer" {
		t.Fatalf("login: %q %v", scheme, err)
	}
	if c.AuthHeader() != "Bearer tok123" || tokenCalls.Load() != 1 {
		t.Fatalf("auth %q after %d token calls", c.AuthHeader(), tokenCalls.Load())
	}
	if err := c.GetURL(context.Background(), srv.URL+"/v2/a/b/manifests/x", -1); err != nil {
		t.Fatal(err)
	}
	if c.CredentialedRequests() != 1 {
		t.Fatalf("password sent %d times, want once (token request)", c.CredentialedRequests())
	}

	bad, _ := New(Options{Base: srv.URL, User: "alice", Password: "wrong"})
	if _, err := bad.Login(context.Background(), "a/b"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong password: %v", err)
	}
}

// TestLoginBasicAndNone covers servers that want Basic on every request
// and servers without auth.
func TestLoginBasicAndNone(t *testing.T) {
	basicSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := r.BasicAuth(); !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="Registry realm"`)
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer basicSrv.Close()
	c, _ := New(Options{Base: basicSrv.URL, User: "u", Password: "p"})
	if s, err := c.Login(context.Background()); err != nil || s != "basic" {
		t.Fatalf("basic login: %q %v", s, err)
	}
	for range 3 {
		if err := c.GetURL(context.Background(), basicSrv.URL+"/v2/", -1); err != nil {
			t.Fatal(err)
		}
	}
	if c.CredentialedRequests() != 3 {
		t.Fatalf("credentialed %d, want 3", c.CredentialedRequests())
	}
	noUser, _ := New(Options{Base: basicSrv.URL})
	if _, err := noUser.Login(context.Background()); err == nil {
		t.Fatal("Basic challenge without credentials: want error")
	}

	open := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer open.Close()
	c2, _ := New(Options{Base: open.URL})
	if s, err := c2.Login(context.Background()); err != nil || s != "none" || c2.AuthHeader() != "" {
		t.Fatalf("open login: %q %v %q", s, err, c2.AuthHeader())
	}
}
