package auth

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
)

// Throttle says how failed logins are slowed down. A key (a client address
// or a user name) may fail Free times; every further failure blocks it for
// Backoff, doubling up to MaxBackoff. A key that has not failed for Forget
// is forgotten. IPv6 clients are keyed by their /64 (one host usually owns
// a whole /64 and can pick any address in it).
//
// The throttle decides before any credential check, cached or not: a
// blocked address gets 429 whatever it sends, and a blocked user name
// gets 429 for every login, the right password included, so a block is no
// oracle. The one exception (OWASP's "device cookie" idea, keyed by
// address): an address from which the user logged in successfully before
// still gets through while only the user name is blocked, so an attacker
// cannot lock a CI robot out from its usual machines. Each user remembers
// its last KnownAddrs such addresses for KnownFor.
type Throttle struct {
	UserFree   int           // failures per user name before blocking; default 10
	AddrFree   int           // failures per client address before blocking; default 30
	Backoff    time.Duration // first block; default 1s
	MaxBackoff time.Duration // longest block; default 5m
	Forget     time.Duration // default 15m
	Entries    int           // keys remembered at most (LRU); default 65536
	KnownAddrs int           // addresses remembered per user after a good login; default 8
	KnownFor   time.Duration // how long a user remembers them; default 720h
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
	if t.KnownAddrs <= 0 {
		t.KnownAddrs = 8
	}
	if t.KnownFor <= 0 {
		t.KnownFor = 720 * time.Hour
	}
	return t
}

type throttle struct {
	cfg Throttle
	now func() time.Time

	mu  sync.Mutex
	lru *expirable.LRU[string, *strikes]
	// known maps a user name to the address keys it logged in from, most
	// recent last; bounded by Entries users and KnownAddrs each.
	known *expirable.LRU[string, []string]
}

type strikes struct {
	fails int
	until time.Time
}

func newThrottle(cfg Throttle, now func() time.Time) *throttle {
	cfg = cfg.withDefaults()
	return &throttle{
		cfg:   cfg,
		now:   now,
		lru:   expirable.NewLRU[string, *strikes](cfg.Entries, nil, cfg.Forget),
		known: expirable.NewLRU[string, []string](cfg.Entries, nil, cfg.KnownFor),
	}
}

// AddrKey is the throttle's key for a client address ("ip" or
// "ip:port"): an IPv4 address as it is, an IPv6 address as its /64. A
// string that is no address is used as it is.
func AddrKey(addr string) string {
	ap, err := netip.ParseAddrPort(addr)
	var ip netip.Addr
	if err == nil {
		ip = ap.Addr()
	} else if ip, err = netip.ParseAddr(addr); err != nil {
		return addr
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return ip.String()
	}
	p, _ := ip.Prefix(64)
	return p.String()
}

func addrEntry(a string) string { return "a\x00" + a }
func userEntry(u string) string { return "u\x00" + u }

// blocked returns how long a login for user from the address key a must
// still wait, or 0 when it may be checked now.
func (t *throttle) blocked(a, user string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var wait time.Duration
	if s, ok := t.lru.Peek(addrEntry(a)); ok && s.until.After(now) {
		wait = s.until.Sub(now)
	}
	if s, ok := t.lru.Peek(userEntry(user)); ok && s.until.After(now) && !t.knownLocked(a, user) {
		wait = max(wait, s.until.Sub(now))
	}
	return wait
}

func (t *throttle) knownLocked(a, user string) bool {
	addrs, ok := t.known.Peek(user)
	return ok && slices.Contains(addrs, a)
}

// fail records a failed login and returns the block it caused, if any.
func (t *throttle) fail(a, user string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var wait time.Duration
	for _, k := range []struct {
		key  string
		free int
	}{{addrEntry(a), t.cfg.AddrFree}, {userEntry(user), t.cfg.UserFree}} {
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

// succeed remembers a as an address user logs in from and clears the
// user's failures, unless the user name is blocked right now (a success
// from a known address must not lift the block for everyone else).
func (t *throttle) succeed(a, user string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	addrs, _ := t.known.Peek(user)
	if i := slices.Index(addrs, a); i >= 0 {
		addrs = slices.Delete(slices.Clone(addrs), i, i+1)
	}
	addrs = append(slices.Clone(addrs), a)
	if over := len(addrs) - t.cfg.KnownAddrs; over > 0 {
		addrs = addrs[over:]
	}
	t.known.Add(user, addrs)
	if s, ok := t.lru.Peek(userEntry(user)); ok && s.until.After(t.now()) {
		return
	}
	t.lru.Remove(userEntry(user))
}
