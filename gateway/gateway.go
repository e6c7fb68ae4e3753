package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend"
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
}

// siteTable is one generation of sites, built from one Config.
type siteTable struct {
	byHost   map[string]*site
	wildcard *site // host = "*": any Host (development and internal use)
	closers  []io.Closer
}

// site is one [[site]] ready to serve: its config and its handler chain.
type site struct {
	cfg     Site
	handler http.Handler
}

// New builds every site's backend from cfg.
func New(ctx context.Context, cfg *Config, log zerolog.Logger) (*Gateway, error) {
	g := &Gateway{log: log, cfg: cfg, metrics: newMetrics()}
	t, err := g.build(ctx, cfg)
	if err != nil {
		return nil, err
	}
	g.sites.Store(t)
	return g, nil
}

// build makes a site table from a config; on error nothing is left open.
func (g *Gateway) build(ctx context.Context, cfg *Config) (*siteTable, error) {
	t := &siteTable{byHost: map[string]*site{}}
	for _, sc := range cfg.Sites {
		be, err := g.backend(ctx, cfg, sc)
		if err != nil {
			t.close()
			return nil, fmt.Errorf("site %s: %w", sc.Host, err)
		}
		if c, ok := be.(io.Closer); ok {
			t.closers = append(t.closers, c)
		}
		s := &site{cfg: sc, handler: chain(be,
			withRequestID,
			accessLog(&g.log, g.metrics, sc.Host),
			withAPIVersion,
			withRoute,
		)}
		if sc.Host == "*" {
			t.wildcard = s
		} else {
			t.byHost[sc.Host] = s
		}
	}
	return t, nil
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
	}
	return nil, fmt.Errorf("backend %q is not available in this build", sc.Backend)
}

func (t *siteTable) close() {
	for _, c := range t.closers {
		_ = c.Close()
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
	s.handler.ServeHTTP(w, r)
}

func (g *Gateway) reject(w http.ResponseWriter, r *http.Request, status int, msg string) {
	g.log.Info().Str("host", r.Host).Str("method", r.Method).Str("path", r.URL.Path).Int("status", status).Msg(msg)
	backend.WriteError(w, r, backend.Errorf(status, backend.CodeNameUnknown, "%s", msg))
}

// Run serves on the configured listeners until ctx ends, then drains
// in-flight requests and returns.
func (g *Gateway) Run(ctx context.Context) error {
	cfg := g.cfg
	for _, s := range cfg.Sites {
		if s.TLS != "off" {
			return fmt.Errorf("site %s: tls = %q is not available in this build yet; use tls = \"off\"", s.Host, s.TLS)
		}
	}
	ln, err := net.Listen("tcp", cfg.Listen.HTTP)
	if err != nil {
		return fmt.Errorf("listen http: %w", err)
	}
	srv := &http.Server{
		Handler:           g,
		ReadHeaderTimeout: cfg.Listen.ReadHeaderTimeout.Std(),
		IdleTimeout:       cfg.Listen.IdleTimeout.Std(),
		MaxHeaderBytes:    cfg.Listen.MaxHeaderBytes,
		ErrorLog:          nil,
	}
	g.log.Info().Str("addr", ln.Addr().String()).Strs("hosts", cfg.SortedHosts()).Msg("serving http")
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	if cfg.Listen.Admin != "" {
		aln, err := net.Listen("tcp", cfg.Listen.Admin)
		if err != nil {
			_ = srv.Close()
			return fmt.Errorf("listen admin: %w", err)
		}
		admin := &http.Server{Handler: g.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
		defer admin.Close()
		g.log.Info().Str("addr", aln.Addr().String()).Msg("serving admin: /metrics /healthz /readyz")
		go func() {
			if err := admin.Serve(aln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("admin: %w", err)
			}
		}()
	}
	g.ready.Store(true)
	select {
	case err := <-errc:
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}
	g.ready.Store(false)
	g.log.Info().Msg("shutting down: draining in-flight requests")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	err = srv.Shutdown(sctx)
	g.sites.Load().close()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
