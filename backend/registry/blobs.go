package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/layout"
)

// hasBlob reports whether repo links the blob d (and the content exists).
func (r *Registry) hasBlob(ctx context.Context, repo string, d digest.Digest) (int64, bool, error) {
	if _, err := r.store.GetRecord(ctx, repo, layout.BlobLink(d)); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return 0, false, nil
		}
		return 0, false, err
	}
	size, err := r.store.StatBlob(ctx, d)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return 0, false, nil
		}
		return 0, false, err
	}
	return size, true, nil
}

func blobUnknown(d digest.Digest) error {
	return backend.Errorf(http.StatusNotFound, backend.CodeBlobUnknown, "blob %s unknown to this repository", d)
}

// getBlob serves GET and HEAD of a blob, with a single Range if asked. The
// body is copied from the *os.File so plain HTTP uses sendfile.
func (r *Registry) getBlob(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	if r.redirect != nil && req.Method == http.MethodGet {
		return r.redirectBlob(w, req, rt)
	}
	d := rt.Digest
	ctx := req.Context()
	if _, err := r.store.GetRecord(ctx, rt.Repo, layout.BlobLink(d)); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return blobUnknown(d)
		}
		return err
	}
	if req.Method == http.MethodHead {
		// The size is all a HEAD needs: no GET of the content (on S3 a
		// GET opened only to be closed costs a connection).
		size, err := r.store.StatBlob(ctx, d)
		if err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				return blobUnknown(d)
			}
			return err
		}
		re, _ := backend.ServeBlob(w, req, d, nil, size)
		if re != nil {
			return re
		}
		return nil
	}
	b, err := r.store.OpenBlob(ctx, d)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return blobUnknown(d)
		}
		return err
	}
	defer b.Close()
	re, cerr := backend.ServeBlob(w, req, d, b, b.Size())
	if re != nil {
		return re
	}
	if cerr != nil {
		r.log.Debug().Err(cerr).Str("digest", string(d)).Msg("registry: blob download interrupted")
	}
	return nil
}

func (r *Registry) deleteBlob(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	if err := r.deleteAllowed(); err != nil {
		return err
	}
	d := rt.Digest
	if err := r.store.DeleteRecord(req.Context(), rt.Repo, layout.BlobLink(d)); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return blobUnknown(d)
		}
		return err
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func uploadLocation(repo, id string) string { return "/v2/" + repo + "/blobs/uploads/" + id }

// uploadAccepted answers 202 with where the session stands.
func uploadAccepted(w http.ResponseWriter, repo string, u storage.Upload, status int) {
	h := w.Header()
	h.Set("Location", uploadLocation(repo, u.ID()))
	h.Set("Docker-Upload-UUID", u.ID())
	end := u.Size() - 1
	if end < 0 {
		end = 0
	}
	h.Set("Range", fmt.Sprintf("0-%d", end))
	h.Set("Content-Length", "0")
	w.WriteHeader(status)
}

// blobCreated answers 201 for a blob now in repo.
func blobCreated(w http.ResponseWriter, repo string, d digest.Digest) {
	h := w.Header()
	h.Set("Location", "/v2/"+repo+"/blobs/"+string(d))
	h.Set("Docker-Content-Digest", string(d))
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

// startUpload handles POST /v2/<name>/blobs/uploads/: cross-repository
// mount, monolithic upload (?digest=) or the start of a session.
func (r *Registry) startUpload(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	ctx := req.Context()
	q := req.URL.Query()
	if d := rt.MountDigest; d != "" {
		mounted, err := r.mount(ctx, rt, d)
		if err != nil {
			return err
		}
		if mounted {
			blobCreated(w, rt.Repo, d)
			return nil
		}
		// mount not possible: fall back to a normal upload session (202)
	}
	var want digest.Digest
	if ds := q.Get("digest"); ds != "" {
		d, e := backend.ParseDigest(ds)
		if e != nil {
			return e
		}
		want = d
	}
	u, err := r.store.NewUpload(ctx, rt.Repo)
	if err != nil {
		return fmt.Errorf("start upload: %w", err)
	}
	defer u.Close()
	if want == "" {
		uploadAccepted(w, rt.Repo, u, http.StatusAccepted)
		return nil
	}
	// monolithic: the body is the whole blob
	if err := r.appendBody(ctx, req, u, false); err != nil {
		_ = u.Cancel(ctx)
		return err
	}
	return r.commit(w, req, rt, u, want)
}

// mount links d into rt.Repo if the source repository (or, with no from=
// at all, any repository: the blob exists in the store) has it.
func (r *Registry) mount(ctx context.Context, rt *backend.Route, d digest.Digest) (bool, error) {
	switch {
	case rt.MountFrom != "":
		if _, ok, err := r.hasBlob(ctx, rt.MountFrom, d); err != nil || !ok {
			return false, err
		}
	case rt.MountFromGiven:
		return false, nil // from= given but invalid or not allowed
	default:
		if _, err := r.store.StatBlob(ctx, d); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				return false, nil
			}
			return false, err
		}
	}
	// the blob is in use again: gc must see it as fresh (see
	// touchReferences)
	if err := r.store.TouchBlob(ctx, d); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return false, nil // collected meanwhile: upload it
		}
		return false, fmt.Errorf("mount blob: %w", err)
	}
	if err := r.store.PutRecord(ctx, rt.Repo, layout.BlobLink(d), nil); err != nil {
		return false, fmt.Errorf("mount blob: %w", err)
	}
	return true, nil
}

func (r *Registry) openUpload(ctx context.Context, rt *backend.Route) (storage.Upload, error) {
	u, err := r.store.OpenUpload(ctx, rt.Repo, rt.UploadID)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, backend.Errorf(http.StatusNotFound, backend.CodeBlobUploadUnknown, "upload %q unknown", clip(rt.UploadID))
		}
		return nil, fmt.Errorf("open upload: %w", err)
	}
	return u, nil
}

// appendBody adds the request body to u. With checkRange a Content-Range
// must start where the session stands (else 416 with the current Range).
func (r *Registry) appendBody(ctx context.Context, req *http.Request, u storage.Upload, checkRange bool) error {
	var body io.Reader = req.Body
	want := int64(-1)
	if checkRange {
		start, end, ok, e := backend.ParseContentRange(req.Header.Get("Content-Range"))
		if e != nil {
			return e
		}
		if ok {
			if start != u.Size() {
				return rangeMismatch(u, start)
			}
			want = end - start + 1
			if req.ContentLength >= 0 && req.ContentLength != want {
				return backend.Errorf(http.StatusBadRequest, backend.CodeSizeInvalid, "Content-Length %d does not match Content-Range %d-%d", req.ContentLength, start, end)
			}
			body = io.LimitReader(req.Body, want)
		}
	}
	if req.ContentLength == 0 {
		return nil
	}
	n, err := u.Append(ctx, body)
	if err != nil {
		if errors.Is(err, storage.ErrInterrupted) {
			why := "the request body broke off"
			if errors.Is(err, os.ErrDeadlineExceeded) {
				why = "no data arrived within the server's progress timeout"
			}
			return backend.Errorf(http.StatusBadRequest, backend.CodeBlobUploadInvalid, "upload interrupted after %d bytes: %s (session kept at %d bytes; resume with PATCH)", n, why, u.Size())
		}
		return fmt.Errorf("append to upload: %w", err)
	}
	if (want >= 0 && n != want) || (req.ContentLength > 0 && n != req.ContentLength) {
		return backend.Errorf(http.StatusBadRequest, backend.CodeSizeInvalid, "body ended after %d bytes (session kept at %d bytes)", n, u.Size())
	}
	return nil
}

func rangeMismatch(u storage.Upload, start int64) error {
	e := backend.Errorf(http.StatusRequestedRangeNotSatisfiable, backend.CodeBlobUploadInvalid, "chunk starts at %d but the upload holds %d bytes", start, u.Size())
	return &rangeError{be: e}
}

// rangeError is a 416 that must carry the session's Location and Range.
type rangeError struct{ be *backend.Error }

func (e *rangeError) Error() string { return e.be.Error() }
func (e *rangeError) Unwrap() error { return e.be }

func (r *Registry) patchUpload(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	ctx := req.Context()
	u, err := r.openUpload(ctx, rt)
	if err != nil {
		return err
	}
	defer u.Close()
	if err := r.appendBody(ctx, req, u, true); err != nil {
		return r.withUploadHeaders(w, rt, u, err)
	}
	uploadAccepted(w, rt.Repo, u, http.StatusAccepted)
	return nil
}

// withUploadHeaders adds Location and Range to a 416 so the client can
// resume from the right offset.
func (r *Registry) withUploadHeaders(w http.ResponseWriter, rt *backend.Route, u storage.Upload, err error) error {
	var re *rangeError
	if errors.As(err, &re) {
		h := w.Header()
		h.Set("Location", uploadLocation(rt.Repo, u.ID()))
		h.Set("Docker-Upload-UUID", u.ID())
		end := u.Size() - 1
		if end < 0 {
			end = 0
		}
		h.Set("Range", fmt.Sprintf("0-%d", end))
		return re.be
	}
	return err
}

func (r *Registry) putUpload(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	ctx := req.Context()
	ds := req.URL.Query().Get("digest")
	if ds == "" {
		return backend.Errorf(http.StatusBadRequest, backend.CodeDigestInvalid, "digest query parameter required to finish an upload")
	}
	d, e := backend.ParseDigest(ds)
	if e != nil {
		return e
	}
	u, err := r.openUpload(ctx, rt)
	if err != nil {
		return err
	}
	defer u.Close()
	if err := r.appendBody(ctx, req, u, true); err != nil {
		return r.withUploadHeaders(w, rt, u, err)
	}
	return r.commit(w, req, rt, u, d)
}

// commit finishes u as blob d of rt.Repo.
func (r *Registry) commit(w http.ResponseWriter, req *http.Request, rt *backend.Route, u storage.Upload, d digest.Digest) error {
	ctx := req.Context()
	if err := u.Commit(ctx, d); err != nil {
		if errors.Is(err, storage.ErrDigestMismatch) {
			return backend.Errorf(http.StatusBadRequest, backend.CodeDigestInvalid, "uploaded content does not match digest %s; upload discarded", d)
		}
		return fmt.Errorf("commit upload: %w", err)
	}
	if err := r.store.PutRecord(ctx, rt.Repo, layout.BlobLink(d), nil); err != nil {
		return fmt.Errorf("link blob: %w", err)
	}
	blobCreated(w, rt.Repo, d)
	return nil
}

func (r *Registry) uploadStatus(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	u, err := r.openUpload(req.Context(), rt)
	if err != nil {
		return err
	}
	defer u.Close()
	uploadAccepted(w, rt.Repo, u, http.StatusNoContent)
	return nil
}

func (r *Registry) cancelUpload(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	ctx := req.Context()
	u, err := r.openUpload(ctx, rt)
	if err != nil {
		return err
	}
	defer u.Close()
	if err := u.Cancel(ctx); err != nil {
		return fmt.Errorf("cancel upload: %w", err)
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
