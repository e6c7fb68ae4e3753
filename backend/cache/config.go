package cache

import (
	"path/filepath"

	"github.com/wharf-dev/wharf/internal/conf"
)

// Config is the [site.cache] table of a gateway.toml site with
// backend = "cache". It is the only place this section's keys, defaults
// and rules live; New takes what it describes as valid.
type Config struct {
	// Upstream is the mirrored registry's base URL, scheme://host[:port].
	Upstream string `toml:"upstream"`
	// TTL is how long a tag->digest answer is trusted; default DefaultTTL.
	TTL conf.Duration `toml:"ttl"`
	// Username and Password are the upstream credentials; empty means
	// anonymous.
	Username string `toml:"username"`
	Password string `toml:"password"`
	// Root is the storage root, relative to data_dir unless absolute;
	// default "cache/<host>".
	Root string `toml:"root"`
	// MaxAge: `wharf gc` evicts cached tags, manifests and blobs not used
	// for this long. Zero (the default) never evicts anything.
	MaxAge conf.Duration `toml:"max_age"`
}

// SetDefaults fills in what the user left out for the site named host.
func (c *Config) SetDefaults(host string) {
	if c.TTL == 0 {
		c.TTL = conf.Duration(DefaultTTL)
	}
	if c.Root == "" {
		c.Root = filepath.Join("cache", host)
	}
}

// Validate reports every problem of the section (keys relative to it).
func (c *Config) Validate(env conf.Env) conf.Problems {
	var ps conf.Problems
	if c.Upstream == "" {
		ps.Add("upstream", "backend = \"cache\" needs [site.cache] upstream")
	} else if _, err := parseUpstream(c.Upstream); err != nil {
		ps.Add("upstream", "%v", err)
	}
	if c.Password != "" && c.Username == "" {
		ps.Add("password", "password without username: set both, or neither for anonymous pulls")
	}
	if c.TTL < 0 {
		ps.Add("ttl", "negative ttl %v", c.TTL.Std())
	}
	if c.MaxAge < 0 {
		ps.Add("max_age", "negative max_age %v: want a duration such as \"720h\", or 0 to never evict", c.MaxAge.Std())
	}
	return ps
}
