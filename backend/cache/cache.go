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
	"net/url"
	"strings"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"
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
	// Store is where the cached data lives (Config.OpenStore opens it);
	// the cache owns it and closes it on Close. Nil: a local file system
	// store below Root.
	Store storage.Store
	// Root is the directory holding the cached data (created if missing)
	// when Store is nil.
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
	// Upstreams is the table of further upstreams by registry name
	// ("docker.io", "ghcr.io"): a request with containerd's ?ns=<name>,
	// or whose repository starts with <name>/ (podman's mirror
	// location "host/ghcr.io"), goes to that upstream, and its records
	// live under "<name>/<repository>". Upstream may then be empty (no
	// default: a request naming no registry gets 404).
	Upstreams map[string]Upstream
	// MaxSize is the disk budget for content (max_size); 0 = none. The
	// cache evicts least recently used images whenever it is exceeded.
	MaxSize int64
	// Metrics receives the site's counters; nil = not counted.
	Metrics *Metrics
	// Site names the site in metrics (its host).
	Site string
}

// Cache is a pull-through cache of one upstream. It is an http.Handler for
// /v2/ requests.
type Cache struct {
	def        *upstream            // the default upstream; nil when only the table is set
	ups        map[string]*upstream // by NamespacePrefix(name)
	nsPrefix   map[string]string    // ns value (lower case) -> prefix
	names      string               // "docker.io, ghcr.io" for error messages
	desc       string               // what this site mirrors, for messages
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

	blobsMu    sync.Mutex
	blobs      map[string]*blobFlight // downloads in progress by repo@digest
	blobJoined func(key string)       // tests: a request follows another's download

	metrics *siteMetrics // nil: not counted
	maxSize int64        // max_size; 0 = no budget
	budget  *budget      // enforces maxSize; nil without one
}

// New opens the store under o.Root and returns the cache. o is taken as
// valid: Config.Validate is where the rules for the [site.cache] keys
// live (the gateway runs it for `wharf check` and `wharf serve` alike);
// zero durations get their defaults here. ctx is not kept; nothing talks
// to the upstream before the first request.
func New(ctx context.Context, o Options) (*Cache, error) {
	if o.Upstream == "" && len(o.Upstreams) == 0 {
		return nil, errors.New("cache: no upstream")
	}
	var base *url.URL
	if o.Upstream != "" {
		var err error
		if base, err = parseUpstream(o.Upstream); err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
	}
	if o.MaxSize < 0 {
		return nil, fmt.Errorf("cache: negative max_size %d", o.MaxSize)
	}
	tr := o.Transport
	if tr == nil {
		tr = newTransport()
	}
	c := &Cache{ups: map[string]*upstream{}, nsPrefix: map[string]string{}}
	var names, descs []string
	if base != nil {
		c.def = newUpstream(base, o.Username, o.Password, tr)
		c.def.name = ""
		descs = append(descs, c.def.base.Host)
	}
	for _, name := range sortedKeys(o.Upstreams) {
		u := o.Upstreams[name]
		if err := ValidateNamespace(name); err != nil {
			return nil, fmt.Errorf("cache: upstreams: %w", err)
		}
		b, err := parseUpstream(u.URL)
		if err != nil {
			return nil, fmt.Errorf("cache: upstreams.%s: %w", name, err)
		}
		if u.Password != "" && u.Username == "" {
			return nil, fmt.Errorf("cache: upstreams.%s: password without username", name)
		}
		p := NamespacePrefix(name)
		if _, dup := c.ups[p]; dup {
			return nil, fmt.Errorf("cache: upstreams.%s: a second registry name for prefix %q", name, p)
		}
		up := newUpstream(b, u.Username, u.Password, tr)
		up.name = name
		c.ups[p] = up
		c.nsPrefix[name] = p
		names = append(names, name)
		descs = append(descs, name)
	}
	c.names = strings.Join(names, ", ")
	c.desc = strings.Join(descs, ", ")
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.UpstreamTimeout <= 0 {
		o.UpstreamTimeout = DefaultUpstreamTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	st := o.Store
	if st == nil {
		var err error
		st, err = localfs.New(localfs.Options{Root: o.Root, UploadTTL: uploadTTL, SyncBlobs: o.SyncBlobs, Logger: o.Logger})
		if err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
	}
	c.store = st
	c.log = o.Logger
	c.ttl = o.TTL
	c.upTimeout = o.UpstreamTimeout
	c.idle = o.IdleTimeout
	c.spoolLimit = defaultSpoolLimit
	c.now = time.Now
	c.touchEvery = touchInterval(o.MaxAge, o.MaxSize > 0)
	c.tr = tr
	c.blobs = map[string]*blobFlight{}
	c.metrics = o.Metrics.site(o.Site)
	if c.def != nil {
		c.def.metrics = c.metrics
	}
	for _, u := range c.ups {
		u.metrics = c.metrics
	}
	c.maxSize = o.MaxSize
	c.startBudget()
	return c, nil
}

// ResolveRoute qualifies the route's repository with containerd's
// ?ns=<registry> (backend.RouteResolver): "library/alpine" with
// ns=docker.io becomes "docker.io/library/alpine", the name under which
// the policy, tokens, records and the catalog see it. A site without an
// upstream table ignores ns (one upstream; today's behaviour). An ns the
// table does not have is a 404 naming the configured ones: the cache is
// never an open proxy.
func (c *Cache) ResolveRoute(rt *backend.Route, query func(string) string) *backend.Error {
	if len(c.ups) == 0 || query == nil {
		return nil
	}
	ns := strings.ToLower(query("ns"))
	if ns == "" {
		return nil
	}
	p, ok := c.nsPrefix[ns]
	if !ok {
		return backend.Errorf(http.StatusNotFound, backend.CodeNameUnknown,
			"registry %q (ns) is not mirrored by this site; configured: %s", clip(ns), c.names)
	}
	if rt.Repo == "" { // ping, catalog
		return nil
	}
	q := p + "/" + rt.Repo
	if e := backend.ValidateName(q); e != nil {
		return e
	}
	rt.Namespace, rt.ClientRepo, rt.Repo = ns, rt.Repo, q
	return nil
}

// upstreamFor maps a repository as the cache keeps it to its upstream and
// the upstream's name for it: "ghcr.io/owner/app" -> ghcr.io's upstream,
// "owner/app"; a name without a configured registry prefix goes to the
// default upstream as it is (Docker Hub's "alpine" as "library/alpine").
func (c *Cache) upstreamFor(repo string) (*upstream, string, error) {
	if i := strings.IndexByte(repo, '/'); i > 0 && len(c.ups) > 0 {
		if u, ok := c.ups[repo[:i]]; ok {
			return u, u.repo(repo[i+1:]), nil
		}
	}
	if c.def == nil {
		return nil, "", backend.Errorf(http.StatusNotFound, backend.CodeNameUnknown,
			"repository %q names no mirrored registry: this site has no default upstream; use ?ns=<registry> or <registry>/<name> with one of: %s", clip(repo), c.names)
	}
	return c.def, c.def.repo(repo), nil
}

// Store is the cache's storage, for readers inside the process (the web
// UI shows what is cached straight from it).
func (c *Cache) Store() storage.Store { return c.store }

// Close stops the store's background work and drops idle upstream
// connections.
func (c *Cache) Close() error {
	c.stopBudget()
	if t, ok := c.tr.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
	return c.store.Close()
}

// ServeHTTP answers one /v2/ request on its own, with nothing in front of
// the cache (tests, tools): it parses and resolves the request and serves
// it with full access (backend.ServeStandalone). The gateway calls
// ServeRoute.
func (c *Cache) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	backend.ServeStandalone(c, w, req)
}

// ServeRoute answers one /v2/ request with the route the gateway parsed
// and resolved (ResolveRoute) and the caller's access (the catalog lists
// what a.Catalog keeps).
func (c *Cache) ServeRoute(w http.ResponseWriter, req *http.Request, rt *backend.Route, a backend.Access) {
	backend.SetAPIVersion(w.Header())
	if c.metrics == nil && c.budget == nil {
		if err := c.serve(w, req, rt, a); err != nil {
			c.fail(w, req, rt, err)
		}
		return
	}
	up := "default"
	if rt.Repo != "" {
		if u, _, err := c.upstreamFor(rt.Repo); err == nil {
			up = label(u)
		}
	}
	content := rt.Kind == backend.KindManifest || rt.Kind == backend.KindBlob
	if rt.Kind == backend.KindBlob {
		defer c.budget.read(digest.Digest(rt.Reference))()
	}
	cw := &countingWriter{ResponseWriter: w}
	o := &outcome{}
	req = req.WithContext(context.WithValue(req.Context(), outcomeKey{}, o))
	// deferred: a blob download cut off on purpose panics
	defer func() {
		c.metrics.served(up, cw.n)
		if !content || cw.status == 0 || cw.status >= 400 {
			return
		}
		if d := w.Header().Get("Docker-Content-Digest"); d != "" && rt.Kind == backend.KindManifest {
			c.budget.pinManifest(req.Context(), digest.Digest(d))
		}
		result := "hit"
		switch {
		case o.stale:
			result = "stale"
		case o.upstream:
			result = "miss"
		}
		c.metrics.request(up, rt.Kind, result)
	}()
	if err := c.serve(cw, req, rt, a); err != nil {
		c.fail(cw, req, rt, err)
	}
}

func (c *Cache) serve(w http.ResponseWriter, req *http.Request, rt *backend.Route, a backend.Access) error {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return backend.Errorf(http.StatusMethodNotAllowed, backend.CodeUnsupported,
			"this site is a read-only mirror of %s: %s is not supported (push to the upstream or to a registry site)", c.desc, req.Method)
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
		return c.catalog(w, req, a.Catalog)
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
		"this site is a read-only mirror of %s: uploads are not supported", c.desc)
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

// upReq names one upstream request for repo (as the cache keeps it):
// the upstream, the API path and the upstream's repository name.
func (c *Cache) upReq(repo, kind, ref string) (*upstream, string, string, error) {
	u, upRepo, err := c.upstreamFor(repo)
	if err != nil {
		return nil, "", "", err
	}
	return u, "/v2/" + upRepo + "/" + kind + "/" + ref, upRepo, nil
}

// smallCtx bounds a small upstream request by the upstream timeout.
func (c *Cache) smallCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.upTimeout)
}
