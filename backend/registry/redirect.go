package registry

import (
	"errors"
	"net/http"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
)

// redirectBlob answers a blob GET with 307 Temporary Redirect to a URL
// the storage serves the content at (a pre-signed S3 URL), after the
// same checks as a streamed GET: the repository links the blob and the
// content exists, so a client never follows a redirect into S3's own
// "no such key" error. HEAD requests are never redirected (clients use
// them for the size and digest, which wharf answers from one stat), nor
// are manifests (wharf may rewrite their headers and checks their
// media types). A Range header travels with the client to the storage.
func (r *Registry) redirectBlob(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	d := rt.Digest
	ctx := req.Context()
	_, ok, err := r.hasBlob(ctx, rt.Repo, d)
	if err != nil {
		return err
	}
	if !ok {
		return blobUnknown(d)
	}
	u, err := r.redirect.RedirectURL(ctx, d)
	if errors.Is(err, storage.ErrNotFound) {
		return blobUnknown(d)
	}
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Location", u)
	h.Set("Docker-Content-Digest", string(d))
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusTemporaryRedirect)
	return nil
}
