// Package backend holds the OCI distribution API shared by every backend:
// request routing (repository, kind, reference -> action), names, digests
// and errors. The registry, cache and proxy backends are built on it.
package backend

import (
	"mime"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Kind says which endpoint of the distribution API a request is for.
type Kind int

// The endpoints of the distribution API.
const (
	KindPing        Kind = iota // /v2/
	KindCatalog                 // /v2/_catalog
	KindTags                    // /v2/<name>/tags/list
	KindManifest                // /v2/<name>/manifests/<reference>
	KindBlob                    // /v2/<name>/blobs/<digest>
	KindUploadStart             // /v2/<name>/blobs/uploads/
	KindUpload                  // /v2/<name>/blobs/uploads/<id>
	KindReferrers               // /v2/<name>/referrers/<digest>
)

var kindNames = [...]string{"ping", "catalog", "tags", "manifest", "blob", "upload-start", "upload", "referrers"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Action is what a request does to a repository, as the policy sees it.
type Action string

// The actions a policy grants.
const (
	ActionNone   Action = ""
	ActionPull   Action = "pull"
	ActionPush   Action = "push"
	ActionDelete Action = "delete"
)

// Route is a /v2/ request parsed once: the gateway parses it (ParseRequest),
// auth decides on it, and the backend serves it (RouteHandler), all from
// the same value and without parsing the path, the query or the Accept
// headers again.
type Route struct {
	Kind      Kind
	Repo      string // repository name; empty for ping and catalog
	Reference string // the path's last element as sent: tag or digest (manifest), digest (blob, referrers), upload id
	Action    Action

	// Typed forms of Reference, by Kind.
	Tag      string        // manifest by tag
	Digest   digest.Digest // blob, referrers, manifest by digest (valid sha256 or sha512)
	UploadID string        // upload
	// BadDigest is set for a manifest reference shaped like a digest
	// ("alg:hex") that is not a valid one; the registry and cache answer it
	// with this error, the proxy passes the reference on as it came.
	BadDigest *Error

	// Cross-repository mount (POST .../blobs/uploads/?mount=<digest>&from=<repo>).
	// MountDigest is the valid digest of mount= ("" without one, or when
	// it is invalid: a normal upload then). MountFrom is the source
	// repository when from= names a valid one; a caller whose Access
	// lacks MayMount gets it cleared (ForAccess), so the backend falls
	// back to a normal upload. MountFromGiven says from= was sent at all.
	MountDigest    digest.Digest
	MountFrom      string
	MountFromGiven bool

	// Accept lists the media types of the request's Accept headers, in
	// order, without parameters (set by ParseRequest for manifests).
	Accept []string

	// Namespace is the registry a mirror request named with containerd's
	// ?ns=<registry> ("docker.io", "ghcr.io"), set by a RouteResolver that
	// qualified Repo with it; "" otherwise. ClientRepo is then the name in
	// the request's path (Repo without the namespace prefix).
	Namespace  string
	ClientRepo string
}

// RouteResolver is implemented by backends whose repository names depend
// on more than the path (the cache's ?ns=<registry>). The gateway calls it
// once, right after ParseRoute and before the policy, so that the policy,
// tokens and the backend all see the same qualified name.
type RouteResolver interface {
	ResolveRoute(rt *Route, query func(string) string) *Error
}

// ParseRoute parses the path and method of a /v2/ request. It checks the
// repository name and the shape of the reference; a path that is not part
// of the API gets a 404 NAME_UNKNOWN-free "not found" error.
func ParseRoute(method, path string, query func(string) string) (*Route, *Error) {
	if path == "/v2" || path == "/v2/" {
		return &Route{Kind: KindPing}, nil
	}
	if !strings.HasPrefix(path, "/v2/") {
		return nil, Errorf(http.StatusNotFound, CodeUnsupported, "not a registry API path")
	}
	p := path[len("/v2/"):]
	if p == "_catalog" {
		return &Route{Kind: KindCatalog, Action: ActionPull}, nil
	}
	rt := &Route{}
	var name string
	switch {
	case strings.HasSuffix(p, "/tags/list"):
		rt.Kind, name = KindTags, strings.TrimSuffix(p, "/tags/list")
	case strings.HasSuffix(p, "/blobs/uploads/") || strings.HasSuffix(p, "/blobs/uploads"):
		rt.Kind = KindUploadStart
		name = strings.TrimSuffix(strings.TrimSuffix(p, "/"), "/blobs/uploads")
	default:
		i := strings.LastIndexByte(p, '/')
		if i <= 0 {
			return nil, Errorf(http.StatusNotFound, CodeUnsupported, "not a registry API path")
		}
		head, last := p[:i], p[i+1:]
		switch {
		case strings.HasSuffix(head, "/blobs/uploads"):
			rt.Kind, name = KindUpload, strings.TrimSuffix(head, "/blobs/uploads")
		case strings.HasSuffix(head, "/manifests"):
			rt.Kind, name = KindManifest, strings.TrimSuffix(head, "/manifests")
		case strings.HasSuffix(head, "/blobs"):
			rt.Kind, name = KindBlob, strings.TrimSuffix(head, "/blobs")
		case strings.HasSuffix(head, "/referrers"):
			rt.Kind, name = KindReferrers, strings.TrimSuffix(head, "/referrers")
		default:
			return nil, Errorf(http.StatusNotFound, CodeUnsupported, "not a registry API path")
		}
		rt.Reference = last
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	rt.Repo = name
	if err := rt.parseReference(); err != nil {
		return nil, err
	}
	rt.Action = actionFor(method, rt.Kind)
	if rt.Kind == KindUploadStart && query != nil {
		rt.parseMount(query)
	}
	return rt, nil
}

// parseMount reads mount= and from= of an upload start.
func (rt *Route) parseMount(query func(string) string) {
	ms := query("mount")
	if ms == "" {
		return
	}
	if d, err := ParseDigest(ms); err == nil {
		rt.MountDigest = d
	}
	from := query("from")
	rt.MountFromGiven = from != ""
	if from != "" && ValidateName(from) == nil {
		rt.MountFrom = from
	}
}

// ParseRequest is ParseRoute for an HTTP request, with the Accept list
// of a manifest request.
func ParseRequest(r *http.Request) (*Route, *Error) {
	q := r.URL.Query()
	rt, err := ParseRoute(r.Method, r.URL.Path, q.Get)
	if err != nil {
		return nil, err
	}
	if rt.Kind == KindManifest {
		rt.Accept = ParseAccept(r.Header.Values("Accept"))
	}
	return rt, nil
}

// ParseAccept lists the media types of Accept header values (several
// headers, each a comma-separated list), without parameters; unparseable
// entries are left out.
func ParseAccept(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, part := range strings.Split(v, ",") {
			t, _, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil || t == "" {
				continue
			}
			out = append(out, t)
		}
	}
	return out
}

// Accepts reports whether the client takes media type mt: no (parseable)
// Accept entry, or a wildcard or application/json among them, accepts
// anything.
func (rt *Route) Accepts(mt string) bool {
	if len(rt.Accept) == 0 {
		return true
	}
	if t, _, err := mime.ParseMediaType(mt); err == nil {
		mt = t
	}
	for _, t := range rt.Accept {
		if t == mt || t == "*/*" || t == "application/*" || t == "application/json" {
			return true
		}
	}
	return false
}

// parseReference checks Reference for the route's kind and fills in its
// typed form.
func (rt *Route) parseReference() *Error {
	switch rt.Kind {
	case KindManifest:
		switch {
		case IsDigestShaped(rt.Reference):
			rt.Digest, rt.BadDigest = ParseDigest(rt.Reference)
		case ValidTag(rt.Reference):
			rt.Tag = rt.Reference
		default:
			return Errorf(http.StatusBadRequest, CodeManifestInvalid, "invalid tag or digest %q", clip(rt.Reference))
		}
	case KindBlob, KindReferrers:
		d, err := ParseDigest(rt.Reference)
		if err != nil {
			return err
		}
		rt.Digest = d
	case KindUpload:
		if rt.Reference == "" {
			return Errorf(http.StatusNotFound, CodeBlobUploadUnknown, "empty upload id")
		}
		rt.UploadID = rt.Reference
	}
	return nil
}

func actionFor(method string, k Kind) Action {
	switch method {
	case http.MethodGet, http.MethodHead:
		if k == KindUpload {
			return ActionPush // upload status is part of pushing
		}
		return ActionPull
	case http.MethodDelete:
		if k == KindUpload {
			return ActionPush // cancelling one's own upload
		}
		return ActionDelete
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		return ActionPush
	}
	return ActionPull
}

// Access is what the caller may do beyond the route's own action, as
// the gateway hands it to the backend next to the route (auth decides it;
// backends never see users or credentials).
type Access struct {
	// MayMount: the caller may pull from the route's mount source
	// (Route.MountFrom), so a cross-repository mount may read it. Without
	// it the registry does a normal upload instead, as if the source
	// lacked the blob.
	MayMount bool
	// Catalog keeps the repositories /v2/_catalog may list; nil lists
	// every repository.
	Catalog func(repo string) bool
}

// FullAccess is the access of a caller who may do everything: a site
// without [auth], and a backend served on its own (ServeStandalone).
func FullAccess() Access { return Access{MayMount: true} }

// RouteHandler is a backend as the gateway calls it: with the request's
// route, parsed once by the gateway (and resolved, RouteResolver), and
// the caller's Access. A backend gets no request without a route: the
// type has no other way in.
type RouteHandler interface {
	ServeRoute(w http.ResponseWriter, r *http.Request, rt *Route, a Access)
}

// ServeStandalone serves r with h when nothing stands in front of h (tests,
// tools, a backend embedded without the gateway): it parses the request,
// resolves it when h is a RouteResolver and serves it with FullAccess.
// Unparseable requests get their error.
func ServeStandalone(h RouteHandler, w http.ResponseWriter, r *http.Request) {
	SetAPIVersion(w.Header())
	rt, err := ParseRequest(r)
	if res, ok := h.(RouteResolver); ok && err == nil {
		err = res.ResolveRoute(rt, r.URL.Query().Get)
	}
	if err != nil {
		WriteError(w, r, err)
		return
	}
	h.ServeRoute(w, r, rt, FullAccess())
}

// ForAccess is rt as a caller with a may use it: without MayMount the
// mount source is dropped (a copy; rt is left as it is), so the upload
// cannot read a repository the caller may not pull. MountFromGiven stays
// set, so no other repository is searched instead. A mount without from=
// (the registry would link the blob from wherever it is stored) also
// needs MayMount, which only FullAccess grants: a digest seen in a build
// log must not open a layer of a repository the caller may not pull.
func (rt *Route) ForAccess(a Access) *Route {
	if a.MayMount || rt.MountDigest == "" {
		return rt
	}
	cp := *rt
	switch {
	case rt.MountFrom != "":
		cp.MountFrom = ""
	case !rt.MountFromGiven:
		cp.MountDigest = "" // a plain upload session instead
	default:
		return rt
	}
	return &cp
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
