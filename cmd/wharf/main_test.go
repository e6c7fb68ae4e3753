package main

import (
	"bytes"
	"os"
	"path/filepath"
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
