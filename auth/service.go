// Package auth authenticates registry clients: users and bcrypt hashes from
// an htpasswd file (reloaded when it changes), a cache of verified
// credentials so bcrypt runs once per user and password, throttling of
// failed logins, and the Docker registry token service (a token endpoint
// on every site, short-lived HMAC-signed tokens whose granted actions come
// from the policy). Handler puts it all in front of a site's /v2/ API.
package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/rs/zerolog"
)

// Config is the [auth] table plus the knobs the gateway may set.
type Config struct {
	// Htpasswd is the path of the htpasswd file; "" means no users at all
	// (only what anonymous callers may do works).
	Htpasswd string
	// Realm is the realm of Basic challenges and the issuer of tokens.
	// Default "wharf".
	Realm string
	// TokenTTL is how long an issued token is good for. Default 5m.
	TokenTTL time.Duration
	// KeyFile holds the token signing key (hex); it is created when
	// missing. "" = a new key each start (tokens die with the process).
	// Suggested: <data_dir>/auth/token.key.
	KeyFile string
	// CacheSize and CacheTTL bound the cache of verified credentials.
	// Defaults 1024 entries, 10m.
	CacheSize int
	CacheTTL  time.Duration
	// Watch is how often the htpasswd file is checked for changes.
	// Default 2s; negative = never (SIGHUP / Reload only).
	Watch time.Duration
	// Throttle slows down failed logins.
	Throttle Throttle
	// Now is the clock; nil = time.Now. For tests.
	Now func() time.Time
}

// Service holds the users, the caches and the token key. One Service
// serves every site; Guard makes the per-site part the gateway asks.
type Service struct {
	cfg Config
	log zerolog.Logger
	now func() time.Time

	v   *verifier
	thr *throttle
	sig *signer
	// tokens remembers tokens that verified, so a pull's many requests
	// with one token pay for one JSON decode (the expiry is checked on
	// every use).
	tokens *expirable.LRU[string, *Claims]

	stop context.CancelFunc // ends the file watcher

	failures, throttled, issued atomic.Int64

	reloadMu sync.Mutex
	stamp    fileStamp
	keyStamp os.FileInfo // of the token key file last read
	sum      [sha256.Size]byte
}

func sameStamp(a, b os.FileInfo) bool {
	return a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size() && os.SameFile(a, b)
}

type fileStamp struct {
	info os.FileInfo // of the file last read
}

// New loads the htpasswd file and the token key and, until ctx is done,
// watches the file for changes. A missing or broken htpasswd file is an
// error here (at start); later it only keeps the old users.
func New(ctx context.Context, cfg Config, log zerolog.Logger) (*Service, error) {
	if cfg.Realm == "" {
		cfg.Realm = DefaultRealm
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 1024
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 10 * time.Minute
	}
	if cfg.Watch == 0 {
		cfg.Watch = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	keys, err := loadKeys(cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	s := &Service{
		cfg: cfg,
		log: log,
		now: cfg.Now,
		v:   newVerifier(cfg.CacheSize, cfg.CacheTTL),
		thr: newThrottle(cfg.Throttle, cfg.Now),
		sig: newSigner(cfg.Realm, keys...),

		tokens: expirable.NewLRU[string, *Claims](4096, nil, cfg.TokenTTL),
	}
	if cfg.KeyFile != "" {
		if st, err := os.Stat(cfg.KeyFile); err == nil {
			s.keyStamp = st
		}
	}
	if cfg.Htpasswd != "" {
		if err := s.reload(true); err != nil {
			return nil, err
		}
	}
	if cfg.Watch > 0 && (cfg.Htpasswd != "" || cfg.KeyFile != "") {
		wctx, cancel := context.WithCancel(ctx)
		s.stop = cancel
		go s.watch(wctx)
	}
	return s, nil
}

// Close stops watching the htpasswd file (when a reload replaces this
// Service with one for another [auth] table). Requests still work.
func (s *Service) Close() {
	if s.stop != nil {
		s.stop()
	}
}

// Reload rereads the htpasswd file (SIGHUP) and empties the credential
// cache, and rereads the token key file (a new first key signs from now
// on). If a new file is missing or broken, the old users or keys stay and
// the error says why (it is logged too).
func (s *Service) Reload() error {
	kerr := s.reloadKeys()
	if s.cfg.Htpasswd == "" {
		return kerr
	}
	return errors.Join(s.reload(true), kerr)
}

// reloadKeys rereads the token key file: its first key signs, all of its
// keys verify, and keys that left it keep verifying for one token
// lifetime, so tokens in use stay good until they expire.
func (s *Service) reloadKeys() error {
	if s.cfg.KeyFile == "" {
		return nil
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if st, err := os.Stat(s.cfg.KeyFile); err == nil {
		s.keyStamp = st
	}
	keys, err := readKeys(s.cfg.KeyFile)
	if err != nil {
		s.log.Error().Err(err).Msg("token key not reloaded; keeping the previous keys")
		return err
	}
	old := s.sig.ring.Load()
	ring := buildRing(keys, old, s.now(), s.cfg.TokenTTL+time.Minute)
	s.sig.ring.Store(ring)
	if ring.current.id != old.current.id {
		s.log.Info().Str("kid", ring.current.id).Str("previous_kid", old.current.id).Int("verifying_keys", len(ring.byHeader)).Msg("token key rotated")
	}
	return nil
}

// TokenKeyID is the kid of the key that signs new tokens.
func (s *Service) TokenKeyID() string { return s.sig.ring.Load().current.id }

// verifyToken checks a Bearer token for the site with the given audience.
func (s *Service) verifyToken(tok, audience string) (*Claims, error) {
	now := s.now()
	if c, ok := s.tokens.Get(tok); ok {
		if c.Expiry <= now.Unix() {
			return nil, errTokenExpired
		}
		if !strings.EqualFold(c.Audience, audience) {
			return nil, errTokenAudience
		}
		return c, nil
	}
	c, err := s.sig.verify(tok, audience, now)
	if err != nil {
		return nil, err
	}
	s.tokens.Add(tok, c)
	return c, nil
}

// BcryptChecks is how many bcrypt comparisons ran since start: tests and
// the benchmark show it to prove the cache works.
func (s *Service) BcryptChecks() int64 { return s.v.bcrypts.Load() }

// Stats are the service's counters since start, for /metrics.
type Stats struct {
	BcryptChecks  int64 // bcrypt comparisons (cache misses)
	LoginFailures int64 // wrong user name or password
	Throttled     int64 // logins refused with 429
	TokensIssued  int64 // tokens from the token endpoint
}

// Stats returns the current counters.
func (s *Service) Stats() Stats {
	return Stats{
		BcryptChecks:  s.v.bcrypts.Load(),
		LoginFailures: s.failures.Load(),
		Throttled:     s.throttled.Load(),
		TokensIssued:  s.issued.Load(),
	}
}

// UserCount is how many users the current htpasswd file has.
func (s *Service) UserCount() int { return len(*s.v.users.Load()) }

// reload loads the file; unless force, it does nothing when the content
// did not change since the last load.
func (s *Service) reload(force bool) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	path := s.cfg.Htpasswd
	st, err := os.Stat(path)
	if err == nil {
		s.stamp = fileStamp{info: st}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("htpasswd file %s does not exist: create it with `wharf passwd USER >> %s`", path, path)
		} else {
			err = fmt.Errorf("read htpasswd file: %w", err)
		}
		s.log.Error().Err(err).Msg("htpasswd not reloaded; keeping the previous users")
		return err
	}
	sum := sha256.Sum256(data)
	if !force && sum == s.sum {
		return nil
	}
	if len(data) == 0 && s.UserCount() > 0 {
		// most likely caught in the middle of a rewrite; an intentionally
		// empty file can say so with a comment line
		err := fmt.Errorf("htpasswd file %s is empty (add a '#' comment line if that is meant)", path)
		s.log.Error().Err(err).Msg("htpasswd not reloaded; keeping the previous users")
		return err
	}
	users, warnings, err := ParseHtpasswd(path, data)
	for _, w := range warnings {
		s.log.Warn().Msg(w)
	}
	if err != nil {
		s.log.Error().Err(err).Msg("htpasswd not reloaded; keeping the previous users")
		return err
	}
	s.sum = sum
	s.v.setUsers(users)
	s.log.Info().Str("file", path).Int("users", len(users)).Msg("htpasswd loaded")
	return nil
}

// watch polls the htpasswd and token key files: polling survives editors
// that replace the file, bind mounts and network file systems, and costs
// one stat per file and interval. A file is reread once it has stopped
// changing for one interval, so a file being written is not read half-way.
func (s *Service) watch(ctx context.Context) {
	t := time.NewTicker(s.cfg.Watch)
	defer t.Stop()
	var pending, keyPending os.FileInfo // a change seen on the previous tick
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.reloadMu.Lock()
		old, oldKey := s.stamp.info, s.keyStamp
		s.reloadMu.Unlock()
		if s.cfg.Htpasswd != "" && changed(s.cfg.Htpasswd, old, &pending) {
			_ = s.reload(false) // logged inside
		}
		if s.cfg.KeyFile != "" && changed(s.cfg.KeyFile, oldKey, &keyPending) {
			_ = s.reloadKeys() // logged inside
		}
	}
}

// changed reports whether the file at path differs from last (what was
// read) and has looked the same on two ticks in a row (pending).
func changed(path string, last os.FileInfo, pending *os.FileInfo) bool {
	st, err := os.Stat(path)
	if err != nil {
		return false // a missing file is reported when it is read; editors swap files
	}
	if last != nil && sameStamp(st, last) {
		*pending = nil
		return false
	}
	if *pending == nil || !sameStamp(st, *pending) {
		*pending = st
		return false
	}
	*pending = nil
	return true
}
