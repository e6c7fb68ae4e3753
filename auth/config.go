package auth

import (
	"os"
	"time"

	"github.com/wharf-dev/wharf/internal/conf"
)

// Scheme is a site's auth key: which challenge its 401s carry.
type Scheme string

// Challenge schemes of a site.
const (
	SchemeToken Scheme = "token" // Bearer challenges and wharf's token endpoint (default)
	SchemeBasic Scheme = "basic" // plain Basic challenges, credentials on every request
)

// UnmarshalText makes an unknown auth value fail while decoding.
func (s *Scheme) UnmarshalText(b []byte) error {
	v, err := conf.ParseEnum("auth", b, SchemeToken, SchemeBasic)
	*s = v
	return err
}

// Anonymous is a site's anonymous key: what callers without a login may do.
type Anonymous string

// Values of a site's anonymous key.
const (
	AnonymousNone Anonymous = ""     // nothing: login required
	AnonymousPull Anonymous = "pull" // pull everything on the site
)

// UnmarshalText makes an unknown anonymous value fail while decoding.
func (a *Anonymous) UnmarshalText(b []byte) error {
	v, err := conf.ParseEnum("anonymous", b, AnonymousPull, AnonymousNone)
	*a = v
	return err
}

// Defaults of the [auth] table.
const (
	DefaultRealm    = "wharf"
	DefaultTokenTTL = 5 * time.Minute
)

// Section is the [auth] table of gateway.toml. It is the only place its
// keys, defaults and rules live.
type Section struct {
	// Htpasswd is the bcrypt htpasswd file; "" = no logins at all.
	Htpasswd string `toml:"htpasswd"`
	Realm    string `toml:"realm"`
	// TokenTTL is how long a token from the built-in token service lives.
	TokenTTL conf.Duration `toml:"token_ttl"`
}

// SetDefaults fills in what the user left out.
func (s *Section) SetDefaults() {
	if s.Realm == "" {
		s.Realm = DefaultRealm
	}
	if s.TokenTTL == 0 {
		s.TokenTTL = conf.Duration(DefaultTokenTTL)
	}
}

// Validate reports every problem of the section (keys relative to it).
// The whole htpasswd file is parsed, so a bad line is found by `wharf
// check` and not at the first login.
func (s *Section) Validate(env conf.Env) conf.Problems {
	var ps conf.Problems
	if s.Htpasswd == "" {
		return nil
	}
	f := env.Path(s.Htpasswd)
	if _, err := os.Stat(f); err != nil {
		ps.Add("htpasswd", "cannot read htpasswd file: %v (create it with `wharf passwd USER >> FILE`)", err)
	} else if _, _, err := LoadHtpasswd(f); err != nil {
		ps.Add("", "%v", err)
	}
	return ps
}
