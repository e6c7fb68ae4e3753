package auth

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"
)

// LoginResult is the decision on one login attempt.
type LoginResult struct {
	// OK: the password is the user's and the throttle let it through.
	OK bool
	// RetryAfter > 0: the throttle refused the attempt before any
	// credential was checked; answer 429 with Retry-After.
	RetryAfter time.Duration
	// Message says why a login was refused, in words fit for the client
	// (it never tells a wrong password from an unknown user).
	Message string
}

// Login decides one login attempt: user and password from the client at
// addr ("ip" or "ip:port", the connection's peer). It is the one path
// every password goes through (Basic credentials on /v2/, the token
// endpoint, a web login form): first the throttle (per address, IPv6 per
// /64, and per user name; see Throttle), then the password, from the
// cache of verified credentials or by bcrypt. Failures are counted and
// logged with the address; the user name is logged only when it is a
// known user, since people paste passwords into the user field.
func (s *Service) Login(ctx context.Context, addr, user string, password []byte) LoginResult {
	a := AddrKey(addr)
	if wait := s.thr.blocked(a, ""); wait > 0 {
		// a blocked address gets 429 whatever it sends
		return s.throttledResult(a, "", wait)
	}
	if user == "" {
		return LoginResult{Message: "empty user name"}
	}
	if len(user) > MaxUserLen {
		return LoginResult{Message: "user name too long"}
	}
	if wait := s.thr.blocked(a, user); wait > 0 {
		return s.throttledResult(a, user, wait)
	}
	if !s.v.verify(user, password) {
		s.failures.Add(1)
		wait := s.thr.fail(a, user)
		ev := s.logUser(s.log.Warn().Str("addr", a), user)
		if wait > 0 {
			ev = ev.Dur("blocked_for", wait)
		}
		ev.Msg("login failed")
		return LoginResult{Message: "incorrect username or password"}
	}
	s.thr.succeed(a, user)
	return LoginResult{OK: true}
}

// throttledResult counts, logs and returns a refusal by the throttle.
func (s *Service) throttledResult(a, user string, wait time.Duration) LoginResult {
	s.throttled.Add(1)
	s.logUser(s.log.Warn().Str("addr", a), user).Dur("retry_after", wait).Msg("login throttled")
	return LoginResult{RetryAfter: wait, Message: fmt.Sprintf("too many failed logins; retry in %d seconds", retrySeconds(wait))}
}

// addrBlocked is how long the client at addr must still wait, or 0; for
// credentials that cannot even be parsed.
func (s *Service) addrBlocked(addr string) (LoginResult, bool) {
	a := AddrKey(addr)
	if wait := s.thr.blocked(a, ""); wait > 0 {
		return s.throttledResult(a, "", wait), true
	}
	return LoginResult{}, false
}

// logUser adds the user name to a log line if it names a user; for
// anything else it says only that the name was unknown.
func (s *Service) logUser(ev *zerolog.Event, user string) *zerolog.Event {
	if user == "" {
		return ev
	}
	if s.v.hasUser(user) {
		return ev.Str("user", user)
	}
	return ev.Bool("unknown_user", true)
}

// retrySeconds is wait in whole seconds, rounded up, at least 1.
func retrySeconds(wait time.Duration) int {
	return max(int((wait+time.Second-1)/time.Second), 1)
}
