package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(good, []byte("[listen]\nhttp = \":8080\"\n[[site]]\nhost = \"r.example\"\nbackend = \"registry\"\ntls = \"off\"\n"), 0o644)
	os.WriteFile(bad, []byte("[listen]\nhttp = \":8080\"\n[[site]]\nhost = \"r.example\"\nbakend = \"registry\"\n"), 0o644)
	tests := []struct {
		args        []string
		stdin       string
		code        int
		out, errOut string
	}{
		{[]string{"version"}, "", 0, "wharf ", ""},
		{[]string{"check", "-config", good}, "", 0, "ok (1 sites)", ""},
		{[]string{"check", "-config", bad}, "", 1, "", "bad.toml:5: unknown key \"site.bakend\""},
		{[]string{"check"}, "", 2, "", "-config is required"},
		{[]string{"frobnicate"}, "", 2, "", "unknown command"},
		{[]string{"passwd"}, "", 2, "", "usage: wharf passwd USER"},
		{[]string{"passwd", "alice"}, "s3cret\n", 0, "alice:$2y$", ""},
		{[]string{"import", "-config", good}, "", 2, "", "-from and -site are required"},
		{[]string{"import", "-config", good, "-from", dir, "-site", "other.example"}, "", 1, "", `no site with host = "other.example"`},
		{[]string{"import", "-config", good, "-from", dir, "-site", "r.example"}, "", 1, "", "not a registry:2/registry:3 storage root"},
		{[]string{"healthcheck", "-config", good, "extra"}, "", 2, "", "unexpected argument"},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		code := run(tt.args, strings.NewReader(tt.stdin), &out, &errOut)
		if code != tt.code || !strings.Contains(out.String(), tt.out) || !strings.Contains(errOut.String(), tt.errOut) {
			t.Errorf("wharf %v: code %d, stdout %q, stderr %q; want %d, %q, %q", tt.args, code, out.String(), errOut.String(), tt.code, tt.out, tt.errOut)
		}
	}
}

func TestPasswdLineVerifies(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"passwd", "bob"}, strings.NewReader("pa:ss word\r\n"), &out, &bytes.Buffer{}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	user, hash, _ := strings.Cut(strings.TrimSpace(out.String()), ":")
	if user != "bob" {
		t.Fatalf("user %q", user)
	}
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("pa:ss word")); err != nil {
		t.Fatalf("hash does not verify the password: %v", err)
	}
}

func TestHealthcheck(t *testing.T) {
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("ok\n"))
	}))
	defer healthy.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer broken.Close()
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://example.invalid/", http.StatusPermanentRedirect)
	}))
	defer redirect.Close()
	// a port nobody listens on: bind, note the address, close
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	_, healthyPort, _ := net.SplitHostPort(healthy.Listener.Addr().String())

	dir := t.TempDir()
	write := func(name, listen string) string {
		p := filepath.Join(dir, name)
		cfg := "[listen]\n" + listen + "\n[[site]]\nhost = \"r.example\"\nbackend = \"registry\"\ntls = \"off\"\n"
		if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	host := func(s *httptest.Server) string { return s.Listener.Addr().String() }
	tests := []struct {
		name        string
		listen      string
		code        int
		out, errOut string
	}{
		{"admin answers 200", fmt.Sprintf("http = %q\nhttps = \"\"\nadmin = %q", closed, host(healthy)), 0, "/healthz: ok", ""},
		{"wildcard admin is asked on loopback", fmt.Sprintf("http = %q\nhttps = \"\"\nadmin = \":%s\"", closed, healthyPort), 0, "127.0.0.1:" + healthyPort + "/healthz: ok", ""},
		{"admin answers 503", fmt.Sprintf("http = %q\nhttps = \"\"\nadmin = %q", closed, host(broken)), 1, "", "answered 503"},
		{"admin not listening", fmt.Sprintf("http = %q\nhttps = \"\"\nadmin = %q", host(healthy), closed), 1, "", "connection refused"},
		{"admin off, http redirects", fmt.Sprintf("http = %q\nhttps = \"\"\nadmin = \"\"", host(redirect)), 0, "answered 308 ([listen] admin is off", ""},
		{"admin off, http answers 503", fmt.Sprintf("http = %q\nhttps = \"\"\nadmin = \"\"", host(broken)), 1, "", "answered 503"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := write(fmt.Sprintf("c%d.toml", i), tt.listen)
			var out, errOut bytes.Buffer
			code := run([]string{"healthcheck", "-config", p}, strings.NewReader(""), &out, &errOut)
			if code != tt.code || !strings.Contains(out.String(), tt.out) || !strings.Contains(errOut.String(), tt.errOut) {
				t.Errorf("code %d, stdout %q, stderr %q; want %d, %q, %q", code, out.String(), errOut.String(), tt.code, tt.out, tt.errOut)
			}
		})
	}
	var errOut bytes.Buffer
	if code := run([]string{"healthcheck"}, strings.NewReader(""), &bytes.Buffer{}, &errOut); code != 2 || !strings.Contains(errOut.String(), "-config is required") {
		t.Errorf("without -config: code %d, stderr %q", code, errOut.String())
	}
}

func TestVersion(t *testing.T) {
	version, commit = "v9.8.7", "0123abcd"
	defer func() { version, commit = "", "" }()
	var out bytes.Buffer
	if code := run([]string{"version"}, strings.NewReader(""), &out, &bytes.Buffer{}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	want := fmt.Sprintf("wharf v9.8.7 (commit 0123abcd, %s, %s/%s)\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if out.String() != want {
		t.Errorf("version: %q, want %q", out.String(), want)
	}
}

func TestDialAddr(t *testing.T) {
	for in, want := range map[string]string{
		":9100":             "127.0.0.1:9100",
		"0.0.0.0:9100":      "127.0.0.1:9100",
		"[::]:9100":         "[::1]:9100",
		"10.0.0.5:9100":     "10.0.0.5:9100",
		"localhost:9100":    "localhost:9100",
		"admin.internal:80": "admin.internal:80",
		"not an address":    "not an address",
	} {
		if got := dialAddr(in); got != want {
			t.Errorf("dialAddr(%q) = %q, want %q", in, got, want)
		}
	}
}
