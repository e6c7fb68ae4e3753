package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/policy"
)

// TokenPath is where every site serves its token endpoint. It lies under
// /v2/ so whatever routes the API to the site routes it too, and no
// repository path can collide with it.
const TokenPath = "/v2/token"

// Limits on what a client may send: Authorization headers, user names
// (they key the throttle's table), and scopes in one token request.
const (
	MaxAuthHeader = 16 << 10
	MaxUserLen    = 256
	MaxScopes     = 100
)

// Site is what the auth middleware needs to know about one [[site]].
type Site struct {
	Host      string         // the site's host name: the token service name and audience
	Anonymous Anonymous      // AnonymousPull: anonymous callers may pull everything; "" = nothing
	Scheme    Scheme         // SchemeToken (default) or SchemeBasic
	Policy    *policy.Policy // nil = no [[policy]]: logged-in users may do everything
}

// Identity is who a request came from, for the access log. The gateway
// creates one per request (NewIdentity) before the auth middleware runs and
// reads it after the handler returns.
type Identity struct {
	User string // "" = anonymous (or not authenticated)
}

type identityKey struct{}

// NewIdentity returns ctx carrying a new, empty Identity.
func NewIdentity(ctx context.Context) (context.Context, *Identity) {
	id := &Identity{}
	return context.WithValue(ctx, identityKey{}, id), id
}

// IdentityFrom returns the Identity stored by NewIdentity, or nil.
func IdentityFrom(ctx context.Context) *Identity {
	id, _ := ctx.Value(identityKey{}).(*Identity)
	return id
}

type handler struct {
	s         *Service
	site      Site
	pol       *policy.Policy
	anonPull  bool
	next      http.Handler
	plainWarn sync.Once
}

// Handler returns the auth middleware of one site. It answers TokenPath
// itself, authenticates /v2/ requests (Bearer tokens, or Basic credentials
// checked through the cache), applies the policy to the request's route
// (backend.RouteFrom, parsed here when the gateway has not) and passes
// allowed requests to next with the route (MountFrom cleared when the
// caller may not pull from there) and, for the catalog, a repository
// filter. Other paths go to next untouched.
func (s *Service) Handler(site Site, next http.Handler) http.Handler {
	pol := site.Policy
	if pol == nil {
		pol, _ = policy.New(nil, nil) // no rules is always valid
	}
	if site.Scheme == "" {
		site.Scheme = SchemeToken
	}
	return &handler{s: s, site: site, pol: pol, anonPull: site.Anonymous == "pull", next: next}
}

// service is the site's name as the policy and tokens see it: its host,
// or for the catch-all site ("*") the host the client asked for.
func (h *handler) service(r *http.Request) string {
	if h.site.Host != "*" && h.site.Host != "" {
		return h.site.Host
	}
	host := r.Host
	if hp, _, err := net.SplitHostPort(host); err == nil {
		host = hp
	}
	return strings.ToLower(host)
}

// allowed is what user ("" = anonymous) may do to repo on the site host.
func (h *handler) allowed(host, repo, user string) []backend.Action {
	acts := h.pol.Allowed(host, repo, user)
	if h.anonPull && !slices.Contains(acts, backend.ActionPull) {
		acts = append([]backend.Action{backend.ActionPull}, acts...)
	}
	return acts
}

func (h *handler) can(host, repo, user string, act backend.Action) bool {
	return slices.Contains(h.allowed(host, repo, user), act)
}

// caller is the outcome of authentication.
type caller struct {
	user   string
	claims *Claims // set for Bearer
	none   bool    // no Authorization header at all
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == TokenPath {
		h.warnPlain(r)
		h.serveToken(w, r)
		return
	}
	if p != "/v2" && !strings.HasPrefix(p, "/v2/") {
		h.next.ServeHTTP(w, r)
		return
	}
	ctx := r.Context()
	rt := backend.RouteFrom(ctx)
	if rt == nil {
		var perr *backend.Error
		rt, perr = backend.ParseRoute(r.Method, p, r.URL.Query().Get)
		if perr != nil {
			backend.WriteError(w, r, perr)
			return
		}
		ctx = backend.WithRoute(ctx, rt)
	}
	host := h.service(r)
	c, ok := h.authenticate(w, r, host)
	if !ok {
		return
	}
	if c.user != "" {
		h.warnPlain(r)
		if id := IdentityFrom(ctx); id != nil {
			id.User = c.user
		}
	}

	switch rt.Kind {
	case backend.KindPing:
		if c.none {
			h.challenge(w, r, "", "", "authentication required")
			return
		}
	case backend.KindCatalog:
		if c.none && !h.anonPull {
			h.challenge(w, r, "registry:catalog:*", "", "authentication required")
			return
		}
		user := c.user
		ctx = backend.WithRepoFilter(ctx, func(repo string) bool { return h.can(host, repo, user, backend.ActionPull) })
	default:
		act := rt.Action
		var granted bool
		if c.claims != nil {
			granted = c.claims.grants(rt.Repo, act)
		} else {
			granted = h.can(host, rt.Repo, c.user, act)
		}
		if !granted {
			scope := "repository:" + rt.Repo + ":" + scopeActions(act)
			switch {
			case c.user == "":
				h.challenge(w, r, scope, errorParam(c), "authentication required")
			case c.claims != nil && h.can(host, rt.Repo, c.user, act):
				// the policy allows it; the token was asked for less
				h.challenge(w, r, scope, "insufficient_scope", "token does not cover this request")
			case r.Method == http.MethodHead && rt.Kind == backend.KindBlob:
				// A HEAD answer has no body to carry DENIED, and
				// containers/image (podman, skopeo) stops a push at a
				// bodiless 403 with "403 (Forbidden)". Saying the blob is
				// not there reveals nothing to a caller who may not pull,
				// and the upload that follows gets a 403 DENIED that every
				// client shows as "denied".
				backend.WriteError(w, r, backend.Errorf(http.StatusNotFound, backend.CodeBlobUnknown, "blob unknown"))
			default:
				backend.WriteError(w, r, backend.Errorf(http.StatusForbidden, backend.CodeDenied,
					"requested access to the resource is denied"))
			}
			return
		}
		if rt.MountFrom != "" {
			may := c.claims != nil && c.claims.grants(rt.MountFrom, backend.ActionPull) ||
				h.can(host, rt.MountFrom, c.user, backend.ActionPull)
			if !may {
				cp := *rt
				cp.MountFrom = ""
				ctx = backend.WithRoute(ctx, &cp)
			}
		}
	}
	h.next.ServeHTTP(w, r.WithContext(ctx))
}

func errorParam(c caller) string {
	if c.claims != nil {
		return "insufficient_scope"
	}
	return ""
}

// scopeActions is the scope a client should ask for to do act.
func scopeActions(act backend.Action) string {
	switch act {
	case backend.ActionPush:
		return "pull,push"
	case backend.ActionDelete:
		return "delete"
	}
	return "pull"
}

// authenticate reads the Authorization header. It writes the response
// itself (401, 429) and returns false when the request must stop here.
func (h *handler) authenticate(w http.ResponseWriter, r *http.Request, host string) (caller, bool) {
	hdr := r.Header.Get("Authorization")
	if hdr == "" {
		return caller{none: true}, true
	}
	scheme, rest, _ := strings.Cut(hdr, " ")
	rest = strings.TrimSpace(rest)
	switch {
	case len(hdr) > MaxAuthHeader:
		h.challenge(w, r, "", "invalid_request", "authorization header too long")
		return caller{}, false
	case strings.EqualFold(scheme, "Bearer"):
		claims, err := h.s.verifyToken(rest, host)
		if err != nil {
			h.s.log.Debug().Str("addr", clientAddr(r)).Str("reason", err.Error()).Msg("bearer token refused")
			h.challenge(w, r, "", "invalid_token", err.Error())
			return caller{}, false
		}
		if claims.Subject != "" && !h.s.v.hasUser(claims.Subject) {
			// removed from the htpasswd file since the token was issued
			h.challenge(w, r, "", "invalid_token", "unknown user")
			return caller{}, false
		}
		return caller{user: claims.Subject, claims: claims}, true
	case strings.EqualFold(scheme, "Basic"):
		user, ok := h.s.checkBasic(w, r, rest, func(msg string) { h.challenge(w, r, "", "", msg) })
		return caller{user: user}, ok
	}
	h.challenge(w, r, "", "invalid_request", "unsupported authorization scheme")
	return caller{}, false
}

// ParseBasic decodes the value of a Basic Authorization header (without
// "Basic "). It refuses bad base64, a missing colon and an empty user.
func ParseBasic(v string) (user string, pw []byte, err error) {
	if len(v) > MaxAuthHeader {
		return "", nil, errors.New("credentials too long")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
	if err != nil {
		return "", nil, errors.New("credentials are not base64")
	}
	u, p, ok := strings.Cut(string(raw), ":")
	if !ok {
		return "", nil, errors.New("credentials have no ':' between user and password")
	}
	if u == "" {
		return "", nil, errors.New("empty user name")
	}
	if len(u) > MaxUserLen {
		return "", nil, errors.New("user name too long")
	}
	return u, []byte(p), nil
}

// checkBasic verifies Basic credentials with throttling. On failure it
// writes 429 itself or calls unauthorized, and returns false.
func (s *Service) checkBasic(w http.ResponseWriter, r *http.Request, v string, unauthorized func(msg string)) (string, bool) {
	user, pw, err := ParseBasic(v)
	if err != nil {
		if res, blocked := s.addrBlocked(r.RemoteAddr); blocked {
			tooMany(w, r, res) // a blocked address gets 429 whatever it sends
			return "", false
		}
		unauthorized(err.Error())
		return "", false
	}
	return s.checkPassword(w, r, user, pw, unauthorized)
}

func (s *Service) checkPassword(w http.ResponseWriter, r *http.Request, user string, pw []byte, unauthorized func(msg string)) (string, bool) {
	res := s.Login(r.Context(), r.RemoteAddr, user, pw)
	switch {
	case res.RetryAfter > 0:
		tooMany(w, r, res)
		return "", false
	case !res.OK:
		unauthorized(res.Message)
		return "", false
	}
	return user, true
}

func tooMany(w http.ResponseWriter, r *http.Request, res LoginResult) {
	w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(res.RetryAfter)))
	backend.WriteError(w, r, backend.Errorf(http.StatusTooManyRequests, backend.CodeTooManyRequests, "%s", res.Message))
}

// clientAddr is the client's IP address (the gateway terminates TLS, so
// the connection's peer is the client).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// challenge writes a 401 with the site's challenge. scope and errParam are
// optional parts of a Bearer challenge.
func (h *handler) challenge(w http.ResponseWriter, r *http.Request, scope, errParam, msg string) {
	if h.site.Scheme == SchemeBasic {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q, charset=\"UTF-8\"", h.s.cfg.Realm))
	} else {
		v := fmt.Sprintf("Bearer realm=%q,service=%q", h.realmURL(r), h.service(r))
		if scope != "" {
			v += fmt.Sprintf(",scope=%q", scope)
		}
		if errParam != "" {
			v += fmt.Sprintf(",error=%q", errParam)
		}
		w.Header().Set("WWW-Authenticate", v)
	}
	backend.WriteError(w, r, backend.Errorf(http.StatusUnauthorized, backend.CodeUnauthorized, "%s", msg))
}

// realmURL is the token endpoint as the client sees this site.
func (h *handler) realmURL(r *http.Request) string {
	scheme := "https"
	if r.TLS == nil {
		scheme = "http"
	}
	host := r.Host
	if host == "" {
		host = h.service(r)
	}
	return (&url.URL{Scheme: scheme, Host: host, Path: TokenPath}).String()
}

func (h *handler) warnPlain(r *http.Request) {
	if r.TLS != nil {
		return
	}
	h.plainWarn.Do(func() {
		h.s.log.Warn().Str("host", h.site.Host).Msg("authentication over plain HTTP: passwords and tokens cross the network unencrypted; use TLS outside tests and trusted networks")
	})
}

// tokenResponse is the token endpoint's answer (both the Docker token
// spec's "token" and OAuth2's "access_token").
type tokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	IssuedAt    string `json:"issued_at"`
}

// serveToken is the token endpoint: GET with optional Basic credentials
// and scope/service/account parameters, or the OAuth2 POST form with
// grant_type=password.
func (h *handler) serveToken(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
	unauthorized := func(msg string) {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q, charset=\"UTF-8\"", h.s.cfg.Realm))
		backend.WriteError(w, r, backend.Errorf(http.StatusUnauthorized, backend.CodeUnauthorized, "%s", msg))
	}
	var (
		user    string
		scopes  []string
		service string
	)
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		q := r.URL.Query()
		scopes, service = q["scope"], q.Get("service")
		if hdr := r.Header.Get("Authorization"); hdr != "" {
			scheme, rest, _ := strings.Cut(hdr, " ")
			if !strings.EqualFold(scheme, "Basic") {
				unauthorized("the token endpoint takes Basic credentials or none")
				return
			}
			var ok bool
			if user, ok = h.s.checkBasic(w, r, rest, unauthorized); !ok {
				return
			}
		}
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			oauthError(w, http.StatusBadRequest, "invalid_request", "cannot parse the form")
			return
		}
		scopes, service = r.PostForm["scope"], r.PostForm.Get("service")
		switch r.PostForm.Get("grant_type") {
		case "password":
			u := r.PostForm.Get("username")
			if u == "" {
				oauthError(w, http.StatusBadRequest, "invalid_request", "username missing")
				return
			}
			var ok bool
			if user, ok = h.s.checkPassword(w, r, u, []byte(r.PostForm.Get("password")), func(msg string) {
				oauthError(w, http.StatusUnauthorized, "invalid_grant", msg)
			}); !ok {
				return
			}
		case "refresh_token":
			// wharf never hands out refresh tokens, so none can be valid.
			oauthError(w, http.StatusBadRequest, "invalid_grant", "unknown refresh token; log in again")
			return
		default:
			oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "use grant_type=password or GET with Basic credentials")
			return
		}
	default:
		w.Header().Set("Allow", "GET, POST")
		backend.WriteError(w, r, backend.Errorf(http.StatusMethodNotAllowed, backend.CodeUnsupported, "use GET or POST"))
		return
	}
	host := h.service(r)
	if service != "" && !strings.EqualFold(service, host) {
		backend.WriteError(w, r, backend.Errorf(http.StatusBadRequest, backend.CodeUnsupported,
			"this token endpoint serves %q, not %q", host, clip(service)))
		return
	}
	sc := ParseScopes(scopes)
	if len(sc) > MaxScopes {
		backend.WriteError(w, r, backend.Errorf(http.StatusBadRequest, backend.CodeUnsupported,
			"more than %d scopes in one token request", MaxScopes))
		return
	}
	now := h.s.now()
	claims := &Claims{
		Issuer:    h.s.cfg.Realm,
		Subject:   user,
		Audience:  host,
		IssuedAt:  now.Unix(),
		NotBefore: now.Unix(),
		Expiry:    now.Add(h.s.cfg.TokenTTL).Unix(),
		ID:        randomID(),
		Access:    h.grant(host, sc, user),
	}
	if id := IdentityFrom(r.Context()); id != nil {
		id.User = user
	}
	tok, err := h.s.sig.sign(claims)
	if err != nil {
		backend.WriteError(w, r, backend.Errorf(http.StatusInternalServerError, backend.CodeUnknown, "cannot sign token"))
		return
	}
	h.s.issued.Add(1)
	h.s.log.Debug().Str("user", user).Str("addr", clientAddr(r)).Int("scopes", len(claims.Access)).Msg("token issued")
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(tokenResponse{
		Token: tok, AccessToken: tok,
		ExpiresIn: int(h.s.cfg.TokenTTL / time.Second),
		IssuedAt:  now.UTC().Format(time.RFC3339),
	})
}

// grant intersects the requested scopes with what user may do.
func (h *handler) grant(host string, scopes []Scope, user string) []Access {
	out := []Access{}
	for _, sc := range scopes {
		switch {
		case sc.Type == "repository" && backend.ValidateName(sc.Name) == nil:
			may := h.allowed(host, sc.Name, user)
			granted := []string{}
			for _, a := range may {
				if slices.Contains(sc.Actions, string(a)) || slices.Contains(sc.Actions, "*") {
					granted = append(granted, string(a))
				}
			}
			out = append(out, Access{Type: sc.Type, Name: sc.Name, Actions: granted})
		case sc.Type == "registry" && sc.Name == "catalog":
			// the catalog is filtered per caller; the scope only lets it through
			out = append(out, Access{Type: sc.Type, Name: sc.Name, Actions: []string{"*"}})
		}
	}
	return out
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
