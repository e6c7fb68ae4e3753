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
	// anonymous. Password may be "${ENV_NAME}"; PasswordFile names a file
	// holding it instead (relative to the config file's folder).
	Username     string      `toml:"username"`
	Password     conf.Secret `toml:"password"`
	PasswordFile string      `toml:"password_file"`
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

// UpstreamPassword is the upstream password: password, or the content
// of password_file.
func (c *Config) UpstreamPassword(env conf.Env) (string, error) {
	if c.PasswordFile != "" {
		return conf.ReadSecretFile(env, c.PasswordFile)
	}
	return c.Password.Reveal(), nil
}

// Validate reports every problem of the section (keys relative to it).
func (c *Config) Validate(env conf.Env) conf.Problems {
	var ps conf.Problems
	if c.Upstream == "" {
		ps.Add("upstream", "backend = \"cache\" needs [site.cache] upstream")
	} else if _, err := parseUpstream(c.Upstream); err != nil {
		ps.Add("upstream", "%v", err)
	}
	switch {
	case c.Password != "" && c.PasswordFile != "":
		ps.Add("password_file", "password and password_file both set: keep one")
	case c.PasswordFile != "":
		if _, err := c.UpstreamPassword(env); err != nil {
			ps.Add("password_file", "%v", err)
		} else if c.Username == "" {
			ps.Add("password_file", "password_file without username: set both, or neither for anonymous pulls")
		}
	case c.Password != "" && c.Username == "":
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
