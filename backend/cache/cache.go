// Package cache is the "cache" backend: a pull-through cache (mirror) of
// one upstream registry that speaks the distribution API (Docker Hub,
// ghcr.io, quay.io, another registry:2 or wharf).
//
// Manifests and blobs are kept in the same crash-safe content-addressed
// store as the embedded registry's (backend/storage/localfs) and served
// byte for byte as the upstream sent them. See README.md for the rules on
// freshness, errors and what is stored.
package cache

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/localfs"
)

// Defaults for the Options left at zero.
const (
	DefaultTTL             = 168 * time.Hour
	DefaultUpstreamTimeout = 30 * time.Second
	DefaultIdleTimeout     = 60 * time.Second
	// defaultSpoolLimit: blobs up to this size (as the upstream announces
	// it) are stored and verified before the first byte goes to the
	// client, so wrong content gets a clean 502. Bigger ones stream.
	defaultSpoolLimit = 4 << 20
)

// Options configures a Cache.
type Options struct {
	// Upstream is the registry's base URL, "https://registry-1.docker.io".
	// docker.io and index.docker.io are reached at registry-1.docker.io.
	Upstream string
	// TTL is how long a tag->digest answer is served without asking the
	// upstream again; default 168h.
	TTL time.Duration
	// Username and Password are the upstream credentials; empty means
	// anonymous.
	Username, Password string
	// Root is the directory holding the cached data (created if missing).
	Root string
	// Logger receives stale answers, upstream errors and bad upstream
	// content; zero value = quiet.
	Logger zerolog.Logger
	// UpstreamTimeout bounds each small upstream request (manifests, tag
	// lists, HEADs, tokens); default 30s. Past it the cached answer is
	// served if there is one.
	UpstreamTimeout time.Duration
	// IdleTimeout ends a blob download from the upstream that moves no
	// byte for this long; default 60s. There is no total time limit.
	IdleTimeout time.Duration
	// Transport replaces the HTTP transport to the upstream (custom TLS
	// roots, tests). Nil: a transport with sane dial/TLS/header timeouts.
	Transport http.RoundTripper
	// SyncBlobs fsyncs each blob before it becomes visible.
	SyncBlobs bool
	// MaxAge is the site's max_age: what is not used for this long is
	// evicted by Evict (`wharf gc`). The cache itself only uses it to
	// choose how often a use is written down (max_age/24, at most hourly);
	// zero means no eviction, and uses are written down hourly.
	MaxAge time.Duration
}

// Cache is a pull-through cache of one upstream. It is an http.Handler for
// /v2/ requests.
type Cache struct {
	up         *upstream
	store      storage.Store
	log        zerolog.Logger
	ttl        time.Duration
	upTimeout  time.Duration
	idle       time.Duration
	spoolLimit int64
	now        func() time.Time
	touchEvery time.Duration // see usedBlob
	tr         http.RoundTripper

	manifests flightGroup[*manifest]  // shared manifest GETs
	heads     flightGroup[*tagRecord] // shared manifest HEADs

	root       string // absolute store root (for following a download's data file)
	blobsMu    sync.Mutex
	blobs      map[string]*blobFlight // downloads in progress by repo@digest
	blobJoined func(key string)       // tests: a request follows another's download
}

// New opens the store under o.Root and returns the cache. o is taken as
// valid: Config.Validate is where the rules for the [site.cache] keys
// live (the gateway runs it for `wharf check` and `wharf serve` alike);
// zero durations get their defaults here. ctx is not kept; nothing talks
// to the upstream before the first request.
func New(ctx context.Context, o Options) (*Cache, error) {
	base, err := parseUpstream(o.Upstream)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.UpstreamTimeout <= 0 {
		o.UpstreamTimeout = DefaultUpstreamTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	// Downloads are never resumed: a session left by a crash is garbage
	// after an hour (an active one is written to all the time).
	st, err := localfs.New(localfs.Options{Root: o.Root, UploadTTL: time.Hour, SyncBlobs: o.SyncBlobs, Logger: o.Logger})
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	root, err := filepath.Abs(o.Root)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("cache: root %q: %w", o.Root, err)
	}
	tr := o.Transport
	if tr == nil {
		tr = newTransport()
	}
	return &Cache{
		up:         newUpstream(base, o.Username, o.Password, tr),
		store:      st,
		log:        o.Logger,
		ttl:        o.TTL,
		upTimeout:  o.UpstreamTimeout,
		idle:       o.IdleTimeout,
		spoolLimit: defaultSpoolLimit,
		now:        time.Now,
		touchEvery: touchInterval(o.MaxAge),
		tr:         tr,
		root:       root,
		blobs:      map[string]*blobFlight{},
	}, nil
}

// Store is the cache's storage, for readers inside the process (the web
// UI shows what is cached straight from it).
func (c *Cache) Store() storage.Store { return c.store }

// Close stops the store's background work and drops idle upstream
// connections.
func (c *Cache) Close() error {
	if t, ok := c.tr.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
	return c.store.Close()
}

// ServeHTTP answers one /v2/ request. It uses the Route the gateway parsed
// (backend.RouteFrom) or parses the request itself.
func (c *Cache) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
	rt := backend.RouteFrom(req.Context())
	if rt == nil {
		var e *backend.Error
		rt, e = backend.ParseRoute(req.Method, req.URL.Path, req.URL.Query().Get)
		if e != nil {
			backend.WriteError(w, req, e)
			return
		}
	}
	if err := c.serve(w, req, rt); err != nil {
		c.fail(w, req, rt, err)
	}
}

func (c *Cache) serve(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return backend.Errorf(http.StatusMethodNotAllowed, backend.CodeUnsupported,
			"this site is a read-only mirror of %s: %s is not supported (push to the upstream or to a registry site)", c.up.base.Host, req.Method)
	}
	switch rt.Kind {
	case backend.KindPing:
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		if req.Method == http.MethodGet {
			_, _ = w.Write([]byte("{}"))
		}
		return nil
	case backend.KindCatalog:
		return c.catalog(w, req)
	case backend.KindTags:
		return c.tagsList(w, req, rt)
	case backend.KindManifest:
		return c.getManifest(w, req, rt)
	case backend.KindBlob:
		return c.getBlob(w, req, rt)
	case backend.KindReferrers:
		return c.referrers(w, req, rt)
	}
	return backend.Errorf(http.StatusMethodNotAllowed, backend.CodeUnsupported,
		"this site is a read-only mirror of %s: uploads are not supported", c.up.base.Host)
}

// fail writes err as a distribution-spec error: upstream trouble becomes
// 502 (504 for timeouts, 429 passed on), storage trouble 507/500.
func (c *Cache) fail(w http.ResponseWriter, req *http.Request, rt *backend.Route, err error) {
	var be *backend.Error
	var ue *upstreamError
	switch {
	case errors.As(err, &be):
	case errors.As(err, &ue):
		status := http.StatusBadGateway
		code := backend.CodeUnknown
		switch {
		case ue.timeout():
			status = http.StatusGatewayTimeout
		case ue.status == http.StatusTooManyRequests:
			status, code = http.StatusTooManyRequests, backend.CodeTooManyRequests
		}
		be = backend.Errorf(status, code, "%s, and nothing usable is cached", ue.Error())
		c.log.Warn().Err(err).Str("repo", rt.Repo).Str("ref", rt.Reference).Msg("cache: upstream failed")
	case errors.Is(err, storage.ErrNoSpace):
		be = backend.Errorf(http.StatusInsufficientStorage, backend.CodeUnknown, "cache storage is full; nothing was stored")
		c.log.Error().Err(err).Str("repo", rt.Repo).Msg("cache: storage full")
	case errors.Is(err, context.Canceled):
		be = backend.Errorf(http.StatusBadRequest, backend.CodeUnknown, "request cancelled")
	default:
		c.log.Error().Err(err).Str("method", req.Method).Str("path", req.URL.Path).Msg("cache: internal error")
		be = backend.Errorf(http.StatusInternalServerError, backend.CodeUnknown, "internal error: %v", err)
	}
	backend.WriteError(w, req, be)
}

// upPath builds an upstream API path for repo (client's name).
func (c *Cache) upPath(repo, kind, ref string) string {
	return "/v2/" + c.up.repo(repo) + "/" + kind + "/" + ref
}

// smallCtx bounds a small upstream request by the upstream timeout.
func (c *Cache) smallCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.upTimeout)
}
