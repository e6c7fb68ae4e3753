package acme

import (
	"net/url"

	"github.com/wharf-dev/wharf/internal/conf"
)

// Mode is a site's tls key: how its certificate is obtained.
type Mode string

// TLS modes of a site, as written in gateway.toml.
const (
	ModeACME   Mode = "acme"   // from the ACME CA (default)
	ModeManual Mode = "manual" // cert and key files
	ModeOff    Mode = "off"    // plain HTTP on [listen] http
)

// Modes lists every valid Mode.
var Modes = []Mode{ModeACME, ModeManual, ModeOff}

// UnmarshalText makes an unknown tls value fail while decoding.
func (m *Mode) UnmarshalText(b []byte) error {
	v, err := conf.ParseEnum("tls", b, Modes...)
	*m = v
	return err
}

// Challenge is an ACME challenge type wharf can answer.
type Challenge string

// Challenge types.
const (
	HTTP01    Challenge = "http-01"     // on [listen] http
	TLSALPN01 Challenge = "tls-alpn-01" // on [listen] https
)

// UnmarshalText makes an unknown challenge fail while decoding.
func (c *Challenge) UnmarshalText(b []byte) error {
	v, err := conf.ParseEnum("ACME challenge", b, HTTP01, TLSALPN01)
	*c = v
	return err
}

// Section is the [acme] table of gateway.toml. It is the only place its
// keys, defaults and rules live.
type Section struct {
	Email string `toml:"email"`
	// CA is the ACME directory URL; default DefaultCA.
	CA string `toml:"ca"`
	// CARoot is a PEM file of extra roots to trust for the ACME server.
	CARoot string `toml:"ca_root"`
	// Challenges are the challenge types wharf answers; default both.
	Challenges []Challenge `toml:"challenges"`
}

// SetDefaults fills in what the user left out.
func (s *Section) SetDefaults() {
	if s.CA == "" {
		s.CA = DefaultCA
	}
	if s.Challenges == nil {
		s.Challenges = []Challenge{HTTP01, TLSALPN01}
	}
}

// Has reports whether challenge c is enabled.
func (s *Section) Has(c Challenge) bool {
	for _, x := range s.Challenges {
		if x == c {
			return true
		}
	}
	return false
}

// Validate reports every problem of the section (keys relative to it).
// Rules that need [listen] or the sites are the gateway's (it composes
// the sections).
func (s *Section) Validate(env conf.Env) conf.Problems {
	var ps conf.Problems
	if len(s.Challenges) == 0 {
		ps.Add("challenges", "no ACME challenge left: want \"http-01\", \"tls-alpn-01\" or both")
	}
	if u, err := url.Parse(s.CA); err != nil || u.Scheme != "https" || u.Host == "" {
		ps.Add("ca", "invalid ACME directory URL %q: want https://...", s.CA)
	}
	if s.CARoot != "" {
		if _, err := rootPool(env.Path(s.CARoot)); err != nil {
			ps.Add("ca_root", "cannot read ACME CA root: %v", err)
		}
	}
	return ps
}
