package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/layout"
)

func manifestUnknown(ref string) error {
	return backend.Errorf(http.StatusNotFound, backend.CodeManifestUnknown, "manifest %q unknown to this repository", clip(ref))
}

// resolve turns a manifest route's reference (tag or digest) into a
// digest.
func (r *Registry) resolve(ctx context.Context, rt *backend.Route) (digest.Digest, error) {
	switch {
	case rt.BadDigest != nil:
		return "", rt.BadDigest
	case rt.Digest != "":
		return rt.Digest, nil
	}
	repo, ref := rt.Repo, rt.Tag
	raw, err := r.store.GetRecord(ctx, repo, layout.Tag(ref))
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return "", manifestUnknown(ref)
		}
		return "", err
	}
	d, perr := digest.Parse(strings.TrimSpace(string(raw)))
	if perr != nil {
		return "", fmt.Errorf("tag %s of %s holds a bad digest: %w", ref, repo, perr)
	}
	return d, nil
}

// loadManifest returns the bytes and media type of manifest d in repo.
// The repository's record is read every time (it may have been deleted,
// also by another Registry on the same root); only the immutable content
// comes from the cache.
func (r *Registry) loadManifest(ctx context.Context, repo string, d digest.Digest) (*cachedManifest, error) {
	mt, err := r.store.GetRecord(ctx, repo, layout.Manifest(d))
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, manifestUnknown(string(d))
		}
		return nil, err
	}
	if data, ok := r.cache.get(d); ok {
		return &cachedManifest{digest: d, mediaType: string(mt), data: data}, nil
	}
	data, err := storage.ReadBlob(ctx, r.store, d, backend.MaxManifestSize)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, manifestUnknown(string(d))
	}
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	r.cache.add(d, data)
	return &cachedManifest{digest: d, mediaType: string(mt), data: data}, nil
}

func (r *Registry) getManifest(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	ctx := req.Context()
	d, err := r.resolve(ctx, rt)
	if err != nil {
		return err
	}
	m, err := r.loadManifest(ctx, rt.Repo, d)
	if err != nil {
		if be := (*backend.Error)(nil); errors.As(err, &be) && be.Code == backend.CodeManifestUnknown {
			return manifestUnknown(rt.Reference)
		}
		return err
	}
	if !rt.Accepts(m.mediaType) {
		// What registry:2 does for clients that cannot read this type:
		// an index is answered with its linux/amd64 entry if acceptable.
		if alt := r.platformFallback(ctx, rt, m); alt != nil {
			m = alt
		} else {
			return backend.Errorf(http.StatusNotFound, backend.CodeManifestUnknown, "manifest %s is %s, which the Accept header does not allow", m.digest, m.mediaType)
		}
	}
	h := w.Header()
	h.Set("Content-Type", m.mediaType)
	h.Set("Docker-Content-Digest", string(m.digest))
	h.Set("ETag", `"`+string(m.digest)+`"`)
	h.Set("Content-Length", strconv.Itoa(len(m.data)))
	if inm := req.Header.Get("If-None-Match"); inm != "" && strings.Contains(inm, string(m.digest)) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	w.WriteHeader(http.StatusOK)
	if req.Method != http.MethodHead {
		_, _ = w.Write(m.data)
	}
	return nil
}

func (r *Registry) platformFallback(ctx context.Context, rt *backend.Route, m *cachedManifest) *cachedManifest {
	if !backend.IsIndex(m.mediaType) {
		return nil
	}
	var idx backend.Manifest
	if json.Unmarshal(m.data, &idx) != nil {
		return nil
	}
	for _, c := range idx.Manifests {
		if c.Platform == nil || c.Platform.OS != "linux" || c.Platform.Architecture != "amd64" || !rt.Accepts(c.MediaType) {
			continue
		}
		if alt, err := r.loadManifest(ctx, rt.Repo, c.Digest); err == nil && rt.Accepts(alt.mediaType) {
			return alt
		}
	}
	return nil
}

// putManifest validates and stores a manifest. The exact request bytes
// are stored and later served; the order of writes (content, revision
// link, referrer link, tag) means a crash never leaves a tag pointing at
// nothing.
func (r *Registry) putManifest(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	ctx := req.Context()
	if req.ContentLength > backend.MaxManifestSize {
		return backend.Errorf(http.StatusRequestEntityTooLarge, backend.CodeSizeInvalid, "manifest of %d bytes is larger than the limit of %d", req.ContentLength, backend.MaxManifestSize)
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, backend.MaxManifestSize+1))
	if err != nil {
		return backend.Errorf(http.StatusBadRequest, backend.CodeManifestInvalid, "reading manifest: %v", err)
	}
	if len(body) > backend.MaxManifestSize {
		return backend.Errorf(http.StatusRequestEntityTooLarge, backend.CodeSizeInvalid, "manifest larger than the limit of %d bytes", backend.MaxManifestSize)
	}
	m, mt, e := backend.ParseManifest(req.Header.Get("Content-Type"), body)
	if e != nil {
		return e
	}
	var tags []string
	d := digest.SHA256.FromBytes(body)
	if rt.BadDigest != nil {
		return rt.BadDigest
	}
	if want := rt.Digest; want != "" {
		if got := want.Algorithm().FromBytes(body); got != want {
			return backend.Errorf(http.StatusBadRequest, backend.CodeDigestInvalid, "manifest digest is %s, not %s", got, want)
		}
		d = want
		for _, t := range req.URL.Query()["tag"] {
			if !backend.ValidTag(t) {
				return backend.Errorf(http.StatusBadRequest, backend.CodeManifestInvalid, "invalid tag %q", clip(t))
			}
			tags = append(tags, t)
		}
	} else {
		tags = append(tags, rt.Reference)
		// Pushed by tag, the digest is sha256, unless the repository
		// already holds these bytes under another algorithm (pushed by a
		// sha512 digest before): then the tag names that revision.
		if alt := digest.SHA512.FromBytes(body); r.hasManifest(ctx, rt.Repo, alt) {
			d = alt
		}
	}
	if err := r.touchReferences(ctx, rt.Repo, m, mt); err != nil {
		return err
	}
	if err := r.checkReferences(ctx, rt.Repo, m, mt); err != nil {
		return err
	}
	// PutBlob refreshes the time of content that is already stored too.
	if err := r.store.PutBlob(ctx, d, body); err != nil {
		return fmt.Errorf("store manifest: %w", err)
	}
	if err := r.store.PutRecord(ctx, rt.Repo, layout.Manifest(d), []byte(mt)); err != nil {
		return fmt.Errorf("link manifest: %w", err)
	}
	r.cache.add(d, body)
	if m.Subject != nil {
		desc := backend.Descriptor{
			MediaType:    mt,
			Digest:       d,
			Size:         int64(len(body)),
			ArtifactType: m.ArtifactType,
			Annotations:  m.Annotations,
		}
		if desc.ArtifactType == "" && m.Config != nil {
			desc.ArtifactType = m.Config.MediaType
		}
		raw, err := json.Marshal(desc)
		if err != nil {
			return err
		}
		if err := r.store.PutRecord(ctx, rt.Repo, layout.Referrer(m.Subject.Digest, d), raw); err != nil {
			return fmt.Errorf("record referrer: %w", err)
		}
	}
	for _, t := range tags {
		if err := r.store.PutRecord(ctx, rt.Repo, layout.Tag(t), []byte(d)); err != nil {
			return fmt.Errorf("tag manifest: %w", err)
		}
	}
	h := w.Header()
	h.Set("Location", "/v2/"+rt.Repo+"/manifests/"+string(d))
	h.Set("Docker-Content-Digest", string(d))
	if m.Subject != nil {
		h.Set("OCI-Subject", string(m.Subject.Digest))
	}
	if rt.Digest != "" {
		for _, t := range tags { // tags given as ?tag= parameters
			h.Add("OCI-Tag", t)
		}
	}
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (r *Registry) hasManifest(ctx context.Context, repo string, d digest.Digest) bool {
	_, err := r.store.GetRecord(ctx, repo, layout.Manifest(d))
	return err == nil
}

// touchReferences refreshes the modification time of every blob m uses
// (and of the revision records of an index's children), before
// checkReferences looks for them and before anything of m is stored.
// `wharf gc` removes only what is older than its grace period, deciding
// atomically against these touches (storage.Store.DeleteBlobIfOlder), so a
// blob that a client found with HEAD and did not upload again (docker does
// that) is either kept, or already gone and reported missing by
// checkReferences: a manifest is never stored with a blob gc removes.
func (r *Registry) touchReferences(ctx context.Context, repo string, m *backend.Manifest, mt string) error {
	var descs []backend.Descriptor
	if backend.IsIndex(mt) {
		descs = m.Manifests
	} else {
		descs = append([]backend.Descriptor{*m.Config}, m.Layers...)
	}
	for _, c := range descs {
		if err := r.store.TouchBlob(ctx, c.Digest); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("refresh blob %s: %w", c.Digest, err)
		}
		if backend.IsIndex(mt) {
			if err := r.store.TouchRecord(ctx, repo, layout.Manifest(c.Digest)); err != nil && !errors.Is(err, storage.ErrNotFound) {
				return fmt.Errorf("refresh manifest %s: %w", c.Digest, err)
			}
		}
	}
	return nil
}

// checkReferences: every blob an image manifest uses must be in the
// repository, and every manifest an index lists must be too.
func (r *Registry) checkReferences(ctx context.Context, repo string, m *backend.Manifest, mt string) error {
	if backend.IsIndex(mt) {
		for _, c := range m.Manifests {
			if _, err := r.store.GetRecord(ctx, repo, layout.Manifest(c.Digest)); err != nil {
				if errors.Is(err, storage.ErrNotFound) {
					return backend.Errorf(http.StatusBadRequest, backend.CodeManifestBlobUnknown, "index lists manifest %s, which is not in the repository", c.Digest)
				}
				return err
			}
		}
		return nil
	}
	descs := append([]backend.Descriptor{*m.Config}, m.Layers...)
	for i, c := range descs {
		if i > 0 && c.IsNonDistributable() {
			continue
		}
		size, ok, err := r.hasBlob(ctx, repo, c.Digest)
		if err != nil {
			return err
		}
		if !ok {
			return backend.Errorf(http.StatusBadRequest, backend.CodeManifestBlobUnknown, "manifest references blob %s, which is not in the repository", c.Digest)
		}
		if size != c.Size {
			return backend.Errorf(http.StatusBadRequest, backend.CodeManifestInvalid, "manifest gives blob %s size %d, but it has %d bytes", c.Digest, c.Size, size)
		}
	}
	return nil
}

func (r *Registry) deleteManifest(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	if err := r.Delete(req.Context(), rt.Repo, rt.Reference); err != nil {
		return err
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// Delete removes a tag, or a manifest by digest together with the tags
// that point at it and its referrer record: what DELETE
// /v2/<repo>/manifests/<ref> does, for callers inside the process (the web
// UI) that must behave exactly like the API. Errors are *backend.Error for
// what the client got wrong (deletion disabled, unknown tag or manifest).
func (r *Registry) Delete(ctx context.Context, repo, ref string) error {
	if err := r.deleteAllowed(); err != nil {
		return err
	}
	if !backend.IsDigestShaped(ref) {
		if err := r.store.DeleteRecord(ctx, repo, layout.Tag(ref)); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				return manifestUnknown(ref)
			}
			return err
		}
		return nil
	}
	d, e := backend.ParseDigest(ref)
	if e != nil {
		return e
	}
	m, err := r.loadManifest(ctx, repo, d)
	if err != nil {
		return err
	}
	// tags pointing at it go first, so no tag is left dangling
	tags, err := layout.Tags(ctx, r.store, repo)
	if err != nil {
		return err
	}
	for _, t := range tags {
		raw, err := r.store.GetRecord(ctx, repo, layout.Tag(t))
		if err == nil && strings.TrimSpace(string(raw)) == string(d) {
			if err := r.store.DeleteRecord(ctx, repo, layout.Tag(t)); err != nil && !errors.Is(err, storage.ErrNotFound) {
				return err
			}
		}
	}
	var parsed backend.Manifest
	if json.Unmarshal(m.data, &parsed) == nil && parsed.Subject != nil && parsed.Subject.Digest.Validate() == nil {
		if err := r.store.DeleteRecord(ctx, repo, layout.Referrer(parsed.Subject.Digest, d)); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
	}
	if err := r.store.DeleteRecord(ctx, repo, layout.Manifest(d)); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return manifestUnknown(ref)
		}
		return err
	}
	return nil
}

func (r *Registry) tagsList(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	ctx := req.Context()
	tags, err := layout.Tags(ctx, r.store, rt.Repo)
	if err != nil {
		return err
	}
	if len(tags) == 0 {
		ok, err := layout.RepoExists(ctx, r.store, rt.Repo)
		if err != nil {
			return err
		}
		if !ok {
			return backend.Errorf(http.StatusNotFound, backend.CodeNameUnknown, "repository %q unknown", rt.Repo)
		}
	}
	return backend.ServeTags(w, req, rt.Repo, tags)
}

func (r *Registry) catalog(w http.ResponseWriter, req *http.Request, keep func(string) bool) error {
	ctx := req.Context()
	repos, err := r.store.ListRepos(ctx)
	if err != nil {
		return err
	}
	return backend.ServeCatalog(w, req, repos, keep)
}

func (r *Registry) referrers(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	ctx := req.Context()
	subject := rt.Digest
	refs, err := layout.ReferrersOfSubject(ctx, r.store, rt.Repo, subject)
	if err != nil {
		return err
	}
	filter := req.URL.Query()["artifactType"]
	list := make([]backend.Descriptor, 0, len(refs))
	for _, ref := range refs {
		raw, err := r.store.GetRecord(ctx, rt.Repo, layout.Referrer(subject, ref))
		if err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				continue // deleted meanwhile
			}
			return err
		}
		var d backend.Descriptor
		if err := json.Unmarshal(raw, &d); err != nil {
			r.log.Warn().Err(err).Str("repo", rt.Repo).Str("referrer", string(ref)).Msg("registry: bad referrer record")
			continue
		}
		if len(filter) > 0 && !contains(filter, d.ArtifactType) {
			continue
		}
		list = append(list, d)
	}
	if len(filter) > 0 {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	return backend.WriteJSON(w, req, backend.MediaTypeOCIIndex, struct {
		SchemaVersion int                  `json:"schemaVersion"`
		MediaType     string               `json:"mediaType"`
		Manifests     []backend.Descriptor `json:"manifests"` // [] even when empty
	}{2, backend.MediaTypeOCIIndex, list})
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
