package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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

// sign returns the compact JWT for c, signed with the current key and
// naming it in the header's kid.
func (s *signer) sign(c *Claims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("token claims: %w", err)
	}
	k := s.ring.Load().current
	msg := k.header + "." + base64.RawURLEncoding.EncodeToString(payload)
	return msg + "." + base64.RawURLEncoding.EncodeToString(k.mac(msg)), nil
}

// Reasons a token is refused (never shown with the token itself).
var (
	errTokenMalformed = errors.New("malformed token")
	errTokenKey       = errors.New("token signed with an unknown or retired key")
	errTokenSignature = errors.New("token signature does not match")
	errTokenExpired   = errors.New("token expired")
	errTokenAudience  = errors.New("token issued for another service")
)

// verify checks tok's signature (with the key its header names: the
// current one or a retired one whose tokens may still be valid), time
// window and audience, and returns its claims.
func (s *signer) verify(tok, audience string, now time.Time) (*Claims, error) {
	if len(tok) > MaxTokenLen {
		return nil, errTokenMalformed
	}
	head, rest, ok := strings.Cut(tok, ".")
	if !ok {
		return nil, errTokenMalformed
	}
	k := s.ring.Load().byHeader[head]
	if k == nil {
		return nil, errTokenKey
	}
	payload, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.IndexByte(sig, '.') >= 0 {
		return nil, errTokenMalformed
	}
	got, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	if err != nil {
		return nil, errTokenMalformed
	}
	if !hmac.Equal(got, k.mac(tok[:len(head)+1+len(payload)])) {
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
