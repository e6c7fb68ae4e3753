package auth

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/backend"
)

func TestTokenVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := &signer{key: []byte("0123456789abcdef0123456789abcdef"), issuer: "wharf"}
	other := &signer{key: []byte("fedcba9876543210fedcba9876543210"), issuer: "wharf"}
	good := &Claims{Issuer: "wharf", Subject: "alice", Audience: "r.test", IssuedAt: now.Unix(), NotBefore: now.Unix(),
		Expiry: now.Add(time.Minute).Unix(), Access: []Access{{Type: "repository", Name: "a/b", Actions: []string{"pull"}}}}
	tok, err := s.sign(good)
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := other.sign(good)
	expired := *good
	expired.Expiry = now.Add(-time.Second).Unix()
	expTok, _ := s.sign(&expired)
	future := *good
	future.NotBefore = now.Add(time.Hour).Unix()
	futTok, _ := s.sign(&future)
	otherIss := *good
	otherIss.Issuer = "someone"
	issTok, _ := s.sign(&otherIss)
	parts := strings.Split(tok, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"root","aud":"r.test"}`)) + "." + parts[2]
	noneAlg := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + parts[1] + "."

	tests := []struct {
		name, tok, aud string
		want           error
	}{
		{"good", tok, "r.test", nil},
		{"audience case-insensitive", tok, "R.TEST", nil},
		{"other host", tok, "mirror.test", errTokenAudience},
		{"other issuer", issTok, "r.test", errTokenAudience},
		{"foreign signature", foreign, "r.test", errTokenSignature},
		{"expired", expTok, "r.test", errTokenExpired},
		{"not yet valid", futTok, "r.test", errTokenExpired},
		{"truncated", tok[:len(parts[0])+len(parts[1])+2+4], "r.test", errTokenSignature},
		{"truncated to two parts", parts[0] + "." + parts[1], "r.test", errTokenMalformed},
		{"tampered payload", tampered, "r.test", errTokenSignature},
		{"alg none", noneAlg, "r.test", errTokenMalformed},
		{"empty", "", "r.test", errTokenMalformed},
		{"garbage", "!!!.???.***", "r.test", errTokenMalformed},
		{"four parts", tok + ".x", "r.test", errTokenMalformed},
		{"huge", strings.Repeat("a", MaxTokenLen+1), "r.test", errTokenMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := s.verify(tt.tok, tt.aud, now)
			if !errors.Is(err, tt.want) {
				t.Fatalf("verify = %v, want %v", err, tt.want)
			}
			if err == nil && !reflect.DeepEqual(c, good) {
				t.Fatalf("claims = %+v, want %+v", c, good)
			}
		})
	}
	if !good.grants("a/b", backend.ActionPull) || good.grants("a/b", backend.ActionPush) || good.grants("a/c", backend.ActionPull) {
		t.Error("grants is wrong")
	}
}

func TestParseScopes(t *testing.T) {
	tests := []struct {
		in   []string
		want []Scope
	}{
		{[]string{"repository:foo/bar:pull,push"}, []Scope{{"repository", "foo/bar", []string{"pull", "push"}}}},
		{[]string{"repository:a:pull", "repository:b:push,pull,push"}, []Scope{{"repository", "a", []string{"pull"}}, {"repository", "b", []string{"push", "pull"}}}},
		{[]string{"repository:a:pull repository:b:*"}, []Scope{{"repository", "a", []string{"pull"}}, {"repository", "b", []string{"*"}}}},
		{[]string{"repository(plugin):p:pull"}, []Scope{{"repository", "p", []string{"pull"}}}},
		{[]string{"registry:catalog:*"}, []Scope{{"registry", "catalog", []string{"*"}}}},
		{[]string{"repository:localhost:5000/x:pull"}, []Scope{{"repository", "localhost:5000/x", []string{"pull"}}}},
		{[]string{"", "nocolon", "repository:x", ":x:pull", "repository::pull", "repository:x:"}, nil},
	}
	for _, tt := range tests {
		if got := ParseScopes(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseScopes(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestLoadKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), "auth", "token.key")
	k1, err := loadKey(p)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, st.Mode())
	}
	k2, err := loadKey(p)
	if err != nil || string(k1) != string(k2) {
		t.Fatalf("key not kept across loads: %v", err)
	}
	if err := os.WriteFile(p, []byte("zz\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadKey(p); err == nil || !strings.Contains(err.Error(), "delete the file") {
		t.Fatalf("bad key file: %v", err)
	}
	k3, _ := loadKey("")
	k4, _ := loadKey("")
	if len(k3) != 32 || string(k3) == string(k4) {
		t.Fatal("ephemeral keys are not random")
	}
}
