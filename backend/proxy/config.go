package proxy

import "github.com/wharf-dev/wharf/internal/conf"

// Config is the [site.proxy] table of a gateway.toml site with
// backend = "proxy". It is the only place this section's keys, defaults
// and rules live; New takes what it describes as valid.
type Config struct {
	// Upstream is the registry's base URL, scheme://host[:port].
	Upstream string `toml:"upstream"`
	// PreserveHost sends the client's Host header upstream instead of the
	// upstream's own host name (X-Forwarded-Host carries it either way).
	PreserveHost bool `toml:"preserve_host"`
}

// SetDefaults fills in what the user left out (nothing yet).
func (c *Config) SetDefaults(host string) {}

// Validate reports every problem of the section (keys relative to it).
func (c *Config) Validate(env conf.Env) conf.Problems {
	var ps conf.Problems
	if c.Upstream == "" {
		ps.Add("upstream", "backend = \"proxy\" needs [site.proxy] upstream")
	} else if _, err := ParseUpstream(c.Upstream); err != nil {
		ps.Add("upstream", "%v", err)
	}
	return ps
}
