package gateway

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/auth"
	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/cache"
	"github.com/wharf-dev/wharf/backend/proxy"
	"github.com/wharf-dev/wharf/backend/registry"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/internal/conf"
)

// SitePlan is one [[site]] resolved into everything opening it takes:
// paths made absolute, defaults applied, the backend's options filled in.
// Plans are the one site factory: `wharf serve` and SIGHUP reload open
// them (Open), `wharf check` builds them and stops there (nothing is bound,
// created or contacted), `wharf gc` opens their stores (OpenStore).
type SitePlan struct {
	Site Site
	// Root is the site's storage root, resolved below data_dir; "" for a
	// proxy site.
	Root string
	// Auth is the site as its auth.Guard sees it (policy not set).
	Auth auth.Site
	// Env resolves the paths of the site's secret files.
	Env conf.Env
	// CacheMetrics receives a cache site's series (the serving
	// gateway's); nil = not counted.
	CacheMetrics *cache.Metrics
}

// Location names where the site's data lives: its root directory, or
// s3://bucket/prefix for a registry or cache on S3; "" for a proxy site.
// Two sites with one location share their data.
func (p *SitePlan) Location() string {
	switch {
	case p.Site.Backend == KindRegistry && !p.Site.Registry.Local():
		return "s3://" + p.Site.Registry.S3.Bucket + "/" + p.Site.Registry.S3.Prefix
	case p.Site.Backend == KindCache && !p.Site.Cache.Local():
		return "s3://" + p.Site.Cache.S3.Bucket + "/" + p.Site.Cache.S3.Prefix
	}
	return p.Root
}

// Plan builds the plan of every site of a validated config, in file
// order.
func (c *Config) Plan() []SitePlan {
	ps := make([]SitePlan, len(c.Sites))
	for i, s := range c.Sites {
		p := SitePlan{Site: s, Auth: auth.Site{Host: s.Host, Anonymous: s.Anonymous, Scheme: s.AuthScheme}, Env: c.Env()}
		switch s.Backend {
		case KindRegistry:
			if s.Registry.Local() {
				p.Root = c.DataPath(s.Registry.Root)
			}
		case KindCache:
			if s.Cache.Local() {
				p.Root = c.DataPath(s.Cache.Root)
			}
		}
		if p.Root != "" {
			if abs, err := filepath.Abs(p.Root); err == nil {
				p.Root = abs
			}
		}
		ps[i] = p
	}
	return ps
}

// Open builds the site's backend as `wharf serve` runs it; env resolves
// the paths of secret files. The gateway reaches it only through
// ServeRoute, with a parsed route.
func (p *SitePlan) Open(ctx context.Context, env conf.Env, log zerolog.Logger) (backend.RouteHandler, error) {
	s := p.Site
	log = log.With().Str("site", s.Host).Logger()
	switch s.Backend {
	case KindRegistry:
		if s.Registry.Local() && s.Registry.S3 != nil {
			log.Info().Str("root", p.Root).Str("bucket", s.Registry.S3.Bucket).
				Msg("serving from the file system; [site.registry.s3] is only the target of wharf migrate-storage until storage = \"s3\"")
		}
		st, err := s.Registry.OpenStore(ctx, env, p.Root, log)
		if err != nil {
			return nil, fmt.Errorf("open registry storage: %w", err)
		}
		r, err := registry.New(ctx, registry.Options{Store: st, Delete: s.Registry.Delete, Redirect: s.Registry.Redirect(), Logger: log})
		if err != nil {
			return nil, fmt.Errorf("open registry: %w", err)
		}
		return r, nil
	case KindCache:
		pw, err := s.Cache.UpstreamPassword(env)
		if err != nil {
			return nil, fmt.Errorf("cache: password_file: %w", err)
		}
		ups, err := s.Cache.UpstreamTable(env)
		if err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
		st, err := s.Cache.OpenStore(ctx, env, p.Root, log)
		if err != nil {
			return nil, fmt.Errorf("open cache storage: %w", err)
		}
		c, err := cache.New(ctx, cache.Options{
			Store:     st,
			Upstream:  s.Cache.Upstream,
			Upstreams: ups,
			TTL:       s.Cache.TTL.Std(),
			Username:  s.Cache.Username,
			Password:  pw,
			MaxAge:    s.Cache.MaxAge.Std(),
			MaxSize:   int64(s.Cache.MaxSize),
			Metrics:   p.CacheMetrics,
			Site:      s.Host,
			Logger:    log,
		})
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("open cache: %w", err)
		}
		return c, nil
	case KindProxy:
		pr, err := proxy.New(proxy.Options{Upstream: s.Proxy.Upstream, PreserveHost: s.Proxy.PreserveHost, Log: log})
		if err != nil {
			return nil, err
		}
		return pr, nil
	}
	return nil, fmt.Errorf("backend %q is not available in this build", s.Backend)
}

// OpenStore opens the site's storage as its backend does (`wharf gc`).
// A proxy site has none.
func (p *SitePlan) OpenStore() (storage.Store, error) {
	switch p.Site.Backend {
	case KindRegistry:
		return p.Site.Registry.OpenStore(context.Background(), p.Env, p.Root, zerolog.Nop())
	case KindCache:
		return p.Site.Cache.OpenStore(context.Background(), p.Env, p.Root, zerolog.Nop())
	}
	return nil, fmt.Errorf("site %s: backend %q keeps no data", p.Site.Host, p.Site.Backend)
}

// validateRoots refuses storage roots of different sites that lie inside
// one another, and a cache sharing a registry's root: gc and eviction
// would remove each other's data. Sites of the same kind may share one
// root exactly.
func (c *Config) validateRoots(v *validation) {
	plans := c.Plan()
	if err := creatableDir(c.Path(c.DataDir)); err != nil {
		v.add("data_dir", "data_dir: %v", err)
	}
	for i, p := range plans {
		if p.Root == "" {
			continue
		}
		if err := creatableDir(p.Root); err != nil {
			v.add(fmt.Sprintf("site[%d].%s.root", i, p.Site.Backend), "storage root: %v", err)
		}
	}
	for i := range plans {
		for j := 0; j < i; j++ {
			c.dataClash(v, plans[j], j, plans[i], i)
		}
	}
}

// dataClash refuses site b (number i) keeping its data where site a
// (number j) does: a root, or a bucket prefix of an S3 site.
func (c *Config) dataClash(v *validation, a SitePlan, j int, b SitePlan, i int) {
	la, lb := a.Location(), b.Location()
	if la == "" || lb == "" || (a.Root == "") != (b.Root == "") {
		return
	}
	what, short, own, key := "storage root", "root", "folder", fmt.Sprintf("site[%d].%s.root", i, b.Site.Backend)
	if b.Root == "" {
		what, short, own, key = "bucket prefix", "prefix", "prefix", fmt.Sprintf("site[%d].%s.s3.prefix", i, b.Site.Backend)
		la, lb = strings.TrimRight(la, "/"), strings.TrimRight(lb, "/")
	}
	switch {
	case la == lb && a.Site.Backend != b.Site.Backend:
		v.add(key, "%s %s is also the %s of %s site %s (line %d): a %s and a %s cannot share data",
			what, lb, short, a.Site.Backend, a.Site.Host, c.lineOf(fmt.Sprintf("site[%d]", j)), a.Site.Backend, b.Site.Backend)
	case la != lb && (within(la, lb) || within(lb, la)):
		v.add(key, "%s %s overlaps the %s %s of site %s (line %d): give each site its own %s",
			what, lb, short, la, a.Site.Host, c.lineOf(fmt.Sprintf("site[%d]", j)), own)
	}
}

// creatableDir reports why dir cannot be a directory wharf creates
// (serve creates it, check must not): it, or else its nearest existing
// parent, must be a directory.
func creatableDir(dir string) error {
	d := dir
	for {
		fi, err := os.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				if d == dir {
					return fmt.Errorf("%s exists and is not a directory", dir)
				}
				return fmt.Errorf("cannot create %s: %s is not a directory", dir, d)
			}
			// Permissions are not checked: check may run as another
			// user than serve (in CI, say).
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("cannot use %s: %v", dir, err)
		}
		parent := filepath.Dir(d)
		if parent == d {
			return nil
		}
		d = parent
	}
}

// within reports whether path p lies below dir.
func within(p, dir string) bool {
	return strings.HasPrefix(p, dir+string(filepath.Separator))
}
