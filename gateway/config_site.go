package gateway

import (
	"net"
	"os"
	"strings"

	"github.com/wharf-dev/wharf/acme"
	"github.com/wharf-dev/wharf/auth"
	"github.com/wharf-dev/wharf/backend/cache"
	"github.com/wharf-dev/wharf/backend/proxy"
	"github.com/wharf-dev/wharf/backend/registry"
	"github.com/wharf-dev/wharf/internal/conf"
)

// Kind is a site's backend key: what serves its /v2/.
type Kind string

// Backend kinds.
const (
	KindRegistry Kind = "registry" // the embedded registry, [site.registry]
	KindCache    Kind = "cache"    // a pull-through cache, [site.cache]
	KindProxy    Kind = "proxy"    // a reverse proxy, [site.proxy]
)

// Kinds lists every backend kind.
var Kinds = []Kind{KindRegistry, KindCache, KindProxy}

// UnmarshalText makes an unknown backend fail while decoding.
func (k *Kind) UnmarshalText(b []byte) error {
	v, err := conf.ParseEnum("backend", b, Kinds...)
	*k = v
	return err
}

// Site is one [[site]]: a host name and the backend that serves it. The
// backend's own table ([site.registry], [site.cache], [site.proxy]) is
// owned by the backend's package.
type Site struct {
	Host      string         `toml:"host"`
	Backend   Kind           `toml:"backend"`
	TLS       acme.Mode      `toml:"tls"` // default acme
	Cert      string         `toml:"cert"`
	Key       string         `toml:"key"`
	Anonymous auth.Anonymous `toml:"anonymous"`
	// AuthScheme chooses the challenge: "token" (default; Bearer from
	// wharf's own token service) or "basic".
	AuthScheme auth.Scheme `toml:"auth"`
	// UI turns the web UI at https://<host>/ on or off; unset = on for
	// registry and cache sites (see UIEnabled in ui.go).
	UI *bool `toml:"ui"`

	Registry *registry.Config `toml:"registry"`
	Cache    *cache.Config    `toml:"cache"`
	Proxy    *proxy.Config    `toml:"proxy"`
}

// SetDefaults fills in what the user left out, the backend's table
// included (an absent table is a table of defaults).
func (s *Site) SetDefaults() {
	s.Host = strings.ToLower(strings.TrimSuffix(s.Host, "."))
	if s.TLS == "" {
		s.TLS = acme.ModeACME
	}
	if s.AuthScheme == "" {
		s.AuthScheme = auth.SchemeToken
	}
	switch s.Backend {
	case KindRegistry:
		if s.Registry == nil {
			s.Registry = &registry.Config{}
		}
		s.Registry.SetDefaults(s.Host)
	case KindCache:
		if s.Cache == nil {
			s.Cache = &cache.Config{}
		}
		s.Cache.SetDefaults(s.Host)
	case KindProxy:
		if s.Proxy == nil {
			s.Proxy = &proxy.Config{}
		}
		s.Proxy.SetDefaults(s.Host)
	}
}

// Validate reports every problem of the site (keys relative to it): its
// own keys, what it needs from [listen] and [auth] of c, and its backend's
// table by that table's Validate.
func (s *Site) Validate(env conf.Env, c *Config) conf.Problems {
	var ps conf.Problems
	if s.Host == "" {
		ps.Add("host", "site has no host")
	} else if s.Host != "*" && !validHost(s.Host) {
		ps.Add("host", "invalid host %q: want a DNS name or IP address without port", s.Host)
	}
	s.validateTLS(&ps, env, c)
	if s.Anonymous != "" && c.Auth.Htpasswd == "" {
		ps.Add("anonymous", "anonymous only means something with logins: set [auth] htpasswd (without it every caller may pull and push)")
	}
	other := func(name string, set bool) {
		if set {
			ps.Add(name, "[site.%s] given for a site with backend = %q", name, s.Backend)
		}
	}
	switch s.Backend {
	case KindRegistry:
		other("cache", s.Cache != nil)
		other("proxy", s.Proxy != nil)
		ps.Merge("registry", s.Registry.Validate(env))
	case KindCache:
		other("registry", s.Registry != nil)
		other("proxy", s.Proxy != nil)
		ps.Merge("cache", s.Cache.Validate(env))
	case KindProxy:
		other("registry", s.Registry != nil)
		other("cache", s.Cache != nil)
		if s.UI != nil && *s.UI {
			ps.Add("ui", "ui = true: a proxy site has no web UI (its registry serves every path)")
		}
		ps.Merge("proxy", s.Proxy.Validate(env))
	default:
		ps.Add("backend", "site has no backend: want %s", conf.OneOf(Kinds...))
	}
	return ps
}

// validateTLS checks tls, cert and key; manual pairs are loaded as serve
// loads them.
func (s *Site) validateTLS(ps *conf.Problems, env conf.Env, c *Config) {
	switch s.TLS {
	case acme.ModeACME:
		// the acme package's own rule: a public DNS name
		if err := acme.CheckSite(acmeSite(env, *s)); err != nil && s.Host != "" {
			ps.Add("tls", "tls = \"acme\": %v", err)
		}
		if c.Listen.HTTPS == "" {
			ps.Add("tls", "tls = %q needs [listen] https", s.TLS)
		}
	case acme.ModeManual:
		if c.Listen.HTTPS == "" {
			ps.Add("tls", "tls = %q needs [listen] https", s.TLS)
		}
		if s.Cert == "" || s.Key == "" {
			ps.Add("tls", "tls = \"manual\" needs cert and key")
			return
		}
		bad := false
		for _, f := range []struct{ k, p string }{{"cert", s.Cert}, {"key", s.Key}} {
			if _, err := readable(env.Path(f.p)); err != nil {
				ps.Add(f.k, "cannot read %s: %v", f.k, err)
				bad = true
			}
		}
		if !bad {
			// parses both files and checks that they belong together
			if err := acme.CheckSite(acmeSite(env, *s)); err != nil {
				ps.Add("cert", "%v", err)
			}
		}
	case acme.ModeOff:
		if c.Listen.HTTP == "" {
			ps.Add("tls", "tls = \"off\" serves on [listen] http, which is empty")
		}
	}
	if s.TLS != acme.ModeManual && (s.Cert != "" || s.Key != "") {
		ps.Add("cert", "cert and key are only used with tls = \"manual\"")
	}
}

// acmeSite is the acme package's view of a site (paths resolved).
func acmeSite(env conf.Env, s Site) acme.Site {
	return acme.Site{Host: s.Host, TLS: s.TLS, CertFile: env.Path(s.Cert), KeyFile: env.Path(s.Key)}
}

// validHost accepts DNS names (letters, digits, '-', dots) and IP addresses.
func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// readable reports whether a file can be opened for reading.
func readable(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	f.Close()
	return true, nil
}
