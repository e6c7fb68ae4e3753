package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// Token signing keys and their rotation.
//
// The key file holds one hex key per line ('#' comments and blank lines
// are skipped). The first key signs new tokens; every key in the file
// verifies. A token names its key in the JWT header's kid (the first 16
// hex digits of the key's SHA-256), so checking one costs a map lookup
// and one HMAC whatever the number of keys.
//
// Rotation without a restart: put a new key first in the file (the old
// ones may stay below it or go), then SIGHUP wharf, or wait for the
// file watcher (the same poll as the htpasswd file). From then on the new
// key signs; a key that left the file still verifies for one token
// lifetime (its tokens expire by then), so pulls in flight finish.
// The file must not be readable by group or others.

// signKey is one HMAC key with its id and the JWT header naming it.
type signKey struct {
	id      string
	key     []byte
	header  string    // base64url of {"alg":"HS256","typ":"JWT","kid":id}
	retired time.Time // when it left the key file; zero = in the file
}

func newSignKey(key []byte) *signKey {
	sum := sha256.Sum256(key)
	id := hex.EncodeToString(sum[:8])
	h := `{"alg":"HS256","typ":"JWT","kid":"` + id + `"}`
	return &signKey{id: id, key: key, header: base64.RawURLEncoding.EncodeToString([]byte(h))}
}

func (k *signKey) mac(msg string) []byte {
	m := hmac.New(sha256.New, k.key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// keyRing is an immutable set of keys: the signing key and every key
// that verifies, by JWT header.
type keyRing struct {
	current  *signKey
	byHeader map[string]*signKey
}

// signer signs and verifies tokens; its ring is swapped whole on rotation.
type signer struct {
	issuer string
	ring   atomic.Pointer[keyRing]
}

// newSigner makes a signer whose first key signs and whose keys all verify.
func newSigner(issuer string, keys ...[]byte) *signer {
	s := &signer{issuer: issuer}
	s.ring.Store(buildRing(keys, nil, time.Time{}, 0))
	return s
}

// buildRing is the ring for the keys of the file; keys of prev that left
// the file stay, retired at now, until keep has passed since.
func buildRing(keys [][]byte, prev *keyRing, now time.Time, keep time.Duration) *keyRing {
	r := &keyRing{byHeader: map[string]*signKey{}}
	for _, k := range keys {
		sk := newSignKey(k)
		if r.current == nil {
			r.current = sk
		}
		r.byHeader[sk.header] = sk
	}
	if prev != nil {
		for h, old := range prev.byHeader {
			if _, ok := r.byHeader[h]; ok {
				continue
			}
			cp := *old
			if cp.retired.IsZero() {
				cp.retired = now
			}
			if now.Sub(cp.retired) <= keep {
				r.byHeader[h] = &cp
			}
		}
	}
	return r
}

// kid returns the key id a token's header names, or "".
func (s *signer) kid(tok string) string {
	head, _, _ := strings.Cut(tok, ".")
	if k := s.ring.Load().byHeader[head]; k != nil {
		return k.id
	}
	return ""
}

// readKeys reads the key file: at least one key of 64 or more hex digits,
// and nobody but the owner may read it.
func readKeys(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("token key %s: %w", path, err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("token key %s is readable or writable by group or others (mode %04o): run chmod 600 %s", path, perm, path)
	}
	var b bytes.Buffer
	if _, err := b.ReadFrom(f); err != nil {
		return nil, fmt.Errorf("read token key %s: %w", path, err)
	}
	var keys [][]byte
	for i, line := range strings.Split(b.String(), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := hex.DecodeString(line)
		if err != nil || len(k) < 32 {
			return nil, fmt.Errorf("token key %s:%d: want a key of at least 64 hex digits (e.g. from `openssl rand -hex 32`); delete the file to get a new key", path, i+1)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("token key %s holds no key; delete the file to get a new one", path)
	}
	return keys, nil
}

// loadKeys reads the token signing keys from path, creating the file
// (0600, its folder 0700) with one new key when missing. An empty path
// gives a key for this process only: tokens then die with it, which costs
// clients one new token.
func loadKeys(path string) ([][]byte, error) {
	key := make([]byte, 32)
	if path == "" {
		_, _ = rand.Read(key)
		return [][]byte{key}, nil
	}
	keys, err := readKeys(path)
	if err == nil {
		return keys, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	_, _ = rand.Read(key)
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("token key folder: %w", err)
	}
	// Written under a temporary name and linked into place: a crash
	// leaves no half-written key, and of two processes starting at once
	// the second reads the first one's key.
	f, err := os.CreateTemp(dir, ".token.key-*")
	if err != nil {
		return nil, fmt.Errorf("create token key: %w", err)
	}
	defer os.Remove(f.Name())
	_, werr := f.WriteString(hex.EncodeToString(key) + "\n")
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, fmt.Errorf("write token key: %w", werr)
	}
	if err := os.Link(f.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readKeys(path)
		}
		return nil, fmt.Errorf("create token key: %w", err)
	}
	return [][]byte{key}, nil
}
