package gateway

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/acme"
	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/internal/transport"
)

// HTTP/2 flow control: Go's server defaults (1 MiB per connection and per
// stream) make an HTTP/2 push wait for window updates on fast links; these
// keep a push at HTTP/1.1 speed. Memory stays bounded: the buffer fills
// only when the backend reads slower than the client sends.
const (
	h2ConnWindow   = 8 << 20
	h2StreamWindow = 4 << 20
	h2MaxFrame     = 256 << 10
)

// ShutdownTimeout bounds how long SIGTERM waits for in-flight requests.
const ShutdownTimeout = 10 * time.Minute

// listeners are the bound sockets of one Run.
type listeners struct {
	http, https, admin net.Listener
}

func (l *listeners) close() {
	for _, ln := range []net.Listener{l.http, l.https, l.admin} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

func (g *Gateway) listen() (*listeners, error) {
	g.mu.Lock()
	cfg := g.cfg
	g.mu.Unlock()
	l := &listeners{}
	var err error
	if cfg.Listen.HTTP != "" {
		if l.http, err = net.Listen("tcp", cfg.Listen.HTTP); err != nil {
			return nil, fmt.Errorf("listen http %s: %w", cfg.Listen.HTTP, err)
		}
	}
	if cfg.Listen.HTTPS != "" {
		if l.https, err = net.Listen("tcp", cfg.Listen.HTTPS); err != nil {
			l.close()
			return nil, fmt.Errorf("listen https %s: %w", cfg.Listen.HTTPS, err)
		}
	}
	if cfg.Listen.Admin != "" {
		if l.admin, err = net.Listen("tcp", cfg.Listen.Admin); err != nil {
			l.close()
			return nil, fmt.Errorf("listen admin %s: %w", cfg.Listen.Admin, err)
		}
	}
	return l, nil
}

// Run binds the listeners, starts certificate management, serves until
// ctx ends, then drains in-flight requests (up to ShutdownTimeout) and
// returns.
func (g *Gateway) Run(ctx context.Context) error {
	lns, err := g.listen()
	if err != nil {
		return err
	}
	return g.Serve(ctx, lns.http, lns.https, lns.admin)
}

// Serve is Run on listeners bound by the caller (any may be nil).
func (g *Gateway) Serve(ctx context.Context, httpLn, httpsLn, adminLn net.Listener) error {
	lns := &listeners{httpLn, httpsLn, adminLn}
	g.mu.Lock()
	cfg := g.cfg
	g.mu.Unlock()
	if httpLn == nil && httpsLn == nil {
		lns.close()
		return errors.New("no [listen] http or https address")
	}
	if httpsLn == nil {
		for _, s := range cfg.Sites {
			if s.TLS != "off" {
				lns.close()
				return fmt.Errorf("site %s: tls = %q needs [listen] https", s.Host, s.TLS)
			}
		}
	}
	if httpsLn != nil {
		httpAddr := ""
		if httpLn != nil {
			httpAddr = httpLn.Addr().String()
		}
		m, err := acme.New(ctx, cfg.acmeConfig(httpAddr, httpsLn.Addr().String()), g.log)
		if err != nil {
			lns.close()
			return err
		}
		g.mu.Lock()
		g.certs = m
		g.mu.Unlock()
		defer m.Stop()
		if _, port, err := net.SplitHostPort(httpsLn.Addr().String()); err == nil && port != "443" {
			g.httpsPort = ":" + port
		}
	}

	errorLog := log.New(debugWriter{&g.log}, "", 0)
	lc := cfg.Listen
	// What every connection goes through: internal/transport.
	tc := transport.Config{ProgressTimeout: lc.ProgressTimeout.Std(), MaxConns: lc.MaxConns}
	newServer := func(h http.Handler) *http.Server {
		return &http.Server{
			Handler:           transport.Handler(tc, h),
			ReadHeaderTimeout: lc.ReadHeaderTimeout.Std(),
			IdleTimeout:       lc.IdleTimeout.Std(),
			MaxHeaderBytes:    lc.MaxHeaderBytes,
			ErrorLog:          errorLog,
		}
	}
	var servers []*http.Server
	errc := make(chan error, 3)
	serve := func(name string, srv *http.Server, ln net.Listener) {
		servers = append(servers, srv)
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve %s: %w", name, err)
			}
		}()
	}

	if httpLn != nil {
		var h http.Handler = http.HandlerFunc(g.serveHTTPPort)
		if g.certs != nil {
			h = g.certs.HTTPChallengeHandler(h)
		}
		srv := newServer(h)
		serve("http", srv, transport.Listener(httpLn, tc, nil))
		g.log.Info().Str("addr", httpLn.Addr().String()).Strs("hosts", cfg.SortedHosts()).Msg("serving http")
	}
	if httpsLn != nil {
		srv := newServer(http.HandlerFunc(g.serveHTTPSPort))
		srv.TLSConfig = g.certs.TLSConfig()
		srv.HTTP2 = &http.HTTP2Config{
			MaxReceiveBufferPerConnection: h2ConnWindow,
			MaxReceiveBufferPerStream:     h2StreamWindow,
			MaxReadFrameSize:              h2MaxFrame,
		}
		// Plain HTTP sent here is answered by net/http itself with
		// "400 Client sent an HTTP request to an HTTPS server".
		// Every connection is a *tls.Conn, so net/http runs the
		// handshake (bounded by ReadHeaderTimeout), sets r.TLS and hands
		// "h2" connections to HTTP/2. A config of its own: net/http edits
		// srv.TLSConfig when serving starts, while handshakes may already
		// be running.
		tlsLn := transport.Listener(httpsLn, tc, g.certs.TLSConfig())
		serve("https", srv, tlsLn)
		g.log.Info().Str("addr", httpsLn.Addr().String()).Msg("serving https")
		g.certs.Start()
	}
	if adminLn != nil {
		admin := &http.Server{Handler: g.AdminHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: errorLog}
		serve("admin", admin, adminLn)
		g.log.Info().Str("addr", adminLn.Addr().String()).Msg("serving admin: /metrics /healthz /readyz /gc/report")
	}
	g.mu.Lock()
	g.running = true
	g.mu.Unlock()
	g.ready.Store(true)
	gcCtx, stopGC := context.WithCancel(ctx)
	if sched := g.startCleanup(gcCtx, cfg); sched != nil {
		// a run in progress stops between steps
		defer func() { stopGC(); sched.Wait() }()
	}
	defer stopGC()

	var runErr error
	select {
	case runErr = <-errc:
	case <-ctx.Done():
	}
	g.ready.Store(false)
	g.log.Info().Msg("shutting down: draining in-flight requests")
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	shutdownErrs := make([]error, len(servers))
	for i, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			shutdownErrs[i] = srv.Shutdown(sctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(shutdownErrs...); err != nil && runErr == nil {
		runErr = fmt.Errorf("shutdown: %w", err)
	}
	g.sites.Load().close()
	g.hooks.Load().Close()
	return runErr
}

// serveHTTPPort answers on [listen] http (after ACME HTTP-01 challenges):
// sites with tls = "off" are served, every TLS site is redirected to https
// with 308 (a PUT stays a PUT), unknown hosts get 404.
func (g *Gateway) serveHTTPPort(w http.ResponseWriter, r *http.Request) {
	s := g.sites.Load().lookup(r.Host)
	if s == nil || s.site.cfg.TLS == "off" {
		g.ServeHTTP(w, r)
		return
	}
	host := hostName(r.Host)
	if strings.Contains(host, ":") { // IPv6 literal
		host = "[" + host + "]"
	}
	target := "https://" + host + g.httpsPort + r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	h := w.Header()
	if isV2(r.URL.Path) {
		backend.SetAPIVersion(h)
	}
	h.Set("Location", target)
	w.WriteHeader(http.StatusPermanentRedirect)
}

// serveHTTPSPort answers on [listen] https. The Host header must name the
// site the TLS handshake was for (SNI); a request for another host on this
// connection gets 421 so the client retries on a connection of its own.
func (g *Gateway) serveHTTPSPort(w http.ResponseWriter, r *http.Request) {
	if r.TLS != nil && r.TLS.ServerName != "" && r.Host != "" && hostName(r.Host) != acme.NormalizeHost(r.TLS.ServerName) {
		msg := fmt.Sprintf("host %q does not match the TLS server name %q", hostName(r.Host), r.TLS.ServerName)
		backend.WriteError(w, r, backend.Errorf(http.StatusMisdirectedRequest, backend.CodeUnsupported, "%s", msg))
		return
	}
	g.ServeHTTP(w, r)
}

func isV2(p string) bool { return p == "/v2" || strings.HasPrefix(p, "/v2/") }

// debugWriter sends net/http's own error lines (TLS handshake failures
// from scanners, clients that hang up) to the log at debug level.
type debugWriter struct{ log *zerolog.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debug().Str("component", "http").Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
