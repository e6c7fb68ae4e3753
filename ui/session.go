package ui

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CookieName is the session cookie of the web UI.
const CookieName = "wharf_session"

// LoadKey reads the key that signs session cookies from path, creating it
// (0600, folder 0700) with 32 random bytes when missing, so sessions
// survive a restart. The gateway keeps it next to the token key under
// data_dir/auth.
func LoadKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, derr := hex.DecodeString(strings.TrimSpace(string(b)))
		if derr != nil || len(k) < 32 {
			return nil, fmt.Errorf("session key %s: want at least 64 hex digits; delete the file to get a new key", path)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read session key: %w", err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key) // never fails on supported platforms
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("session key folder: %w", err)
	}
	// written under a temporary name and linked into place, so a crash
	// never leaves a half-written key and two starters agree on one key
	tmp, err := os.CreateTemp(filepath.Dir(path), ".session-key-*")
	if err != nil {
		return nil, fmt.Errorf("create session key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("create session key: %w", err)
	}
	if _, err := tmp.WriteString(hex.EncodeToString(key) + "\n"); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write session key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write session key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write session key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return LoadKey(path) // another process made it meanwhile
		}
		return nil, fmt.Errorf("create session key: %w", err)
	}
	return key, nil
}

// sessions signs and checks session cookies and CSRF tokens of one site.
// A cookie is "<user b64>.<expiry unix>.<mac b64>" with the MAC over the
// site's host, the user and the expiry: it cannot be forged, moved to
// another site or stretched; the user must still exist when it is used.
type sessions struct {
	key  []byte
	host string
	ttl  time.Duration
	now  func() time.Time
}

var b64 = base64.RawURLEncoding

func (s *sessions) mac(parts ...string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(s.host))
	for _, p := range parts {
		m.Write([]byte{0})
		m.Write([]byte(p))
	}
	return m.Sum(nil)
}

// issue makes a cookie value for user.
func (s *sessions) issue(user string) (value string, expires time.Time) {
	expires = s.now().Add(s.ttl)
	u := b64.EncodeToString([]byte(user))
	exp := strconv.FormatInt(expires.Unix(), 10)
	return u + "." + exp + "." + b64.EncodeToString(s.mac("session", u, exp)), expires
}

// check returns the user of a valid, unexpired cookie value.
func (s *sessions) check(value string) (string, bool) {
	parts := strings.Split(value, ".")
	if len(value) > 1024 || len(parts) != 3 {
		return "", false
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, s.mac("session", parts[0], parts[1])) {
		return "", false
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || s.now().Unix() >= exp {
		return "", false
	}
	u, err := b64.DecodeString(parts[0])
	if err != nil || len(u) == 0 {
		return "", false
	}
	return string(u), true
}

// csrf is the CSRF token of a session: a MAC of the cookie value, so it is
// only valid together with that session (and dies with it).
func (s *sessions) csrf(cookie string) string {
	return b64.EncodeToString(s.mac("csrf", cookie))
}

// checkCSRF compares a submitted token with the session's.
func (s *sessions) checkCSRF(cookie, token string) bool {
	if cookie == "" || token == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(s.csrf(cookie)), []byte(token)) == 1
}

// cookie builds the session cookie (HttpOnly, SameSite=Strict, Secure over
// TLS); an empty value with maxAge < 0 deletes it.
func sessionCookie(value string, expires time.Time, secure bool) *http.Cookie {
	c := &http.Cookie{
		Name: CookieName, Value: value, Path: "/",
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode,
	}
	if value == "" {
		c.MaxAge = -1
	} else {
		c.Expires = expires
	}
	return c
}
