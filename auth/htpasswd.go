package auth

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
)

// fixHint is appended to every refusal of a password line.
const fixHint = "make a bcrypt line with `wharf passwd USER` or `htpasswd -nB USER`"

// Users maps user names to bcrypt hashes, as read from an htpasswd file.
type Users map[string][]byte

// LoadHtpasswd reads and parses an htpasswd file. Problems that make the
// file unusable are errors (file:line: message); harmless ones (duplicate
// users) come back as warnings.
func LoadHtpasswd(path string) (Users, []string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("htpasswd file %s does not exist: create it with `wharf passwd USER >> %s`", path, path)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read htpasswd file: %w", err)
	}
	return ParseHtpasswd(path, data)
}

// ParseHtpasswd parses the content of an htpasswd file named name (used in
// messages). It accepts blank lines, '#' comments, CRLF line ends, a UTF-8
// byte order mark and UTF-16 (what PowerShell's `>` writes). Only bcrypt
// hashes ($2a$, $2b$, $2y$, any cost) are accepted; a duplicate user is a
// warning and the last line wins. Every bad line is reported, not only the
// first.
func ParseHtpasswd(name string, data []byte) (Users, []string, error) {
	text, err := decodeText(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	users := Users{}
	seen := map[string]int{}
	var warnings []string
	var errs []error
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		user, hash, ok := strings.Cut(trimmed, ":")
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s:%d: not a user:hash line; %s", name, n, fixHint))
			continue
		case user == "":
			errs = append(errs, fmt.Errorf("%s:%d: empty user name", name, n))
			continue
		case strings.ContainsAny(user, " \t"):
			errs = append(errs, fmt.Errorf("%s:%d: user name %q contains white space", name, n, user))
			continue
		}
		if i := strings.IndexByte(hash, ':'); i >= 0 {
			hash = hash[:i] // htdigest-style trailing fields: ignore
		}
		if kind := hashKind(hash); kind != "" {
			errs = append(errs, fmt.Errorf("%s:%d: user %q: %s hashes are not accepted, only bcrypt; %s", name, n, user, kind, fixHint))
			continue
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: user %q: broken bcrypt hash (%v); %s", name, n, user, err, fixHint))
			continue
		}
		if prev, dup := seen[user]; dup {
			warnings = append(warnings, fmt.Sprintf("%s:%d: user %q is also on line %d; the last line wins", name, n, user, prev))
		}
		seen[user] = n
		users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(errs) > 0 {
		return nil, warnings, errors.Join(errs...)
	}
	if len(users) == 0 {
		warnings = append(warnings, fmt.Sprintf("%s: no users; add one with `wharf passwd USER >> %s`", name, name))
	}
	return users, warnings, nil
}

// hashKind names a non-bcrypt hash scheme, or returns "" for bcrypt.
func hashKind(h string) string {
	switch {
	case strings.HasPrefix(h, "$2a$"), strings.HasPrefix(h, "$2b$"), strings.HasPrefix(h, "$2y$"):
		return ""
	case strings.HasPrefix(h, "$apr1$"):
		return "Apache MD5 ($apr1$)"
	case strings.HasPrefix(h, "$1$"):
		return "MD5-crypt ($1$)"
	case strings.HasPrefix(h, "$5$"):
		return "SHA-256-crypt ($5$)"
	case strings.HasPrefix(h, "$6$"):
		return "SHA-512-crypt ($6$)"
	case strings.HasPrefix(h, "$argon2"):
		return "argon2"
	case strings.HasPrefix(h, "{SHA}"):
		return "SHA-1 ({SHA})"
	case strings.HasPrefix(h, "$"):
		return "unknown ($...)"
	case h == "":
		return "empty"
	case len(h) == 13:
		return "DES-crypt or plain-text"
	}
	return "plain-text or unknown"
}

// decodeText turns file bytes into text: UTF-8 with or without BOM, or
// UTF-16 LE/BE with BOM, or BOM-less UTF-16 LE (detected by NUL bytes).
func decodeText(b []byte) (string, error) {
	switch {
	case bytes.HasPrefix(b, []byte{0xEF, 0xBB, 0xBF}):
		b = b[3:]
	case bytes.HasPrefix(b, []byte{0xFF, 0xFE}):
		return decodeUTF16(b[2:], false)
	case bytes.HasPrefix(b, []byte{0xFE, 0xFF}):
		return decodeUTF16(b[2:], true)
	case len(b) >= 2 && b[1] == 0 && b[0] != 0:
		return decodeUTF16(b, false)
	}
	if !utf8.Valid(b) {
		return "", errors.New("not UTF-8 text; save the file as UTF-8")
	}
	if bytes.IndexByte(b, 0) >= 0 {
		return "", errors.New("contains NUL bytes; save the file as UTF-8 text")
	}
	return string(b), nil
}

func decodeUTF16(b []byte, bigEndian bool) (string, error) {
	if len(b)%2 != 0 {
		return "", errors.New("odd length for UTF-16 text; save the file as UTF-8")
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		if bigEndian {
			u[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
		} else {
			u[i] = uint16(b[2*i+1])<<8 | uint16(b[2*i])
		}
	}
	s := string(utf16.Decode(u))
	if strings.ContainsRune(s, 0) {
		return "", errors.New("contains NUL characters; save the file as UTF-8 text")
	}
	return s, nil
}

// HashPassword returns a bcrypt hash of pw in the $2y$ form that Apache's
// htpasswd -B writes (registry:2, nginx and wharf all read it).
func HashPassword(pw []byte) (string, error) {
	if len(pw) == 0 {
		return "", errors.New("empty password")
	}
	if len(pw) > 72 {
		return "", errors.New("password longer than 72 bytes (bcrypt's limit)")
	}
	h, err := bcrypt.GenerateFromPassword(pw, bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("bcrypt: %w", err)
	}
	if bytes.HasPrefix(h, []byte("$2a$")) {
		h[2] = 'y'
	}
	return string(h), nil
}

// PasswdLine returns the htpasswd line "user:hash" for `wharf passwd USER`.
func PasswdLine(user string, pw []byte) (string, error) {
	if user == "" || strings.ContainsAny(user, ": \t\r\n#") {
		return "", fmt.Errorf("invalid user name %q: no ':', '#' or white space", user)
	}
	h, err := HashPassword(pw)
	if err != nil {
		return "", err
	}
	return user + ":" + h, nil
}

// ReadPassword reads a password for `wharf passwd`: the first line of r,
// without its line end (so `echo secret | wharf passwd alice` works).
func ReadPassword(r io.Reader) ([]byte, error) {
	br := bufio.NewReader(io.LimitReader(r, 4096))
	line, err := br.ReadBytes('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read password: %w", err)
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) == 0 {
		return nil, errors.New("empty password on stdin")
	}
	return line, nil
}
