package auth

import (
	"net/http"
	"strconv"
	"time"
)

// Login checks a user name and password from a form (the web UI's login
// page) through exactly the path the API's Basic and token logins take:
// the cache of verified credentials, the throttle and bcrypt. It returns
// ok, or how long the caller must wait when the throttle blocks it
// (retryAfter > 0), or neither for a wrong name or password.
func (s *Service) Login(r *http.Request, user string, pw []byte) (ok bool, retryAfter time.Duration) {
	cw := &captureWriter{h: http.Header{}}
	_, ok = s.checkPassword(cw, r, user, pw, func(string) {})
	if ok {
		return true, 0
	}
	if cw.status == http.StatusTooManyRequests {
		secs, _ := strconv.Atoi(cw.h.Get("Retry-After"))
		return false, time.Duration(max(secs, 1)) * time.Second
	}
	return false, 0
}

// HasUser reports whether user is in the current htpasswd file, so a web
// session ends when its user is removed.
func (s *Service) HasUser(user string) bool { return s.v.hasUser(user) }

// captureWriter keeps what checkPassword would have answered (a 429 and
// its Retry-After) so Login can turn it into values.
type captureWriter struct {
	h      http.Header
	status int
}

func (c *captureWriter) Header() http.Header         { return c.h }
func (c *captureWriter) Write(b []byte) (int, error) { return len(b), nil }
func (c *captureWriter) WriteHeader(status int)      { c.status = status }
