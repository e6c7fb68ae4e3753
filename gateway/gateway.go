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
	"time"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/acme"
	"github.com/wharf-dev/wharf/auth"
	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/cache"
	"github.com/wharf-dev/wharf/backend/proxy"
	"github.com/wharf-dev/wharf/cleanup"
	"github.com/wharf-dev/wharf/webhook"
)

// Gateway routes requests by Host to the backend of each configured site.
// Its site table is swapped atomically on reload, so requests in flight
// finish on the table they started with.
type Gateway struct {
	log   zerolog.Logger
	sites atomic.Pointer[siteTable]
	mu    sync.Mutex // serialises Reload
	cfg   *Config

	metrics        *metrics
	cacheMetrics   *cache.Metrics // series of every cache site
	cleanupMetrics *cleanup.Metrics
	webhookMetrics *webhook.Metrics

	// hooks sends [[webhook]] events (nil without endpoints); replaced on
	// reload when the endpoints change.
	hooks  atomic.Pointer[webhook.Notifier]
	source webhook.Source   // this instance, in events
	now    func() time.Time // event time stamps
	ready  atomic.Bool      // listeners are up; /readyz answers 200

	certs     *acme.Manager // TLS certificates; nil without [listen] https (set under mu)
	running   bool          // Serve has set up its listeners (under mu)
	httpsPort string        // ":8443" in redirects when https is not on 443

	// auth checks logins for every site; nil when [auth] htpasswd is
	// empty, in which case every caller may do everything (under mu).
	auth *auth.Service
	// life is the gateway's lifetime context (the auth file watcher).
	life context.Context
}

// siteTable is one generation of sites, built from one Config.
type siteTable struct {
	byHost   map[string]*entry
	wildcard *entry // host = "*": any Host (development and internal use)
}

// entry is a site as one table serves it: the site's backend behind this
// generation's request handling (auth, policy, UI; siteServer).
type entry struct {
	site    *site
	handler http.Handler
}

// site is one [[site]] ready to serve: its config and its backend.
// A reload keeps a site whose config did not change (uploads in progress
// keep their backend); a removed or changed one is closed once its last
// request is done.
type site struct {
	cfg      Site
	backend  backend.RouteHandler // reached only with a parsed route (siteServer)
	closer   io.Closer
	inflight atomic.Int64
}

// New builds every site's backend from cfg.
func New(ctx context.Context, cfg *Config, log zerolog.Logger) (*Gateway, error) {
	g := &Gateway{log: log, cfg: cfg, metrics: newMetrics()}
	g.cacheMetrics = cache.NewMetrics(g.metrics.reg)
	g.cleanupMetrics = cleanup.NewMetrics(g.metrics.reg)
	g.webhookMetrics = webhook.NewMetrics(g.metrics.reg)
	g.source, g.now = instanceSource(), time.Now
	g.life = ctx
	g.metrics.reg.MustRegister(newAuthCollector(g))
	svc, err := g.newAuth(cfg)
	if err != nil {
		return nil, err
	}
	g.auth = svc
	hooks, err := g.newNotifier(cfg)
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	g.hooks.Store(hooks)
	t, err := g.build(ctx, cfg, nil)
	if err != nil {
		hooks.Close()
		return nil, err
	}
	g.sites.Store(t)
	return g, nil
}

// build makes a site table from a config, taking unchanged sites over
// from old (may be nil); on error nothing new is left open.
func (g *Gateway) build(ctx context.Context, cfg *Config, old *siteTable) (*siteTable, error) {
	t := &siteTable{byHost: map[string]*entry{}}
	pol, err := cfg.BuildPolicy()
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	var made []*site
	for _, plan := range cfg.Plan() {
		sc := plan.Site
		s := old.reusable(sc)
		if s == nil {
			plan.CacheMetrics = g.cacheMetrics
			be, err := plan.Open(ctx, cfg.Env(), g.log)
			if err != nil {
				for _, m := range made {
					m.close()
				}
				return nil, fmt.Errorf("site %s: %w", sc.Host, err)
			}
			s = &site{cfg: sc, backend: be}
			if c, ok := be.(io.Closer); ok {
				s.closer = c
			}
			made = append(made, s)
		}
		// What stands in front of the backend is made anew each time, so
		// a reload applies new users, policy and anonymous settings to a
		// site whose backend it keeps.
		srv := &siteServer{g: g, host: sc.Host, be: s.backend}
		srv.res, _ = s.backend.(backend.RouteResolver)
		_, srv.upstreamToken = s.backend.(*proxy.Proxy)
		if g.auth != nil {
			as := plan.Auth
			as.Policy = pol
			srv.guard = g.auth.Guard(as)
		}
		if srv.web, err = g.webFor(cfg, sc, s.backend, pol); err != nil {
			for _, m := range made {
				m.close()
			}
			return nil, fmt.Errorf("site %s: %w", sc.Host, err)
		}
		e := &entry{site: s, handler: withRequestID(accessLog(&g.log, g.metrics, sc.Host)(srv.serve))}
		if sc.Host == "*" {
			t.wildcard = e
		} else {
			t.byHost[sc.Host] = e
		}
	}
	return t, nil
}

// authConfig maps [auth] to the auth service's settings; the token key is
// kept under data_dir (or [cluster] shared_dir) so tokens survive a
// restart and every instance accepts every other's tokens.
func authConfig(cfg *Config) auth.Config {
	return auth.Config{
		Htpasswd: cfg.Path(cfg.Auth.Htpasswd),
		Realm:    cfg.Auth.Realm,
		TokenTTL: cfg.Auth.TokenTTL.Std(),
		KeyFile:  cfg.sharedPath("auth/token.key"),
	}
}

// newAuth starts the auth service for cfg, or returns nil when cfg has no
// [auth] htpasswd.
func (g *Gateway) newAuth(cfg *Config) (*auth.Service, error) {
	if cfg.Auth.Htpasswd == "" {
		return nil, nil
	}
	svc, err := auth.New(g.life, authConfig(cfg), g.log.With().Str("component", "auth").Logger())
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return svc, nil
}

// reusable returns the site of t serving exactly sc, if any.
func (t *siteTable) reusable(sc Site) *site {
	if t == nil {
		return nil
	}
	e := t.wildcard
	if sc.Host != "*" {
		e = t.byHost[sc.Host]
	}
	if e == nil || !reflect.DeepEqual(e.site.cfg, sc) {
		return nil
	}
	return e.site
}

// sites lists every site of the table once.
func (t *siteTable) sites() []*site {
	out := make([]*site, 0, len(t.byHost)+1)
	for _, e := range t.byHost {
		out = append(out, e.site)
	}
	if t.wildcard != nil {
		out = append(out, t.wildcard.site)
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
func (t *siteTable) lookup(host string) *entry {
	if e, ok := t.byHost[hostName(host)]; ok {
		return e
	}
	return t.wildcard
}

// ServeHTTP routes a request to its site by the Host header (port ignored,
// case-insensitive). An unknown host gets a clear 404.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e := g.sites.Load().lookup(r.Host)
	if e == nil {
		if r.Host == "" {
			g.reject(w, r, http.StatusBadRequest, "missing Host header")
			return
		}
		g.reject(w, r, http.StatusNotFound, fmt.Sprintf("no site for host %q on this server", hostName(r.Host)))
		return
	}
	e.site.inflight.Add(1)
	defer e.site.inflight.Add(-1)
	e.handler.ServeHTTP(w, r)
}

func (g *Gateway) reject(w http.ResponseWriter, r *http.Request, status int, msg string) {
	g.log.Info().Str("host", r.Host).Str("method", r.Method).Str("path", r.URL.Path).Int("status", status).Msg(msg)
	backend.WriteError(w, r, backend.Errorf(status, backend.CodeNameUnknown, "%s", msg))
}

// Close releases what New opened (sites' stores, the auth service) for a
// gateway that is not going to Run (Run closes them itself on return).
func (g *Gateway) Close() {
	g.sites.Load().close()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.auth != nil {
		g.auth.Close()
	}
}
