package gateway

import (
	"path/filepath"

	"github.com/wharf-dev/wharf/internal/conf"
)

// Cluster is the [cluster] table: what several `wharf serve` processes
// behind one load balancer share besides their registry bucket.
//
// The token signing key (auth/token.key) and the ACME account and
// certificates (acme/) live in SharedDir instead of data_dir. A shared
// directory (NFS, CephFS, a mounted volume) rather than the bucket:
// certmagic's FileStorage already locks with lock files there (only one
// instance orders a certificate, a dead holder's lock goes stale), the
// token key is created with O_EXCL, and the same files work for caches
// and local-storage sites too. Throttles and in-memory caches stay per
// instance.
type Cluster struct {
	// SharedDir is relative to the config file's folder unless absolute;
	// "" keeps everything in data_dir (one instance).
	SharedDir string `toml:"shared_dir"`
}

// Validate reports every problem of the section (keys relative to it).
func (c *Cluster) Validate(env conf.Env) conf.Problems {
	var ps conf.Problems
	if c.SharedDir != "" {
		if err := creatableDir(env.Path(c.SharedDir)); err != nil {
			ps.Add("shared_dir", "%v", err)
		}
	}
	return ps
}

// sharedPath resolves p below [cluster] shared_dir, or below data_dir
// when there is none.
func (c *Config) sharedPath(p string) string {
	if c.Cluster.SharedDir == "" {
		return c.DataPath(p)
	}
	return filepath.Join(c.Path(c.Cluster.SharedDir), p)
}

// sharedDir is the folder below which acme/ lives.
func (c *Config) sharedDir() string {
	if c.Cluster.SharedDir == "" {
		return c.Path(c.DataDir)
	}
	return c.Path(c.Cluster.SharedDir)
}
