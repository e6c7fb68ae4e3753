package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/wharf-dev/wharf/backend"
)

// Tokens are JWTs (RFC 7519) signed with HMAC-SHA256, with the claims of
// the Docker registry token specification (iss, sub, aud, exp, nbf, iat,
// jti, access). Clients treat them as opaque; wharf both issues and checks
// them, so a shared secret is enough and checking costs one HMAC.

// MaxTokenLen bounds the Bearer tokens wharf looks at.
const MaxTokenLen = 16 << 10

// jwtHeader is the one header wharf writes, base64url-encoded.
var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// Access is one entry of a token's access claim: what the bearer may do to
// one resource ("repository" foo/bar: pull, push).
type Access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// Claims are the claims of a wharf token.
type Claims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"` // user name; "" = anonymous
	Audience  string   `json:"aud"` // the site's host (the "service")
	Expiry    int64    `json:"exp"`
	NotBefore int64    `json:"nbf"`
	IssuedAt  int64    `json:"iat"`
	ID        string   `json:"jti"`
	Access    []Access `json:"access"`
}

// grants reports whether the claims allow act on repository repo.
func (c *Claims) grants(repo string, act backend.Action) bool {
	for _, a := range c.Access {
		if a.Type == "repository" && a.Name == repo &&
			(slices.Contains(a.Actions, string(act)) || slices.Contains(a.Actions, "*")) {
			return true
		}
	}
	return false
}

type signer struct {
	key    []byte
	issuer string
}

// loadKey reads the token signing key from path, creating it (0600, with
// its folder) when missing. An empty path gives a key for this process
// only: tokens then die with it, which costs clients one new token.
func loadKey(path string) ([]byte, error) {
	key := make([]byte, 32)
	if path == "" {
		_, _ = rand.Read(key)
		return key, nil
	}
	b, err := os.ReadFile(path)
	if err == nil {
		k, derr := hex.DecodeString(strings.TrimSpace(string(b)))
		if derr != nil || len(k) < 32 {
			return nil, fmt.Errorf("token key %s: want at least 64 hex digits; delete the file to get a new key", path)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read token key: %w", err)
	}
	_, _ = rand.Read(key)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("token key folder: %w", err)
	}
	// Written under a temporary name and linked into place: several
	// instances sharing the folder ([cluster] shared_dir) may start at
	// once; the first link wins, and nobody ever reads a half-written key.
	f, err := os.CreateTemp(filepath.Dir(path), ".token.key-*")
	if err != nil {
		return nil, fmt.Errorf("create token key: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.WriteString(hex.EncodeToString(key) + "\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("write token key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("write token key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write token key: %w", err)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return loadKey(path) // another instance made it meanwhile
		}
		return nil, fmt.Errorf("create token key: %w", err)
	}
	return key, nil
}

func (s *signer) mac(msg string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// sign returns the compact JWT for c.
func (s *signer) sign(c *Claims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("token claims: %w", err)
	}
	msg := jwtHeader + "." + base64.RawURLEncoding.EncodeToString(payload)
	return msg + "." + base64.RawURLEncoding.EncodeToString(s.mac(msg)), nil
}

// Reasons a token is refused (never shown with the token itself).
var (
	errTokenMalformed = errors.New("malformed token")
	errTokenSignature = errors.New("token signature does not match")
	errTokenExpired   = errors.New("token expired")
	errTokenAudience  = errors.New("token issued for another service")
)

// verify checks tok's signature, time window and audience and returns its
// claims.
func (s *signer) verify(tok, audience string, now time.Time) (*Claims, error) {
	if len(tok) > MaxTokenLen {
		return nil, errTokenMalformed
	}
	head, rest, ok := strings.Cut(tok, ".")
	if !ok || head != jwtHeader {
		return nil, errTokenMalformed
	}
	payload, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.IndexByte(sig, '.') >= 0 {
		return nil, errTokenMalformed
	}
	got, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	if err != nil {
		return nil, errTokenMalformed
	}
	if !hmac.Equal(got, s.mac(tok[:len(head)+1+len(payload)])) {
		return nil, errTokenSignature
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return nil, errTokenMalformed
	}
	var c Claims
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&c); err != nil {
		return nil, errTokenMalformed
	}
	const leeway = 5 // seconds of clock skew tolerated
	t := now.Unix()
	if c.Expiry <= t || c.NotBefore > t+leeway {
		return nil, errTokenExpired
	}
	if !strings.EqualFold(c.Audience, audience) || c.Issuer != s.issuer {
		return nil, errTokenAudience
	}
	return &c, nil
}

// Scope is one parsed scope parameter: "repository:foo/bar:pull,push".
type Scope struct {
	Type    string // "repository", "registry"; a "(class)" suffix is dropped
	Name    string
	Actions []string
}

// ParseScopes splits every scope parameter (several may be given, and one
// may hold several scopes separated by spaces) into scopes. Malformed ones
// are skipped: the token simply grants nothing for them.
func ParseScopes(params []string) []Scope {
	var out []Scope
	for _, p := range params {
		for _, f := range strings.Fields(p) {
			i, j := strings.IndexByte(f, ':'), strings.LastIndexByte(f, ':')
			if i <= 0 || j <= i+1 || j == len(f)-1 {
				continue
			}
			typ := f[:i]
			if k := strings.IndexByte(typ, '('); k > 0 && strings.HasSuffix(typ, ")") {
				typ = typ[:k]
			}
			var acts []string
			for _, a := range strings.Split(f[j+1:], ",") {
				if a != "" && !slices.Contains(acts, a) {
					acts = append(acts, a)
				}
			}
			out = append(out, Scope{Type: typ, Name: f[i+1 : j], Actions: acts})
		}
	}
	return out
}

// randomID is a token's jti: 16 random bytes, hex.
func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
