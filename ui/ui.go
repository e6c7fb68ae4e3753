// Package ui is wharf's web UI for people: a server-rendered view of one
// registry or cache site (repositories, tags, images, referrers, what a
// mirror holds and when it will be evicted) with the same logins and
// policy as the API, and deletes for users who may delete. Pages are
// html/template with embedded CSS and one small script (a copy button);
// everything works with JavaScript off. Data comes straight from the
// site's store, never through the HTTP API.
//
// The gateway mounts it on every registry and cache site whose `ui` is not
// false: every path outside /v2/ goes here (Serve).
package ui

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/auth"
	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/policy"
)

// Kinds of site the UI shows.
const (
	KindRegistry = "registry"
	KindCache    = "cache"
)

// Authenticator checks logins; *auth.Service is one. Login is the path
// every password takes (throttle first, then the password), so the form is
// throttled exactly like the API.
type Authenticator interface {
	// Login decides one attempt of user from the client at addr.
	Login(ctx context.Context, addr, user string, password []byte) auth.LoginResult
	// HasUser reports whether user still exists (a session of a removed
	// user is void).
	HasUser(user string) bool
}

// Config is what the UI of one site needs. The gateway fills it from the
// site's [[site]] table; the UI has no config keys of its own besides
// `ui = false`.
type Config struct {
	Host  string // the site's host name; "*" = whatever Host the client used
	Kind  string // KindRegistry or KindCache
	Store Store  // the site's store (read only)
	// Delete removes a tag or a manifest (by digest) the way the API's
	// DELETE does, for user (the logged-in viewer: the gateway names
	// them in the webhook event); nil = no deletes on this site.
	Delete func(ctx context.Context, user, repo, ref string) error
	// Upstream, Upstreams and MaxAge describe a cache site: its default
	// upstream, further upstreams by registry name (repositories
	// "<name>/..." come from there) and its eviction age.
	Upstream  string
	Upstreams map[string]string
	MaxAge    time.Duration

	// Auth checks logins; nil = the site has no logins: every viewer sees
	// everything and the UI is read-only (no session, so no CSRF token to
	// bind a delete to).
	Auth          Authenticator
	Policy        *policy.Policy // nil = no [[policy]]: logged-in users may do everything
	AnonymousPull bool           // the site's anonymous = "pull"
	// Key signs session cookies and CSRF tokens (LoadKey); required with Auth.
	Key []byte
	// SessionTTL is how long a login lasts; default 12h.
	SessionTTL time.Duration
	// PageSize is how many repositories or tags one page lists; default 50.
	PageSize int
	Now      func() time.Time
	Log      zerolog.Logger
}

// UI serves one site's pages. It is an http.Handler.
type UI struct {
	cfg  Config
	pol  *policy.Policy
	b    *browser
	sess *sessions
	log  zerolog.Logger

	// names caches the store's list of repositories: on the local file
	// system listing walks one directory per repository (10,000
	// repositories: 100-300 ms on a loaded 2-core machine), while
	// everything else a page shows is read fresh. After ListTTL the next
	// page still gets the old list at once and a listing runs in the
	// background, so only the first page after a start waits for one.
	namesMu    sync.Mutex
	names      []string
	namesAt    time.Time
	refreshing bool
}

// ListTTL is how long the list of repository names is reused before it is
// listed again (in the background).
const ListTTL = 5 * time.Second

// repoNames returns the store's repositories (see UI.names).
func (u *UI) repoNames(ctx context.Context) ([]string, error) {
	u.namesMu.Lock()
	if u.names == nil {
		defer u.namesMu.Unlock() // the first listing: everyone waits for it
		names, err := u.cfg.Store.ListRepos(ctx)
		if err != nil {
			return nil, err
		}
		u.names, u.namesAt = append([]string{}, names...), time.Now()
		return u.names, nil
	}
	names := u.names
	if time.Since(u.namesAt) >= ListTTL && !u.refreshing {
		u.refreshing = true
		go u.refreshNames()
	}
	u.namesMu.Unlock()
	return names, nil
}

// refreshNames lists the repositories again; on an error the old list
// stays and the next page tries again.
func (u *UI) refreshNames() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	names, err := u.cfg.Store.ListRepos(ctx)
	u.namesMu.Lock()
	defer u.namesMu.Unlock()
	u.refreshing = false
	if err != nil {
		u.log.Warn().Err(err).Msg("ui: listing repositories failed; showing the previous list")
		return
	}
	u.names, u.namesAt = append([]string{}, names...), time.Now()
}

// DefaultSessionTTL is how long a login lasts.
const DefaultSessionTTL = 12 * time.Hour

// New checks cfg and builds the UI.
func New(cfg Config) (*UI, error) {
	if cfg.Store == nil {
		return nil, errors.New("ui: no store")
	}
	if cfg.Auth != nil && len(cfg.Key) < 32 {
		return nil, errors.New("ui: a session key of at least 32 bytes is required with logins")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 50
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Kind == "" {
		cfg.Kind = KindRegistry
	}
	pol := cfg.Policy
	if pol == nil {
		pol, _ = policy.New(nil, nil) // no rules is always valid
	}
	return &UI{
		cfg: cfg, pol: pol, log: cfg.Log,
		b:    newBrowser(cfg.Store, 4096),
		sess: &sessions{key: cfg.Key, host: cfg.Host, ttl: cfg.SessionTTL, now: cfg.Now},
	}, nil
}

// csp is the Content-Security-Policy of every answer: only our own
// stylesheet and script, no inline code, no framing, forms only to us.
const csp = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func secureHeaders(h http.Header) {
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

// ServeHTTP routes a UI request.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.Serve(w, r)
}

// Serve routes a UI request and returns the logged-in viewer it was
// served to ("" = anonymous), so that the gateway's access log names the
// UI's user as it does the API's.
func (u *UI) Serve(w http.ResponseWriter, r *http.Request) string {
	secureHeaders(w.Header())
	p := r.URL.Path
	if strings.HasPrefix(p, staticPrefix) {
		serveStatic(w, r, strings.TrimPrefix(p, staticPrefix))
		return ""
	}
	w.Header().Set("Cache-Control", "no-store")
	v := u.viewer(r)
	u.page(w, r, p, v)
	return v.User
}

// page answers a request for page p to viewer v.
func (u *UI) page(w http.ResponseWriter, r *http.Request, p string, v viewer) {
	if r.Method == http.MethodPost && !sameOrigin(r) {
		u.fail(w, r, v, http.StatusForbidden, "This form was sent from another site.")
		return
	}
	rt, known := u.route(p)
	h := rt.post
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		h = rt.get
	} else if r.Method != http.MethodPost {
		h = nil
	}
	switch {
	case h != nil:
		h(w, r, v)
	case known:
		w.Header().Set("Allow", "GET, HEAD, POST")
		u.fail(w, r, v, http.StatusMethodNotAllowed, "This page does not take "+r.Method+" requests.")
	default:
		u.fail(w, r, v, http.StatusNotFound, "There is no page here.")
	}
}

// page handlers by method; nil = that method is not taken.
type route struct {
	get, post func(http.ResponseWriter, *http.Request, viewer)
}

// route finds the handlers of a path, and whether the path is a page.
func (u *UI) route(p string) (route, bool) {
	switch {
	case p == "/":
		return route{get: u.repos}, true
	case strings.HasPrefix(p, "/r/"):
		return route{get: func(w http.ResponseWriter, r *http.Request, v viewer) {
			u.repoOrImage(w, r, v, strings.TrimPrefix(p, "/r/"))
		}}, true
	case p == "/login":
		return route{get: func(w http.ResponseWriter, r *http.Request, v viewer) {
			u.loginForm(w, r, v, http.StatusOK, "")
		}, post: u.login}, true
	case p == "/logout":
		return route{post: u.logout}, true
	case p == "/-/delete":
		return route{get: u.confirmDelete, post: u.doDelete}, true
	}
	return route{}, false
}

// sameOrigin rejects cross-site form posts whose browser says where they
// come from (Origin, or Sec-Fetch-Site); the CSRF token covers the rest.
func sameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true // not sent by older browsers on same-origin posts
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return strings.EqualFold(o, scheme+"://"+r.Host)
}

// viewer is who looks at a page.
type viewer struct {
	User   string // "" = anonymous
	cookie string // the session cookie's value, for CSRF tokens
}

// viewer reads the session cookie; a bad, expired or orphaned one counts as
// anonymous.
func (u *UI) viewer(r *http.Request) viewer {
	if u.cfg.Auth == nil {
		return viewer{}
	}
	c, err := r.Cookie(CookieName)
	if err != nil {
		return viewer{}
	}
	user, ok := u.sess.check(c.Value)
	if !ok || !u.cfg.Auth.HasUser(user) {
		return viewer{}
	}
	return viewer{User: user, cookie: c.Value}
}

// service is the host name the policy sees for this request.
func (u *UI) service(r *http.Request) string {
	if u.cfg.Host != "*" && u.cfg.Host != "" {
		return u.cfg.Host
	}
	h := r.Host
	if hp, _, err := net.SplitHostPort(h); err == nil {
		h = hp
	}
	return strings.ToLower(h)
}

// allowed is what v may do to repo, exactly as the API's auth.Guard
// decides it: the policy, plus pull for everyone on anonymous = "pull"
// sites; without logins, everything.
func (u *UI) allowed(r *http.Request, v viewer, repo string) []backend.Action {
	if u.cfg.Auth == nil {
		return []backend.Action{backend.ActionPull}
	}
	acts := u.pol.Allowed(u.service(r), repo, v.User)
	if u.cfg.AnonymousPull && !slices.Contains(acts, backend.ActionPull) {
		acts = append(acts, backend.ActionPull)
	}
	return acts
}

// canSee: a repository the viewer may not pull does not exist for them.
func (u *UI) canSee(r *http.Request, v viewer, repo string) bool {
	return slices.Contains(u.allowed(r, v, repo), backend.ActionPull)
}

// upstreamOf is where a cache site's repository comes from.
func (u *UI) upstreamOf(repo string) string {
	best, url := 0, u.cfg.Upstream
	for name, up := range u.cfg.Upstreams {
		if strings.HasPrefix(repo, name+"/") && len(name) > best {
			best, url = len(name), up
		}
	}
	return url
}

// canDelete: deletes need the site to allow them, a logged-in user (the
// CSRF token is bound to the session) and the policy's delete.
func (u *UI) canDelete(r *http.Request, v viewer, repo string) bool {
	return u.cfg.Delete != nil && v.User != "" && slices.Contains(u.allowed(r, v, repo), backend.ActionDelete)
}
