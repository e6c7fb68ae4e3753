package auth

import (
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

// Site is what a site's Guard needs to know about one [[site]].
type Site struct {
	Host      string         // the site's host name: the token service name and audience
	Anonymous Anonymous      // AnonymousPull: anonymous callers may pull everything; "" = nothing
	Scheme    Scheme         // SchemeToken (default) or SchemeBasic
	Policy    *policy.Policy // nil = no [[policy]]: logged-in users may do everything
}

// Guard is the auth of one site: it answers the token endpoint
// (ServeToken) and decides /v2/ requests (Decide). It writes nothing into
// the request or its context; the gateway passes what it returns on.
type Guard struct {
	s         *Service
	site      Site
	pol       *policy.Policy
	anonPull  bool
	plainWarn sync.Once
}

// Guard returns the auth of one site. The gateway calls ServeToken for
// TokenPath and Decide for every other /v2/ request, with the route it
// parsed; paths outside /v2/ are not the Guard's.
func (s *Service) Guard(site Site) *Guard {
	pol := site.Policy
	if pol == nil {
		pol, _ = policy.New(nil, nil) // no rules is always valid
	}
	if site.Scheme == "" {
		site.Scheme = SchemeToken
	}
	return &Guard{s: s, site: site, pol: pol, anonPull: site.Anonymous == "pull"}
}

// service is the site's name as the policy and tokens see it: its host,
// or for the catch-all site ("*") the host the client asked for.
func (h *Guard) service(r *http.Request) string {
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
func (h *Guard) allowed(host, repo, user string) []backend.Action {
	acts := h.pol.Allowed(host, repo, user)
	if h.anonPull && !slices.Contains(acts, backend.ActionPull) {
		acts = append([]backend.Action{backend.ActionPull}, acts...)
	}
	return acts
}

func (h *Guard) can(host, repo, user string, act backend.Action) bool {
	return slices.Contains(h.allowed(host, repo, user), act)
}

// caller is the outcome of authentication.
type caller struct {
	user   string
	claims *Claims // set for Bearer
	none   bool    // no Authorization header at all
}

// ServeToken answers the token endpoint (TokenPath). It returns the user
// a token was issued to ("" for anonymous callers and refusals), for the
// access log.
func (h *Guard) ServeToken(w http.ResponseWriter, r *http.Request) string {
	h.warnPlain(r)
	return h.serveToken(w, r)
}

// Decision is what auth decided about one /v2/ request (a request it
// refuses gets an error besides). It is computed in one place (Decide)
// from the parsed route and the request's credentials; nothing else reads
// credentials or the policy.
type Decision struct {
	// User is the logged-in user; "" = anonymous.
	User string
	// Granted are the actions the caller may do on the route's
	// repository (the token's for Bearer, the policy's for Basic and
	// anonymous callers); nil for ping and catalog.
	Granted []backend.Action
	// MayMount: the caller may pull from the route's mount source
	// (Route.MountFrom), so a cross-repository mount may read it.
	MayMount bool
	// Catalog keeps the repositories the caller may pull, for
	// /v2/_catalog; nil for other routes.
	Catalog func(repo string) bool
}

// Access is what the backend gets of the decision: whether a mount may
// read its source and the catalog filter (never the user).
func (d Decision) Access() backend.Access {
	return backend.Access{MayMount: d.MayMount, Catalog: d.Catalog}
}

// Decide authenticates r and applies the policy to rt, the route the
// gateway parsed from r. It writes nothing: a request that may not pass
// gets the error to answer with (401 with the site's challenge, 403, 404
// or 429, headers included); the Decision's User is set then too once the
// caller has logged in (the access log names who was refused).
func (h *Guard) Decide(r *http.Request, rt *backend.Route) (Decision, *backend.Error) {
	host := h.service(r)
	c, refused := h.authenticate(r, host)
	if refused != nil {
		return Decision{}, refused
	}
	d := Decision{User: c.user}
	if c.user != "" {
		h.warnPlain(r)
	}
	switch rt.Kind {
	case backend.KindPing:
		if c.none {
			return d, h.challenge(r, "", "", "authentication required")
		}
	case backend.KindCatalog:
		if c.none && !h.anonPull {
			return d, h.challenge(r, "registry:catalog:*", "", "authentication required")
		}
		d.Catalog = func(repo string) bool { return h.can(host, repo, c.user, backend.ActionPull) }
	default:
		d.Granted = h.granted(host, rt.Repo, c)
		if !slices.Contains(d.Granted, rt.Action) {
			return d, h.denied(r, rt, host, c)
		}
		if rt.MountFrom != "" {
			d.MayMount = c.claims != nil && c.claims.grants(rt.MountFrom, backend.ActionPull) ||
				h.can(host, rt.MountFrom, c.user, backend.ActionPull)
		}
	}
	return d, nil
}

// granted is what caller c may do to repo: what its token grants, or
// what the policy allows a Basic or anonymous caller.
func (h *Guard) granted(host, repo string, c caller) []backend.Action {
	if c.claims == nil {
		return h.allowed(host, repo, c.user)
	}
	var out []backend.Action
	for _, a := range []backend.Action{backend.ActionPull, backend.ActionPush, backend.ActionDelete} {
		if c.claims.grants(repo, a) {
			out = append(out, a)
		}
	}
	return out
}

// denied is the answer to a request for an action the caller lacks.
func (h *Guard) denied(r *http.Request, rt *backend.Route, host string, c caller) *backend.Error {
	act := rt.Action
	scope := "repository:" + rt.Repo + ":" + scopeActions(act)
	switch {
	case c.user == "":
		return h.challenge(r, scope, errorParam(c), "authentication required")
	case c.claims != nil && h.can(host, rt.Repo, c.user, act):
		// the policy allows it; the token was asked for less
		return h.challenge(r, scope, "insufficient_scope", "token does not cover this request")
	case r.Method == http.MethodHead && rt.Kind == backend.KindBlob:
		// A HEAD answer has no body to carry DENIED, and
		// containers/image (podman, skopeo) stops a push at a
		// bodiless 403 with "403 (Forbidden)". Saying the blob is
		// not there reveals nothing to a caller who may not pull,
		// and the upload that follows gets a 403 DENIED that every
		// client shows as "denied".
		return backend.Errorf(http.StatusNotFound, backend.CodeBlobUnknown, "blob unknown")
	}
	return backend.Errorf(http.StatusForbidden, backend.CodeDenied, "requested access to the resource is denied")
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

// authenticate reads the Authorization header. A request that must stop
// here gets the error to answer with (401 with the site's challenge, 429).
func (h *Guard) authenticate(r *http.Request, host string) (caller, *backend.Error) {
	hdr := r.Header.Get("Authorization")
	if hdr == "" {
		return caller{none: true}, nil
	}
	scheme, rest, _ := strings.Cut(hdr, " ")
	rest = strings.TrimSpace(rest)
	switch {
	case len(hdr) > MaxAuthHeader:
		return caller{}, h.challenge(r, "", "invalid_request", "authorization header too long")
	case strings.EqualFold(scheme, "Bearer"):
		claims, err := h.s.verifyToken(rest, host)
		if err != nil {
			h.s.log.Debug().Str("addr", clientAddr(r)).Str("reason", err.Error()).Msg("bearer token refused")
			return caller{}, h.challenge(r, "", "invalid_token", err.Error())
		}
		if claims.Subject != "" && !h.s.v.hasUser(claims.Subject) {
			// removed from the htpasswd file since the token was issued
			return caller{}, h.challenge(r, "", "invalid_token", "unknown user")
		}
		return caller{user: claims.Subject, claims: claims}, nil
	case strings.EqualFold(scheme, "Basic"):
		user, refused := h.s.checkBasic(r, rest)
		if refused != nil && refused.Status == http.StatusUnauthorized {
			return caller{}, h.challenge(r, "", "", refused.Message)
		}
		return caller{user: user}, refused
	}
	return caller{}, h.challenge(r, "", "invalid_request", "unsupported authorization scheme")
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

// checkBasic verifies Basic credentials with throttling. A refused login
// is a 401 UNAUTHORIZED (without challenge header: the caller adds its
// own) or a 429 with Retry-After.
func (s *Service) checkBasic(r *http.Request, v string) (string, *backend.Error) {
	user, pw, err := ParseBasic(v)
	if err != nil {
		if res, blocked := s.addrBlocked(r.RemoteAddr); blocked {
			return "", tooMany(res) // a blocked address gets 429 whatever it sends
		}
		return "", unauthorized(err.Error())
	}
	return s.checkPassword(r, user, pw)
}

// unauthorized is a refused login, before the caller's challenge.
func unauthorized(msg string) *backend.Error {
	return backend.Errorf(http.StatusUnauthorized, backend.CodeUnauthorized, "%s", msg)
}

func (s *Service) checkPassword(r *http.Request, user string, pw []byte) (string, *backend.Error) {
	res := s.Login(r.Context(), r.RemoteAddr, user, pw)
	switch {
	case res.RetryAfter > 0:
		return "", tooMany(res)
	case !res.OK:
		return "", unauthorized(res.Message)
	}
	return user, nil
}

// tooMany is the answer to a throttled login.
func tooMany(res LoginResult) *backend.Error {
	e := backend.Errorf(http.StatusTooManyRequests, backend.CodeTooManyRequests, "%s", res.Message)
	e.Header = http.Header{"Retry-After": {strconv.Itoa(retrySeconds(res.RetryAfter))}}
	return e
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

// challenge is a 401 with the site's challenge. scope and errParam are
// optional parts of a Bearer challenge.
func (h *Guard) challenge(r *http.Request, scope, errParam, msg string) *backend.Error {
	var v string
	if h.site.Scheme == SchemeBasic {
		v = fmt.Sprintf("Basic realm=%q, charset=\"UTF-8\"", h.s.cfg.Realm)
	} else {
		v = fmt.Sprintf("Bearer realm=%q,service=%q", h.realmURL(r), h.service(r))
		if scope != "" {
			v += fmt.Sprintf(",scope=%q", scope)
		}
		if errParam != "" {
			v += fmt.Sprintf(",error=%q", errParam)
		}
	}
	e := unauthorized(msg)
	e.Header = http.Header{}
	e.Header.Set("WWW-Authenticate", v)
	return e
}

// realmURL is the token endpoint as the client sees this site.
func (h *Guard) realmURL(r *http.Request) string {
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

func (h *Guard) warnPlain(r *http.Request) {
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
func (h *Guard) serveToken(w http.ResponseWriter, r *http.Request) string {
	w.Header().Set("Cache-Control", "no-store")
	backend.SetAPIVersion(w.Header())
	refuse := func(e *backend.Error) {
		if e.Status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q, charset=\"UTF-8\"", h.s.cfg.Realm))
		}
		backend.WriteError(w, r, e)
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
				refuse(unauthorized("the token endpoint takes Basic credentials or none"))
				return ""
			}
			var e *backend.Error
			if user, e = h.s.checkBasic(r, rest); e != nil {
				refuse(e)
				return ""
			}
		}
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			oauthError(w, http.StatusBadRequest, "invalid_request", "cannot parse the form")
			return ""
		}
		scopes, service = r.PostForm["scope"], r.PostForm.Get("service")
		switch r.PostForm.Get("grant_type") {
		case "password":
			u := r.PostForm.Get("username")
			if u == "" {
				oauthError(w, http.StatusBadRequest, "invalid_request", "username missing")
				return ""
			}
			var e *backend.Error
			if user, e = h.s.checkPassword(r, u, []byte(r.PostForm.Get("password"))); e != nil {
				if e.Status == http.StatusUnauthorized {
					oauthError(w, http.StatusUnauthorized, "invalid_grant", e.Message)
				} else {
					backend.WriteError(w, r, e)
				}
				return ""
			}
		case "refresh_token":
			// wharf never hands out refresh tokens, so none can be valid.
			oauthError(w, http.StatusBadRequest, "invalid_grant", "unknown refresh token; log in again")
			return ""
		default:
			oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "use grant_type=password or GET with Basic credentials")
			return ""
		}
	default:
		w.Header().Set("Allow", "GET, POST")
		backend.WriteError(w, r, backend.Errorf(http.StatusMethodNotAllowed, backend.CodeUnsupported, "use GET or POST"))
		return ""
	}
	host := h.service(r)
	if service != "" && !strings.EqualFold(service, host) {
		backend.WriteError(w, r, backend.Errorf(http.StatusBadRequest, backend.CodeUnsupported,
			"this token endpoint serves %q, not %q", host, clip(service)))
		return ""
	}
	sc := ParseScopes(scopes)
	if len(sc) > MaxScopes {
		backend.WriteError(w, r, backend.Errorf(http.StatusBadRequest, backend.CodeUnsupported,
			"more than %d scopes in one token request", MaxScopes))
		return ""
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
	tok, err := h.s.sig.sign(claims)
	if err != nil {
		backend.WriteError(w, r, backend.Errorf(http.StatusInternalServerError, backend.CodeUnknown, "cannot sign token"))
		return user
	}
	h.s.issued.Add(1)
	h.s.log.Debug().Str("user", user).Str("addr", clientAddr(r)).Int("scopes", len(claims.Access)).Msg("token issued")
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(tokenResponse{
		Token: tok, AccessToken: tok,
		ExpiresIn: int(h.s.cfg.TokenTTL / time.Second),
		IssuedAt:  now.UTC().Format(time.RFC3339),
	})
	return user
}

// grant intersects the requested scopes with what user may do.
func (h *Guard) grant(host string, scopes []Scope, user string) []Access {
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
