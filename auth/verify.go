package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"golang.org/x/crypto/bcrypt"
)

// verifier checks user names and passwords against the htpasswd users,
// running bcrypt at most once per user and password while the result is
// cached (and once for concurrent requests with the same credentials).
type verifier struct {
	users atomic.Pointer[Users]
	// cache holds credentials that passed bcrypt, keyed by an HMAC of user
	// and password under a per-process secret: no plaintext is kept, and a
	// dump of the cache cannot be attacked offline without the secret.
	cache  *expirable.LRU[credKey, string]
	secret []byte

	bcrypts atomic.Int64

	// dummy is checked for unknown users so timing does not tell them
	// apart from known ones; its cost follows the users' hashes.
	dummy atomic.Pointer[[]byte]

	mu       sync.Mutex
	inflight map[credKey]*call
}

type credKey [sha256.Size]byte

type call struct {
	done chan struct{}
	ok   bool
}

func newVerifier(size int, ttl time.Duration) *verifier {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret) // crypto/rand.Read never fails on supported platforms
	v := &verifier{
		cache:    expirable.NewLRU[credKey, string](size, nil, ttl),
		secret:   secret,
		inflight: map[credKey]*call{},
	}
	empty := Users{}
	v.users.Store(&empty)
	return v
}

// setUsers replaces the user table and forgets every cached credential.
func (v *verifier) setUsers(u Users) {
	cost := bcrypt.MinCost
	for _, h := range u {
		if c, err := bcrypt.Cost(h); err == nil && c > cost {
			cost = c
		}
	}
	if d := v.dummy.Load(); d == nil || costOf(*d) != cost {
		h, err := bcrypt.GenerateFromPassword(v.secret[:16], cost)
		if err == nil {
			v.dummy.Store(&h)
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.users.Store(&u)
	v.cache.Purge()
}

func costOf(h []byte) int {
	c, _ := bcrypt.Cost(h)
	return c
}

// hasUser reports whether user is in the current htpasswd table.
func (v *verifier) hasUser(user string) bool {
	_, ok := (*v.users.Load())[user]
	return ok
}

func (v *verifier) key(user string, pw []byte) credKey {
	m := hmac.New(sha256.New, v.secret)
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write(pw)
	var k credKey
	m.Sum(k[:0])
	return k
}

// cached reports whether user and pw were verified recently (no bcrypt).
func (v *verifier) cached(user string, pw []byte) bool {
	k := v.key(user, pw)
	u, ok := v.cache.Get(k)
	return ok && subtle.ConstantTimeCompare([]byte(u), []byte(user)) == 1
}

// verify reports whether pw is user's password.
func (v *verifier) verify(user string, pw []byte) bool {
	k := v.key(user, pw)
	if u, ok := v.cache.Get(k); ok {
		return subtle.ConstantTimeCompare([]byte(u), []byte(user)) == 1
	}
	v.mu.Lock()
	if c, ok := v.inflight[k]; ok {
		v.mu.Unlock()
		<-c.done
		return c.ok
	}
	c := &call{done: make(chan struct{})}
	v.inflight[k] = c
	users := v.users.Load()
	v.mu.Unlock()

	defer func() {
		v.mu.Lock()
		delete(v.inflight, k)
		v.mu.Unlock()
		close(c.done)
	}()
	hash, known := (*users)[user]
	if !known {
		if d := v.dummy.Load(); d != nil {
			hash = *d
		} else {
			hash = []byte("$2y$04$") // no users at all: nothing to hide
		}
	}
	v.bcrypts.Add(1)
	err := bcrypt.CompareHashAndPassword(hash, pw)
	c.ok = known && err == nil
	// Only cache if the user table did not change meanwhile: a reload
	// purges the cache (under v.mu), and a stale success must not survive.
	if c.ok {
		v.mu.Lock()
		if v.users.Load() == users {
			v.cache.Add(k, user)
		}
		v.mu.Unlock()
	}
	return c.ok
}
