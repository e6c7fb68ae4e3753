// Package registry is wharf's embedded OCI registry: the whole distribution
// API (v1.1) on top of a storage.Store, by default the local file system.
package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/localfs"
)

// Options configures a Registry.
type Options struct {
	Root   string         // directory holding all registry data (created if missing)
	Delete bool           // allow DELETE of manifests, tags, blobs; else 405 UNSUPPORTED
	Logger zerolog.Logger // zero value = quiet
	// UploadTTL is how long an idle upload session is kept before it is
	// removed; default 24h.
	UploadTTL time.Duration
	// SyncBlobs fsyncs every blob before it becomes visible (power-loss
	// safety at some cost in push speed; see backend/storage/README.md).
	// Manifests, tags and links are always synced.
	SyncBlobs bool
	// DirectIO writes uploaded blobs with O_DIRECT, bypassing the page
	// cache (see backend/storage/README.md).
	DirectIO bool
	// Store replaces the local file system store (Root is then unused).
	Store storage.Store
	// Redirect answers blob GETs with 307 to a URL of the storage
	// itself when Store is a storage.Redirector (S3: a pre-signed URL;
	// [site.registry.s3] redirect); ignored for other stores.
	Redirect bool
}

// Registry serves the distribution API. It is an http.Handler.
type Registry struct {
	store  storage.Store
	delete bool
	log    zerolog.Logger
	cache  *cache
	// redirect, when set, serves blob GETs by redirection (redirect.go).
	redirect storage.Redirector
}

// New opens the registry's storage under o.Root.
func New(ctx context.Context, o Options) (*Registry, error) {
	st := o.Store
	if st == nil {
		fs, err := localfs.New(localfs.Options{Root: o.Root, UploadTTL: o.UploadTTL, SyncBlobs: o.SyncBlobs, DirectIO: o.DirectIO, Logger: o.Logger})
		if err != nil {
			return nil, fmt.Errorf("registry: %w", err)
		}
		st = fs
	}
	r := &Registry{store: st, delete: o.Delete, log: o.Logger, cache: newCache()}
	if rd, ok := st.(storage.Redirector); ok && o.Redirect {
		r.redirect = rd
	}
	return r, nil
}

// Store is the registry's storage, for readers inside the process (the
// web UI lists repositories, tags and manifests straight from it).
func (r *Registry) Store() storage.Store { return r.store }

// DeleteEnabled reports whether the registry accepts deletes (delete = true).
func (r *Registry) DeleteEnabled() bool { return r.delete }

// Close stops the storage's background work.
func (r *Registry) Close() error { return r.store.Close() }

// ServeHTTP answers one /v2/ request on its own, with nothing in front of
// the registry (tests, tools): it parses the request and serves it with
// full access (backend.ServeStandalone). The gateway calls ServeRoute.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	backend.ServeStandalone(r, w, req)
}

// ServeRoute answers one /v2/ request with the route the gateway parsed and
// the caller's access: a cross-repository mount reads its source only
// with a.MayMount, the catalog lists what a.Catalog keeps.
func (r *Registry) ServeRoute(w http.ResponseWriter, req *http.Request, rt *backend.Route, a backend.Access) {
	backend.SetAPIVersion(w.Header())
	rt = rt.ForAccess(a)
	if err := r.serve(w, req, rt, a); err != nil {
		r.fail(w, req, rt, err)
	}
}

func (r *Registry) serve(w http.ResponseWriter, req *http.Request, rt *backend.Route, a backend.Access) error {
	m := req.Method
	get := m == http.MethodGet || m == http.MethodHead
	switch rt.Kind {
	case backend.KindPing:
		if get {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", "2")
			w.WriteHeader(http.StatusOK)
			if m == http.MethodGet {
				_, _ = w.Write([]byte("{}"))
			}
			return nil
		}
	case backend.KindCatalog:
		if get {
			return r.catalog(w, req, a.Catalog)
		}
	case backend.KindTags:
		if get {
			return r.tagsList(w, req, rt)
		}
	case backend.KindManifest:
		switch m {
		case http.MethodGet, http.MethodHead:
			return r.getManifest(w, req, rt)
		case http.MethodPut:
			return r.putManifest(w, req, rt)
		case http.MethodDelete:
			return r.deleteManifest(w, req, rt)
		}
	case backend.KindBlob:
		switch m {
		case http.MethodGet, http.MethodHead:
			return r.getBlob(w, req, rt)
		case http.MethodDelete:
			return r.deleteBlob(w, req, rt)
		}
	case backend.KindUploadStart:
		if m == http.MethodPost {
			return r.startUpload(w, req, rt)
		}
	case backend.KindUpload:
		switch m {
		case http.MethodGet, http.MethodHead:
			return r.uploadStatus(w, req, rt)
		case http.MethodPatch:
			return r.patchUpload(w, req, rt)
		case http.MethodPut:
			return r.putUpload(w, req, rt)
		case http.MethodDelete:
			return r.cancelUpload(w, req, rt)
		}
	case backend.KindReferrers:
		if get {
			return r.referrers(w, req, rt)
		}
	}
	return backend.Errorf(http.StatusMethodNotAllowed, backend.CodeUnsupported, "method %s not allowed here", m)
}

// fail writes err: a *backend.Error as it is, storage errors mapped to a
// clear status, anything else as a logged 500.
func (r *Registry) fail(w http.ResponseWriter, req *http.Request, rt *backend.Route, err error) {
	var be *backend.Error
	switch {
	case errors.As(err, &be):
	case errors.Is(err, storage.ErrNoSpace):
		// 507 Insufficient Storage says exactly what happened; clients
		// show the status and message, and may retry once space is freed.
		be = backend.Errorf(http.StatusInsufficientStorage, backend.CodeUnknown, "registry storage is full; nothing was stored, upload sessions can resume once space is freed")
		r.log.Error().Err(err).Str("repo", rt.Repo).Msg("registry: storage full")
	case errors.Is(err, storage.ErrUnavailable):
		// The storage service (S3) refused still after the store's
		// retries: a clean 503 the client may retry, not a 500.
		be = backend.Errorf(http.StatusServiceUnavailable, backend.CodeUnavailable, "registry storage is temporarily unavailable; retry later")
		be.Header = http.Header{"Retry-After": {"5"}}
		r.log.Warn().Err(err).Str("method", req.Method).Str("path", req.URL.Path).Msg("registry: storage unavailable")
	case errors.Is(err, context.Canceled):
		be = backend.Errorf(http.StatusBadRequest, backend.CodeUnknown, "request cancelled")
	default:
		r.log.Error().Err(err).Str("method", req.Method).Str("path", req.URL.Path).Msg("registry: internal error")
		// the details (file names) stay in the server's log
		be = backend.Errorf(http.StatusInternalServerError, backend.CodeUnknown, "internal error in the registry's storage; see the server log")
	}
	backend.WriteError(w, req, be)
}

func (r *Registry) deleteAllowed() error {
	if !r.delete {
		return backend.Errorf(http.StatusMethodNotAllowed, backend.CodeUnsupported, "deletion is disabled on this registry")
	}
	return nil
}
