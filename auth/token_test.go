package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend"
)

func TestTokenVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := newSigner("wharf", []byte("0123456789abcdef0123456789abcdef"))
	other := newSigner("wharf", []byte("fedcba9876543210fedcba9876543210"))
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
		{"foreign key", foreign, "r.test", errTokenKey},
		{"foreign signature under our kid", parts[0] + foreign[strings.IndexByte(foreign, '.'):], "r.test", errTokenSignature},
		{"expired", expTok, "r.test", errTokenExpired},
		{"not yet valid", futTok, "r.test", errTokenExpired},
		{"truncated", tok[:len(parts[0])+len(parts[1])+2+4], "r.test", errTokenSignature},
		{"truncated to two parts", parts[0] + "." + parts[1], "r.test", errTokenMalformed},
		{"tampered payload", tampered, "r.test", errTokenSignature},
		{"alg none", noneAlg, "r.test", errTokenKey},
		{"empty", "", "r.test", errTokenMalformed},
		{"garbage", "!!!.???.***", "r.test", errTokenKey},
		{"four parts", tok + ".x", "r.test", errTokenMalformed},
		{"huge", strings.Repeat("a", MaxTokenLen+1), "r.test", errTokenMalformed},
	}
	head, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || string(head) != `{"alg":"HS256","typ":"JWT","kid":"`+s.ring.Load().current.id+`"}` || len(s.ring.Load().current.id) != 16 {
		t.Fatalf("token header %s (%v)", head, err)
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

func TestLoadKeys(t *testing.T) {
	p := filepath.Join(t.TempDir(), "auth", "token.key")
	k1, err := loadKeys(p)
	if err != nil || len(k1) != 1 || len(k1[0]) != 32 {
		t.Fatal(k1, err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, st.Mode())
	}
	k2, err := loadKeys(p)
	if err != nil || string(k1[0]) != string(k2[0]) {
		t.Fatalf("key not kept across loads: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".token.key-*")); len(m) != 0 {
		t.Fatalf("temporary files left: %v", m)
	}
	a, b := strings.Repeat("ab", 32), strings.Repeat("cd", 40)
	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
		keys          int    // keys read; 0 = an error
		errHas        string // in the error
	}{
		{"one key", a + "\n", 0o600, 1, ""},
		{"two keys, comments, CRLF", "# new\r\n" + a + "\r\n\n# old\n" + b + "\n", 0o600, 2, ""},
		{"owner read-only", a, 0o400, 1, ""},
		{"group-readable", a, 0o640, 0, "chmod 600"},
		{"world-readable", a, 0o604, 0, "readable or writable by group or others (mode 0604)"},
		{"not hex", "zz\n", 0o600, 0, "delete the file"},
		{"too short", "abcd\n", 0o600, 0, ":1: want a key of at least 64 hex digits"},
		{"second line bad", a + "\nxyz\n", 0o600, 0, ":2:"},
		{"only comments", "# nothing\n", 0o600, 0, "holds no key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "k")
			if err := os.WriteFile(f, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(f, tc.mode); err != nil {
				t.Fatal(err)
			}
			keys, err := loadKeys(f)
			if tc.keys == 0 {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) || !strings.Contains(err.Error(), f) {
					t.Fatalf("want an error naming the file and %q, got %v", tc.errHas, err)
				}
				return
			}
			if err != nil || len(keys) != tc.keys {
				t.Fatalf("%d keys, %v; want %d", len(keys), err, tc.keys)
			}
		})
	}
	k3, _ := loadKeys("")
	k4, _ := loadKeys("")
	if len(k3[0]) != 32 || string(k3[0]) == string(k4[0]) {
		t.Fatal("ephemeral keys are not random")
	}
}

// writeKeyFile replaces the key file the way an operator should: a new
// file renamed into place.
func writeKeyFile(t *testing.T, path string, mode os.FileMode, keys ...string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(strings.Join(keys, "\n")+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func tokenKid(t *testing.T, bearer string) string {
	t.Helper()
	head, _, _ := strings.Cut(strings.TrimPrefix(bearer, "Bearer "), ".")
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Kid string }
	if err := json.Unmarshal(raw, &h); err != nil || h.Kid == "" {
		t.Fatalf("token header %s without kid (%v)", raw, err)
	}
	return h.Kid
}

// A key rotation in the middle of a 30-layer pull: the pull finishes with
// the token it started with, new tokens carry the new kid, and the old
// key stops verifying one token lifetime after it left the file.
func TestTokenKeyRotationDuringPull(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	keyFile := filepath.Join(t.TempDir(), "auth", "token.key")
	f := newFixture(t, Site{}, Config{Now: clock, KeyFile: keyFile})
	tok1 := f.token(t, "alice", "apw", "repository:team-a/app:pull")
	kid1 := tokenKid(t, tok1)
	if kid1 != f.s.TokenKeyID() {
		t.Fatalf("token kid %s, service signs with %s", kid1, f.s.TokenKeyID())
	}
	newKey := strings.Repeat("5e", 32)
	for layer := 0; layer < 30; layer++ {
		if layer == 15 {
			writeKeyFile(t, keyFile, 0o600, newKey) // the old key leaves the file
			if err := f.s.Reload(); err != nil {
				t.Fatal(err)
			}
			if f.s.TokenKeyID() == kid1 {
				t.Fatal("reload did not rotate the key")
			}
		}
		path := fmt.Sprintf("/v2/team-a/app/blobs/sha256:%064x", layer)
		if resp := f.do(t, "GET", path, tok1); resp.StatusCode != 200 {
			t.Fatalf("layer %d with the token from before the rotation: %s", layer, resp.Status)
		}
	}
	tok2 := f.token(t, "alice", "apw", "repository:team-a/app:pull")
	if kid2 := tokenKid(t, tok2); kid2 == kid1 || kid2 != f.s.TokenKeyID() {
		t.Fatalf("new token kid %s; old %s, current %s", kid2, kid1, f.s.TokenKeyID())
	}
	if !strings.Contains(f.logs.String(), "token key rotated") {
		t.Fatal("rotation not logged")
	}
	// a group-readable file is refused and the keys in use stay
	writeKeyFile(t, keyFile, 0o644, strings.Repeat("77", 32))
	if err := f.s.Reload(); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("reload of a world-readable key file: %v", err)
	}
	if f.s.TokenKeyID() != tokenKid(t, tok2) {
		t.Fatal("a refused key file changed the signing key")
	}
	if resp := f.do(t, "GET", "/v2/team-a/app/blobs/sha256:"+strings.Repeat("0", 64), tok2); resp.StatusCode != 200 {
		t.Fatalf("token after a refused key file: %s", resp.Status)
	}
	// one token lifetime later the retired key is gone
	writeKeyFile(t, keyFile, 0o600, newKey)
	mu.Lock()
	now = now.Add(10 * time.Minute)
	mu.Unlock()
	if err := f.s.Reload(); err != nil {
		t.Fatal(err)
	}
	if n := len(f.s.sig.ring.Load().byHeader); n != 1 {
		t.Fatalf("%d keys verify after the old key's tokens expired, want 1", n)
	}
	// and New refuses a group-readable key file outright
	_ = os.Chmod(keyFile, 0o640)
	if _, err := New(context.Background(), Config{KeyFile: keyFile}, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), keyFile) {
		t.Fatalf("New with a group-readable key file: %v", err)
	}
}

// The file watcher rotates too: no SIGHUP needed.
func TestTokenKeyWatched(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "token.key")
	f := newFixture(t, Site{}, Config{KeyFile: keyFile, Watch: 5 * time.Millisecond})
	old := f.s.TokenKeyID()
	oldKeys, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	// the new key first, the old one kept: both verify
	writeKeyFile(t, keyFile, 0o600, strings.Repeat("a1", 32), strings.TrimSpace(string(oldKeys)))
	waitFor(t, func() bool { return f.s.TokenKeyID() != old })
	if n := len(f.s.sig.ring.Load().byHeader); n != 2 {
		t.Fatalf("%d keys verify, want 2", n)
	}
}
