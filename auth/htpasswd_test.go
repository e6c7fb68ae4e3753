package auth

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"

	"golang.org/x/crypto/bcrypt"

	"github.com/wharf-dev/wharf/internal/testpeer"
)

// hash makes a cheap bcrypt hash for tests, with the given prefix ($2a$,
// $2b$ or $2y$).
func hash(t testing.TB, pw, prefix string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return prefix + string(h[4:])
}

func utf16le(s string, bom bool) []byte {
	var b []byte
	if bom {
		b = append(b, 0xFF, 0xFE)
	}
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u), byte(u>>8))
	}
	return b
}

func utf16be(s string) []byte {
	b := []byte{0xFE, 0xFF}
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u>>8), byte(u))
	}
	return b
}

func TestParseHtpasswd(t *testing.T) {
	ha, hb, hy := hash(t, "apw", "$2a$"), hash(t, "bpw", "$2b$"), hash(t, "ypw", "$2y$")
	plain := "alice:" + ha + "\nbob:" + hb + "\ncarol:" + hy + "\n"
	tests := []struct {
		name      string
		data      []byte
		users     map[string]string // user -> password that must verify
		warnings  []string          // substrings
		errSubstr []string          // substrings of the error; nil = no error
	}{
		{name: "plain", data: []byte(plain), users: map[string]string{"alice": "apw", "bob": "bpw", "carol": "ypw"}},
		{name: "blank lines and comments", data: []byte("\n# users\n\n  alice:" + ha + "  \n\t\n# end\n"), users: map[string]string{"alice": "apw"}},
		{name: "CRLF", data: []byte(strings.ReplaceAll(plain, "\n", "\r\n")), users: map[string]string{"alice": "apw", "carol": "ypw"}},
		{name: "no final newline", data: []byte("alice:" + ha), users: map[string]string{"alice": "apw"}},
		{name: "UTF-8 BOM", data: append([]byte{0xEF, 0xBB, 0xBF}, plain...), users: map[string]string{"alice": "apw"}},
		{name: "UTF-16 LE with BOM (PowerShell >)", data: utf16le(strings.ReplaceAll(plain, "\n", "\r\n"), true), users: map[string]string{"alice": "apw", "bob": "bpw"}},
		{name: "UTF-16 LE without BOM", data: utf16le(plain, false), users: map[string]string{"carol": "ypw"}},
		{name: "UTF-16 BE", data: utf16be(plain), users: map[string]string{"bob": "bpw"}},
		{name: "duplicate user: last wins", data: []byte("alice:" + hb + "\nalice:" + ha + "\n"), users: map[string]string{"alice": "apw"},
			warnings: []string{`pw:2: user "alice" is also on line 1; the last line wins`}},
		{name: "empty file", data: nil, users: map[string]string{}, warnings: []string{"no users"}},
		{name: "apr1", data: []byte("alice:" + ha + "\nbob:$apr1$abc$defghijklmnopqrstuvwx\n"),
			errSubstr: []string{"pw:2:", `user "bob"`, "Apache MD5", "wharf passwd USER", "htpasswd -nB USER"}},
		{name: "sha", data: []byte("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"), errSubstr: []string{"pw:1:", "SHA-1"}},
		{name: "plain text", data: []byte("\n\nbob:secret\n"), errSubstr: []string{"pw:3:", "plain-text"}},
		{name: "no colon", data: []byte("bob\n"), errSubstr: []string{"pw:1:", "not a user:hash line"}},
		{name: "empty user", data: []byte(":" + ha + "\n"), errSubstr: []string{"pw:1:", "empty user"}},
		{name: "broken bcrypt", data: []byte("bob:$2y$10$short\n"), errSubstr: []string{"pw:1:", "broken bcrypt"}},
		{name: "every bad line is reported", data: []byte("a:x\nb:y\n"), errSubstr: []string{"pw:1:", "pw:2:"}},
		{name: "binary", data: []byte{0xff, 0xfa, 0x00, 0x01}, errSubstr: []string{"UTF-8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			users, warnings, err := ParseHtpasswd("pw", tt.data)
			if tt.errSubstr != nil {
				if err == nil {
					t.Fatalf("accepted: %v", users)
				}
				for _, s := range tt.errSubstr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q lacks %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for u, pw := range tt.users {
				h, ok := users[u]
				if !ok {
					t.Fatalf("user %q missing; have %v", u, users)
				}
				if bcrypt.CompareHashAndPassword(h, []byte(pw)) != nil {
					t.Errorf("password of %q does not verify", u)
				}
			}
			if len(tt.users) == 0 && len(users) != 0 {
				t.Errorf("users = %v, want none", users)
			}
			if len(warnings) != len(tt.warnings) {
				t.Fatalf("warnings = %q, want %d", warnings, len(tt.warnings))
			}
			for i, w := range tt.warnings {
				if !strings.Contains(warnings[i], w) {
					t.Errorf("warning %q lacks %q", warnings[i], w)
				}
			}
		})
	}
}

func TestLoadHtpasswdMissing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "htpasswd")
	_, _, err := LoadHtpasswd(p)
	if err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "wharf passwd USER >> "+p) {
		t.Fatalf("err = %v", err)
	}
}

func TestPasswdLine(t *testing.T) {
	line, err := PasswdLine("alice", []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(line, "alice:$2y$10$") {
		t.Fatalf("line = %q", line)
	}
	users, _, err := ParseHtpasswd("x", []byte(line+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if bcrypt.CompareHashAndPassword(users["alice"], []byte("s3cret")) != nil {
		t.Fatal("the printed line does not verify")
	}
	for _, bad := range []string{"", "a:b", "a b", "a\n"} {
		if _, err := PasswdLine(bad, []byte("x")); err == nil {
			t.Errorf("PasswdLine(%q) accepted", bad)
		}
	}
	if _, err := PasswdLine("a", nil); err == nil {
		t.Error("empty password accepted")
	}
	if _, err := PasswdLine("a", bytes.Repeat([]byte("x"), 73)); err == nil {
		t.Error("73-byte password accepted")
	}
}

// TestHtpasswdTool reads what Apache's htpasswd -B writes (apache2-utils).
func TestHtpasswdTool(t *testing.T) {
	bin, err := exec.LookPath("htpasswd")
	if err != nil {
		testpeer.Missing(t, "htpasswd (apache2-utils) not installed")
	}
	p := filepath.Join(t.TempDir(), "htpasswd")
	for _, args := range [][]string{{"-cbB", p, "alice", "apw"}, {"-bB", "-C", "7", p, "bob", "bpw"}, {"-bm", p, "md5user", "x"}} {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("htpasswd %v: %v\n%s", args, err, out)
		}
	}
	_, _, err = LoadHtpasswd(p)
	if err == nil || !strings.Contains(err.Error(), p+":3:") || !strings.Contains(err.Error(), "Apache MD5") {
		t.Fatalf("MD5 line not refused with file:line: %v", err)
	}
	data, _ := os.ReadFile(p)
	lines := strings.SplitAfter(string(data), "\n")
	users, _, err := ParseHtpasswd(p, []byte(lines[0]+lines[1]))
	if err != nil {
		t.Fatal(err)
	}
	for u, pw := range map[string]string{"alice": "apw", "bob": "bpw"} {
		if bcrypt.CompareHashAndPassword(users[u], []byte(pw)) != nil {
			t.Errorf("%s: htpasswd -B hash does not verify", u)
		}
	}
}

func TestReadPassword(t *testing.T) {
	tests := []struct {
		in, want string
		err      bool
	}{
		{"secret\n", "secret", false},
		{"secret\r\n", "secret", false},
		{"secret", "secret", false},
		{"sec ret \nignored\n", "sec ret ", false},
		{"\n", "", true},
		{"", "", true},
	}
	for _, tt := range tests {
		got, err := ReadPassword(strings.NewReader(tt.in))
		if (err != nil) != tt.err || string(got) != tt.want {
			t.Errorf("ReadPassword(%q) = %q, %v", tt.in, got, err)
		}
	}
}
