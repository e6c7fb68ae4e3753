package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/acme"
	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/proxy"
	"github.com/wharf-dev/wharf/backend/registry"
)

// Gateway routes requests by Host to the backend of each configured site.
// Its site table is swapped atomically on reload, so requests in flight
// finish on the table they started with.
type Gateway struct {
	log   zerolog.Logger
	sites atomic.Pointer[siteTable]
	mu    sync.Mutex // serialises Reload
	cfg   *Config

	metrics *metrics
	ready   atomic.Bool // listeners are up; /readyz answers 200

	certs     *acme.Manager // TLS certificates; nil without [listen] https (set under mu)
	running   bool          // Serve has set up its listeners (under mu)
	httpsPort string        // ":8443" in redirects when https is not on 443
}

// siteTable is one generation of sites, built from one Config.
type siteTable struct {
	byHost   map[string]*site
	wildcard *site // host = "*": any Host (development and internal use)
}

// site is one [[site]] ready to serve: its config and its handler chain.
// A reload keeps a site whose config did not change (uploads in progress
// keep their backend); a removed or changed one is closed once its last
// request is done.
type site struct {
	cfg      Site
	handler  http.Handler
	closer   io.Closer
	inflight atomic.Int64
}

// New builds every site's backend from cfg.
func New(ctx context.Context, cfg *Config, log zerolog.Logger) (*Gateway, error) {
	g := &Gateway{log: log, cfg: cfg, metrics: newMetrics()}
	t, err := g.build(ctx, cfg, nil)
	if err != nil {
		return nil, err
	}
	g.sites.Store(t)
	return g, nil
}

// build makes a site table from a config, taking unchanged sites over
// from old (may be nil); on error nothing new is left open.
func (g *Gateway) build(ctx context.Context, cfg *Config, old *siteTable) (*siteTable, error) {
	t := &siteTable{byHost: map[string]*site{}}
	var made []*site
	for _, sc := range cfg.Sites {
		s := old.reusable(sc)
		if s == nil {
			be, err := g.backend(ctx, cfg, sc)
			if err != nil {
				for _, m := range made {
					m.close()
				}
				return nil, fmt.Errorf("site %s: %w", sc.Host, err)
			}
			s = &site{cfg: sc, handler: chain(be,
				withRequestID,
				accessLog(&g.log, g.metrics, sc.Host),
				withAPIVersion,
				withRoute,
			)}
			if c, ok := be.(io.Closer); ok {
				s.closer = c
			}
			made = append(made, s)
		}
		if sc.Host == "*" {
			t.wildcard = s
		} else {
			t.byHost[sc.Host] = s
		}
	}
	return t, nil
}

// reusable returns the site of t serving exactly sc, if any.
func (t *siteTable) reusable(sc Site) *site {
	if t == nil {
		return nil
	}
	s := t.wildcard
	if sc.Host != "*" {
		s = t.byHost[sc.Host]
	}
	if s == nil || !reflect.DeepEqual(s.cfg, sc) {
		return nil
	}
	return s
}

func (g *Gateway) backend(ctx context.Context, cfg *Config, sc Site) (http.Handler, error) {
	switch sc.Backend {
	case "registry":
		r, err := registry.New(ctx, registry.Options{
			Root:   cfg.DataPath(sc.Registry.Root),
			Delete: sc.Registry.Delete,
			Logger: g.log.With().Str("site", sc.Host).Logger(),
		})
		if err != nil {
			return nil, fmt.Errorf("open registry: %w", err)
		}
		return r, nil
	case "proxy":
		p, err := proxy.New(proxy.Options{
			Upstream: sc.Proxy.Upstream,
			Log:      g.log.With().Str("site", sc.Host).Logger(),
		})
		if err != nil {
			return nil, err
		}
		return closerFunc{p, p.Close}, nil
	}
	return nil, fmt.Errorf("backend %q is not available in this build", sc.Backend)
}

// closerFunc gives a handler with a Close() method io.Closer's shape.
type closerFunc struct {
	http.Handler
	close func()
}

func (c closerFunc) Close() error { c.close(); return nil }

// sites lists every site of the table once.
func (t *siteTable) sites() []*site {
	out := make([]*site, 0, len(t.byHost)+1)
	for _, s := range t.byHost {
		out = append(out, s)
	}
	if t.wildcard != nil {
		out = append(out, t.wildcard)
	}
	return out
}

func (t *siteTable) close() {
	for _, s := range t.sites() {
		s.close()
	}
}

func (s *site) close() {
	if s.closer != nil {
		_ = s.closer.Close()
	}
}

// hostName lower-cases a Host header and drops its port.
func hostName(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSuffix(h, "]"), "["), ".")
	return strings.ToLower(h)
}

// lookup finds the site for a Host header value.
func (t *siteTable) lookup(host string) *site {
	if s, ok := t.byHost[hostName(host)]; ok {
		return s
	}
	return t.wildcard
}

// ServeHTTP routes a request to its site by the Host header (port ignored,
// case-insensitive). An unknown host gets a clear 404.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := g.sites.Load().lookup(r.Host)
	if s == nil {
		if r.Host == "" {
			g.reject(w, r, http.StatusBadRequest, "missing Host header")
			return
		}
		g.reject(w, r, http.StatusNotFound, fmt.Sprintf("no site for host %q on this server", hostName(r.Host)))
		return
	}
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	s.handler.ServeHTTP(w, r)
}

func (g *Gateway) reject(w http.ResponseWriter, r *http.Request, status int, msg string) {
	g.log.Info().Str("host", r.Host).Str("method", r.Method).Str("path", r.URL.Path).Int("status", status).Msg(msg)
	backend.WriteError(w, r, backend.Errorf(status, backend.CodeNameUnknown, "%s", msg))
}
