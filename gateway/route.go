package gateway

import (
	"net/http"
	"strings"

	"github.com/wharf-dev/wharf/auth"
	"github.com/wharf-dev/wharf/backend"
)

// The request contract, in one place: a /v2/ request is parsed once into a
// backend.Route, auth returns its Decision as a value, and the backend is
// called with the route and the caller's backend.Access; the user goes to
// the access log and webhook events as a value too. Nothing is handed
// down through the request's context.

// exchange is the gateway's record of one request while a site serves
// it. The access log creates it and writes it out once the request is
// answered; the site's serve step fills it in (the user, from auth's
// Decision, the token endpoint or the UI's viewer). It never leaves the
// gateway.
type exchange struct {
	user string // "" = anonymous or not authenticated
}

// siteFunc serves one request of a site and notes what it learns in x.
type siteFunc func(w http.ResponseWriter, r *http.Request, x *exchange)

// siteServer serves the requests of one site behind the access log.
type siteServer struct {
	g     *Gateway // webhook events
	host  string   // the site's host ("*" for the catch-all site)
	be    backend.RouteHandler
	res   backend.RouteResolver // be, when it qualifies names by more than the path; or nil
	guard *auth.Guard           // nil: no [auth], every caller may do everything
	// web serves the paths outside /v2/ (the UI, or a proxy site's
	// upstream) and returns the user it served; nil: 404.
	web func(w http.ResponseWriter, r *http.Request) (user string)
	// upstreamToken: TokenPath goes to web when the site has no [auth]
	// (a proxy site in front of a registry, such as another wharf, whose
	// token endpoint is /v2/token).
	upstreamToken bool
}

// apiPath reports whether a request path belongs to the registry API:
// /v2 and everything below it. Every other path is the site's web side.
func apiPath(p string) bool {
	return p == "/v2" || strings.HasPrefix(p, "/v2/")
}

// serve is a siteFunc: it answers /v2/ requests itself (the token
// endpoint, then parse, decide, backend) and sends other paths to web.
func (s *siteServer) serve(w http.ResponseWriter, r *http.Request, x *exchange) {
	if !apiPath(r.URL.Path) {
		if s.web == nil {
			backend.WriteError(w, r, backend.Errorf(http.StatusNotFound, backend.CodeUnsupported, "not a registry API path"))
			return
		}
		x.user = s.web(w, r)
		return
	}
	// every /v2/ answer carries the API version, 401s and errors included
	backend.SetAPIVersion(w.Header())
	if r.URL.Path == auth.TokenPath {
		switch {
		case s.guard != nil:
			x.user = s.guard.ServeToken(w, r)
			return
		case s.upstreamToken && s.web != nil:
			x.user = s.web(w, r)
			return
		}
	}
	rt, err := backend.ParseRequest(r)
	if err == nil && s.res != nil {
		// before the policy, so that policy, tokens and backend all see
		// the same qualified name (the cache's ?ns=)
		err = s.res.ResolveRoute(rt, r.URL.Query().Get)
	}
	if err != nil {
		backend.WriteError(w, r, err)
		return
	}
	a := backend.FullAccess()
	if s.guard != nil {
		d, refused := s.guard.Decide(r, rt)
		x.user = d.User // also when refused: the log names who was refused
		if refused != nil {
			backend.WriteError(w, r, refused)
			return
		}
		a = d.Access()
	}
	s.g.serveEvents(s.host, w, r, rt, x.user, func(w http.ResponseWriter, r *http.Request) {
		s.be.ServeRoute(w, r, rt, a)
	})
}
