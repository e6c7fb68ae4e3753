package registry

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/localfs"
	"github.com/wharf-dev/wharf/backend/storage/s3store"
	"github.com/wharf-dev/wharf/internal/conf"
)

// Storage kinds of [site.registry] storage (the names every site
// section that keeps data shares, package s3store).
const (
	StorageFilesystem = s3store.StorageFilesystem
	StorageS3         = s3store.StorageS3
)

// Config is the [site.registry] table of a gateway.toml site with
// backend = "registry". It is the only place this section's keys,
// defaults and rules live; New takes what it describes as valid.
type Config struct {
	// Storage is where the data lives: "filesystem" (default, below
	// Root) or "s3" (the [site.registry.s3] bucket).
	Storage string `toml:"storage"`
	// Root is the storage root, relative to data_dir unless absolute;
	// default "registry/<host>". Unused with storage = "s3".
	Root string `toml:"root"`
	// Delete allows DELETE of manifests, tags and blobs.
	Delete bool `toml:"delete"`
	// S3 is the bucket of storage = "s3". With storage = "filesystem" it
	// is the destination of `wharf migrate-storage -to s3` (the site
	// still serves from Root until storage says "s3").
	S3 *s3store.Config `toml:"s3"`
}

// SetDefaults fills in what the user left out for the site named host.
func (c *Config) SetDefaults(host string) {
	if c.Storage == "" {
		c.Storage = StorageFilesystem
	}
	if c.Root == "" {
		c.Root = filepath.Join("registry", host)
	}
	if c.Storage == StorageS3 && c.S3 == nil {
		c.S3 = &s3store.Config{}
	}
	if c.S3 != nil {
		c.S3.SetDefaults(host)
	}
}

// Local reports whether the data lives on the local file system (below
// Root).
func (c *Config) Local() bool { return c.Storage != StorageS3 }

// Redirect reports whether blob GETs answer with a redirect to the
// storage ([site.registry.s3] redirect).
func (c *Config) Redirect() bool { return c.Storage == StorageS3 && c.S3 != nil && c.S3.Redirect }

// Validate reports every problem of the section (keys relative to it):
// the storage rules every data-keeping section shares, except that a
// bucket next to a file system site is allowed. It is where `wharf
// migrate-storage -to s3` copies the site to, checked the same way, so
// the switch-over (storage = "s3") cannot fail on it.
func (c *Config) Validate(env conf.Env) conf.Problems {
	if c.Storage == StorageFilesystem && c.S3 != nil {
		var ps conf.Problems
		ps.Merge("s3", c.S3.Validate(env))
		return ps
	}
	return s3store.ValidateStorage(c.Storage, c.S3, "site.registry", env)
}

// OpenStore opens the storage the section describes: the local file
// system below root (already resolved against data_dir) or the S3
// bucket, which start-up contacts (a wrong bucket or key fails here,
// saying which).
func (c *Config) OpenStore(ctx context.Context, env conf.Env, root string, log zerolog.Logger) (storage.Store, error) {
	if c.Local() {
		return c.OpenLocal(root, log)
	}
	return c.OpenS3(ctx, env, log)
}

// OpenLocal opens the file system store below root whatever Storage
// says (`wharf migrate-storage` copies between it and the bucket).
func (c *Config) OpenLocal(root string, log zerolog.Logger) (storage.Store, error) {
	return localfs.New(localfs.Options{Root: root, Logger: log})
}

// OpenS3 opens the [site.registry.s3] bucket whatever Storage says,
// contacting it (a wrong bucket or key fails here, saying which).
func (c *Config) OpenS3(ctx context.Context, env conf.Env, log zerolog.Logger) (storage.Store, error) {
	if c.S3 == nil {
		return nil, fmt.Errorf("no [site.registry.s3] table")
	}
	o, err := c.S3.Options(env)
	if err != nil {
		return nil, err
	}
	o.Logger = log
	return s3store.New(ctx, o)
}
