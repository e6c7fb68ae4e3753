package auth

import (
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
)

// Throttle says how failed logins are slowed down. A key (a client address
// or a user name) may fail Free times; every further failure blocks it for
// Backoff, doubling up to MaxBackoff. A key that has not failed for Forget
// is forgotten. Successful logins never wait; a success clears the user's
// count (not the address's).
type Throttle struct {
	UserFree   int           // failures per user name before blocking; default 10
	AddrFree   int           // failures per client address before blocking; default 30
	Backoff    time.Duration // first block; default 1s
	MaxBackoff time.Duration // longest block; default 5m
	Forget     time.Duration // default 15m
	Entries    int           // keys remembered at most (LRU); default 65536
}

func (t Throttle) withDefaults() Throttle {
	if t.UserFree <= 0 {
		t.UserFree = 10
	}
	if t.AddrFree <= 0 {
		t.AddrFree = 30
	}
	if t.Backoff <= 0 {
		t.Backoff = time.Second
	}
	if t.MaxBackoff <= 0 {
		t.MaxBackoff = 5 * time.Minute
	}
	if t.Forget <= 0 {
		t.Forget = 15 * time.Minute
	}
	if t.Entries <= 0 {
		t.Entries = 65536
	}
	return t
}

type throttle struct {
	cfg Throttle
	now func() time.Time

	mu  sync.Mutex
	lru *expirable.LRU[string, *strikes]
}

type strikes struct {
	fails int
	until time.Time
}

func newThrottle(cfg Throttle, now func() time.Time) *throttle {
	cfg = cfg.withDefaults()
	return &throttle{cfg: cfg, now: now, lru: expirable.NewLRU[string, *strikes](cfg.Entries, nil, cfg.Forget)}
}

// blocked returns how long the address or the user must still wait, or 0.
func (t *throttle) blocked(addr, user string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var wait time.Duration
	for _, k := range []string{"a\x00" + addr, "u\x00" + user} {
		if s, ok := t.lru.Peek(k); ok && s.until.After(now) {
			wait = max(wait, s.until.Sub(now))
		}
	}
	return wait
}

// fail records a failed login and returns the block it caused, if any.
func (t *throttle) fail(addr, user string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var wait time.Duration
	for _, k := range []struct {
		key  string
		free int
	}{{"a\x00" + addr, t.cfg.AddrFree}, {"u\x00" + user, t.cfg.UserFree}} {
		s, ok := t.lru.Get(k.key)
		if !ok {
			s = &strikes{}
		}
		s.fails++
		if over := s.fails - k.free; over > 0 {
			d := t.cfg.Backoff
			for i := 1; i < over && d < t.cfg.MaxBackoff; i++ {
				d *= 2
			}
			d = min(d, t.cfg.MaxBackoff)
			s.until = now.Add(d)
			wait = max(wait, d)
		}
		t.lru.Add(k.key, s) // re-adding refreshes the expiry
	}
	return wait
}

// succeed clears the user's failures.
func (t *throttle) succeed(user string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lru.Remove("u\x00" + user)
}
