// Package registry is the embedded OCI registry backend.
//
// Placeholder until the real implementation lands on main: it answers every
// request with 501 so the gateway can be wired and tested.
package registry

import (
	"context"
	"net/http"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend"
)

// Options configures a Registry.
type Options struct {
	Root   string
	Delete bool
	Logger zerolog.Logger
}

// Registry serves the OCI distribution API from local storage.
type Registry struct{}

// New opens (and creates) a registry rooted at o.Root.
func New(ctx context.Context, o Options) (*Registry, error) { return &Registry{}, nil }

// ServeHTTP answers every request with UNSUPPORTED for now.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	backend.WriteError(w, req, backend.Errorf(http.StatusNotImplemented, backend.CodeUnsupported, "not implemented yet"))
}

// Close releases the registry's resources.
func (r *Registry) Close() error { return nil }
