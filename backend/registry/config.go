package registry

import (
	"path/filepath"

	"github.com/wharf-dev/wharf/internal/conf"
)

// Config is the [site.registry] table of a gateway.toml site with
// backend = "registry". It is the only place this section's keys,
// defaults and rules live; New takes what it describes as valid.
type Config struct {
	// Root is the storage root, relative to data_dir unless absolute;
	// default "registry/<host>".
	Root string `toml:"root"`
	// Delete allows DELETE of manifests, tags and blobs.
	Delete bool `toml:"delete"`
}

// SetDefaults fills in what the user left out for the site named host.
func (c *Config) SetDefaults(host string) {
	if c.Root == "" {
		c.Root = filepath.Join("registry", host)
	}
}

// Validate reports every problem of the section (keys relative to it).
func (c *Config) Validate(env conf.Env) conf.Problems { return nil }
