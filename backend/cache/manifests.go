package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/layout"
)

// Records kept per repository (the name the client uses):
//
//	tags/<tag>                  JSON tagRecord: the upstream's answer and when it was checked
//	manifests/<alg>/<hex>       the manifest's media type (content in the global blob store)
//	blobs/<alg>/<hex>           link: the upstream confirmed this blob for this repository
//
// (package layout spells the keys: layout.Tag, layout.Manifest,
// layout.BlobLink).

// allManifestTypes is what the cache asks the upstream for, so the answer
// for a tag is the same whatever client asked first (an index stays an
// index, a Docker schema 2 image stays one).
var allManifestTypes = []string{
	backend.MediaTypeOCIIndex,
	backend.MediaTypeDockerManifestList,
	backend.MediaTypeOCIManifest,
	backend.MediaTypeDockerManifest,
}

var acceptAll = strings.Join(allManifestTypes, ", ")

// tagRecord is what the upstream said a tag pointed at, and when.
type tagRecord struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Size      int64         `json:"size"`
	Checked   time.Time     `json:"checked"`
}

type manifest struct {
	digest    digest.Digest
	mediaType string
	data      []byte
}

func manifestUnknown(ref string) error {
	return backend.Errorf(http.StatusNotFound, backend.CodeManifestUnknown, "manifest %q unknown to the upstream", clip(ref))
}

// acceptsAll reports whether the client takes every manifest type, so the
// cache's canonical answer for a tag fits it.
func acceptsAll(rt *backend.Route) bool {
	for _, t := range allManifestTypes {
		if !rt.Accepts(t) {
			return false
		}
	}
	return true
}

func (c *Cache) getManifest(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	switch {
	case rt.BadDigest != nil:
		return rt.BadDigest
	case rt.Digest != "":
		return c.manifestByDigest(w, req, rt.Repo, rt.Digest)
	}
	return c.manifestByTag(w, req, rt)
}

// manifestByDigest serves a manifest pinned by digest: from the cache, or
// fetched, verified and stored.
func (c *Cache) manifestByDigest(w http.ResponseWriter, req *http.Request, repo string, d digest.Digest) error {
	ctx := req.Context()
	m, err := c.loadManifest(ctx, repo, d)
	if err == nil {
		serveManifest(w, req, m)
		return nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if req.Method == http.MethodHead {
		// A HEAD does not fetch content (Docker Hub counts manifest
		// GETs against its pull limit, not HEADs).
		rec, err := c.headManifest(ctx, repo, string(d), c.acceptFor(req))
		if err != nil {
			if errors.Is(err, errNoDigest) {
				return c.fetchAndServe(w, req, repo, string(d), d)
			}
			return err
		}
		if rec.Digest != d {
			c.digestMismatch(repo)
			return upstreamMismatch(d, rec.Digest)
		}
		serveManifestHead(w, rec)
		return nil
	}
	return c.fetchAndServe(w, req, repo, string(d), d)
}

// acceptFor is the Accept header sent upstream for a digest: every
// manifest type plus whatever else the client named.
func (c *Cache) acceptFor(req *http.Request) string {
	a := acceptAll
	for _, v := range req.Header.Values("Accept") {
		a += ", " + v
	}
	return a
}

func (c *Cache) fetchAndServe(w http.ResponseWriter, req *http.Request, repo, ref string, want digest.Digest) error {
	m, err := c.fetchManifest(req.Context(), repo, ref, c.acceptFor(req), want)
	if err != nil {
		return err
	}
	serveManifest(w, req, m)
	return nil
}

// manifestByTag serves a tag: from the cache while the answer is younger
// than the TTL, else after asking the upstream (a HEAD; content is fetched
// only when the digest changed). When the upstream cannot answer, the last
// known answer is served.
func (c *Cache) manifestByTag(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	ctx, repo, tag := req.Context(), rt.Repo, rt.Tag
	rec, err := c.readTag(ctx, repo, tag)
	if err != nil {
		return err
	}
	if rec != nil {
		c.usedRecord(ctx, repo, layout.Tag(tag))
	}
	if !acceptsAll(rt) {
		return c.manifestByTagRestricted(w, req, rt, rec)
	}
	now := c.now()
	if rec != nil && now.Sub(rec.Checked) < c.ttl {
		return c.serveRecord(w, req, repo, rec)
	}
	if rec != nil {
		fresh, err := c.headManifest(ctx, repo, tag, acceptAll)
		var be *backend.Error
		switch {
		case errors.As(err, &be) && be.Code == backend.CodeManifestUnknown:
			// The tag is gone upstream: forget it.
			if derr := c.store.DeleteRecord(ctx, repo, layout.Tag(tag)); derr != nil && !errors.Is(derr, storage.ErrNotFound) {
				c.log.Warn().Err(derr).Str("repo", repo).Str("tag", tag).Msg("cache: drop tag")
			}
			return err
		case errors.Is(err, errNoDigest):
			// the upstream's HEAD says nothing useful: GET below
		case err != nil:
			if m, lerr := c.loadManifest(ctx, repo, rec.Digest); lerr == nil {
				c.log.Warn().Err(err).Str("repo", repo).Str("tag", tag).Str("digest", string(rec.Digest)).
					Dur("age", now.Sub(rec.Checked)).Msg("cache: upstream failed revalidating a tag; serving the cached answer")
				w.Header().Set("Warning", `110 - "response is stale"`)
				servedStale(ctx)
				serveManifest(w, req, m)
				return nil
			}
			return err
		case fresh.Digest == rec.Digest:
			rec.Checked = now
			if fresh.MediaType != "" {
				rec.MediaType = fresh.MediaType
			}
			if err := c.writeTag(ctx, repo, tag, rec); err != nil {
				return err
			}
			return c.serveRecord(w, req, repo, rec)
		default:
			if req.Method == http.MethodHead {
				fresh.Checked = now
				if err := c.writeTag(ctx, repo, tag, fresh); err != nil {
					return err
				}
				return c.serveRecord(w, req, repo, fresh)
			}
		}
	} else if req.Method == http.MethodHead {
		fresh, err := c.headManifest(ctx, repo, tag, acceptAll)
		if err == nil {
			fresh.Checked = now
			if err := c.writeTag(ctx, repo, tag, fresh); err != nil {
				return err
			}
			serveManifestHead(w, fresh)
			return nil
		}
		if !errors.Is(err, errNoDigest) {
			return err
		}
	}
	m, err := c.fetchTag(ctx, repo, tag)
	if err != nil {
		return err
	}
	serveManifest(w, req, m)
	return nil
}

// serveRecord answers from a tag record that is known to be current; the
// content is fetched by digest if only the HEAD answer was kept.
func (c *Cache) serveRecord(w http.ResponseWriter, req *http.Request, repo string, rec *tagRecord) error {
	ctx := req.Context()
	m, err := c.loadManifest(ctx, repo, rec.Digest)
	if err == nil {
		serveManifest(w, req, m)
		return nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if req.Method == http.MethodHead {
		serveManifestHead(w, rec)
		return nil
	}
	m, err = c.fetchManifest(ctx, repo, string(rec.Digest), acceptAll, rec.Digest)
	if err != nil {
		return err
	}
	serveManifest(w, req, m)
	return nil
}

// manifestByTagRestricted serves a client that does not take every
// manifest type (an old client that cannot read an index, say). The
// canonical answer is used when its type fits; otherwise the client's
// Accept goes upstream and the answer is cached by digest only.
func (c *Cache) manifestByTagRestricted(w http.ResponseWriter, req *http.Request, rt *backend.Route, rec *tagRecord) error {
	ctx, repo, tag := req.Context(), rt.Repo, rt.Tag
	if rec != nil && c.now().Sub(rec.Checked) < c.ttl && rt.Accepts(rec.MediaType) {
		return c.serveRecord(w, req, repo, rec)
	}
	accept := strings.Join(req.Header.Values("Accept"), ", ")
	m, err := c.fetchManifest(ctx, repo, tag, accept, "")
	if err != nil {
		var ue *upstreamError
		if errors.As(err, &ue) && rec != nil && rt.Accepts(rec.MediaType) {
			if m, lerr := c.loadManifest(ctx, repo, rec.Digest); lerr == nil {
				c.log.Warn().Err(err).Str("repo", repo).Str("tag", tag).Msg("cache: upstream failed; serving the cached answer")
				serveManifest(w, req, m)
				return nil
			}
		}
		return err
	}
	serveManifest(w, req, m)
	return nil
}

func (c *Cache) readTag(ctx context.Context, repo, tag string) (*tagRecord, error) {
	raw, err := c.store.GetRecord(ctx, repo, layout.Tag(tag))
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("read tag %s:%s: %w", repo, tag, err)
	}
	var rec tagRecord
	if err := json.Unmarshal(raw, &rec); err != nil || rec.Digest.Validate() != nil {
		c.log.Warn().Str("repo", repo).Str("tag", tag).Msg("cache: unreadable tag record; asking the upstream")
		return nil, nil
	}
	return &rec, nil
}

func (c *Cache) writeTag(ctx context.Context, repo, tag string, rec *tagRecord) error {
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := c.store.PutRecord(ctx, repo, layout.Tag(tag), raw); err != nil {
		return fmt.Errorf("write tag %s:%s: %w", repo, tag, err)
	}
	return nil
}

// loadManifest reads a cached manifest; storage.ErrNotFound when the
// repository has no such manifest.
func (c *Cache) loadManifest(ctx context.Context, repo string, d digest.Digest) (*manifest, error) {
	mt, err := c.store.GetRecord(ctx, repo, layout.Manifest(d))
	if err != nil {
		return nil, err
	}
	data, err := storage.ReadBlob(ctx, c.store, d, backend.MaxManifestSize)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("cached manifest: %w", err)
	}
	c.usedRecord(ctx, repo, layout.Manifest(d))
	c.usedBlob(ctx, d)
	return &manifest{digest: d, mediaType: string(mt), data: data}, nil
}

var errNoDigest = errors.New("upstream HEAD gave no Docker-Content-Digest")

// headManifest asks the upstream what ref points at, without content;
// concurrent identical questions share one request.
func (c *Cache) headManifest(ctx context.Context, repo, ref, accept string) (*tagRecord, error) {
	askedUpstream(ctx)
	rec, err := c.heads.do(ctx, repo+"\x00"+ref+"\x00"+accept, func() (*tagRecord, error) {
		return c.headManifestOnce(ctx, repo, ref, accept)
	})
	if err != nil {
		return nil, err
	}
	cp := *rec // callers update their copy
	return &cp, nil
}

func (c *Cache) headManifestOnce(ctx context.Context, repo, ref, accept string) (*tagRecord, error) {
	ctx, cancel := c.smallCtx(ctx)
	defer cancel()
	up, path, upRepo, err := c.upReq(repo, "manifests", ref)
	if err != nil {
		return nil, err
	}
	resp, err := up.do(ctx, http.MethodHead, path, nil, http.Header{"Accept": {accept}}, upRepo)
	if err != nil {
		return nil, err
	}
	drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, manifestUnknown(ref)
	default:
		return nil, statusError(resp, "manifest "+clip(ref))
	}
	d, perr := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if perr != nil {
		return nil, errNoDigest
	}
	return &tagRecord{Digest: d, MediaType: resp.Header.Get("Content-Type"), Size: resp.ContentLength}, nil
}

// fetchManifest GETs ref from the upstream, checks the content against
// want (a digest reference) or the upstream's Docker-Content-Digest, and
// stores it for repo. Content that does not match is a 502 and is not
// stored. Concurrent identical fetches share one upstream request.
func (c *Cache) fetchManifest(ctx context.Context, repo, ref, accept string, want digest.Digest) (*manifest, error) {
	askedUpstream(ctx)
	return c.manifests.do(ctx, "get\x00"+repo+"\x00"+ref+"\x00"+accept+"\x00"+string(want), func() (*manifest, error) {
		return c.fetchManifestOnce(ctx, repo, ref, accept, want)
	})
}

// fetchTag fetches a tag with every manifest type accepted and records the
// answer; concurrent misses of one tag share it.
func (c *Cache) fetchTag(ctx context.Context, repo, tag string) (*manifest, error) {
	askedUpstream(ctx)
	return c.manifests.do(ctx, "tag\x00"+repo+"\x00"+tag, func() (*manifest, error) {
		m, err := c.fetchManifestOnce(ctx, repo, tag, acceptAll, "")
		if err != nil {
			return nil, err
		}
		rec := &tagRecord{Digest: m.digest, MediaType: m.mediaType, Size: int64(len(m.data)), Checked: c.now()}
		if err := c.writeTag(ctx, repo, tag, rec); err != nil {
			return nil, err
		}
		return m, nil
	})
}

func (c *Cache) fetchManifestOnce(ctx context.Context, repo, ref, accept string, want digest.Digest) (*manifest, error) {
	ctx, cancel := c.smallCtx(ctx)
	defer cancel()
	up, path, upRepo, err := c.upReq(repo, "manifests", ref)
	if err != nil {
		return nil, err
	}
	resp, err := up.do(ctx, http.MethodGet, path, nil, http.Header{"Accept": {accept}}, upRepo)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, manifestUnknown(ref)
	default:
		drain(resp)
		return nil, statusError(resp, "manifest "+clip(ref))
	}
	if resp.ContentLength > backend.MaxManifestSize {
		return nil, &upstreamError{status: http.StatusBadGateway, msg: fmt.Sprintf("upstream manifest %s is larger than %d bytes", clip(ref), backend.MaxManifestSize)}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, backend.MaxManifestSize+1))
	if err != nil {
		return nil, &upstreamError{err: err, msg: fmt.Sprintf("reading manifest %s from the upstream", clip(ref))}
	}
	if len(data) > backend.MaxManifestSize {
		return nil, &upstreamError{status: http.StatusBadGateway, msg: fmt.Sprintf("upstream manifest %s is larger than %d bytes", clip(ref), backend.MaxManifestSize)}
	}
	named := want
	if named == "" {
		if d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil {
			named = d
		}
	}
	var d digest.Digest
	if named != "" {
		if !named.Algorithm().Available() {
			return nil, &upstreamError{status: http.StatusBadGateway, msg: fmt.Sprintf("upstream digest %s uses an unsupported algorithm", named)}
		}
		d = named.Algorithm().FromBytes(data)
		if d != named {
			c.digestMismatch(repo)
			c.log.Error().Str("repo", repo).Str("ref", ref).Str("want", string(named)).Str("got", string(d)).Msg("cache: upstream sent a manifest that does not match its digest; not stored")
			return nil, upstreamMismatch(named, d)
		}
	} else {
		d = digest.SHA256.FromBytes(data)
	}
	mt := resp.Header.Get("Content-Type")
	if mt == "" || mt == "application/octet-stream" {
		var probe struct {
			MediaType string `json:"mediaType"`
		}
		if json.Unmarshal(data, &probe) == nil && probe.MediaType != "" {
			mt = probe.MediaType
		}
	}
	if mt == "" {
		return nil, &upstreamError{status: http.StatusBadGateway, msg: fmt.Sprintf("upstream manifest %s has no media type", clip(ref))}
	}
	// Content first, then the link: a crash never leaves a record that
	// names missing content.
	if err := c.store.PutBlob(ctx, d, data); err != nil {
		return nil, fmt.Errorf("store manifest %s: %w", d, err)
	}
	c.budget.added(int64(len(data)))
	if err := c.store.PutRecord(ctx, repo, layout.Manifest(d), []byte(mt)); err != nil {
		return nil, fmt.Errorf("store manifest %s: %w", d, err)
	}
	return &manifest{digest: d, mediaType: mt, data: data}, nil
}

func upstreamMismatch(want, got digest.Digest) error {
	return &upstreamError{status: http.StatusBadGateway, msg: fmt.Sprintf("upstream sent content for %s that hashes to %s; nothing was stored", want, got)}
}

func serveManifest(w http.ResponseWriter, req *http.Request, m *manifest) {
	h := w.Header()
	h.Set("Content-Type", m.mediaType)
	h.Set("Docker-Content-Digest", string(m.digest))
	h.Set("ETag", `"`+string(m.digest)+`"`)
	h.Set("Content-Length", strconv.Itoa(len(m.data)))
	if inm := req.Header.Get("If-None-Match"); inm != "" && strings.Contains(inm, string(m.digest)) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.WriteHeader(http.StatusOK)
	if req.Method != http.MethodHead {
		_, _ = w.Write(m.data)
	}
}

func serveManifestHead(w http.ResponseWriter, rec *tagRecord) {
	h := w.Header()
	if rec.MediaType != "" {
		h.Set("Content-Type", rec.MediaType)
	}
	h.Set("Docker-Content-Digest", string(rec.Digest))
	h.Set("ETag", `"`+string(rec.Digest)+`"`)
	if rec.Size >= 0 {
		h.Set("Content-Length", strconv.FormatInt(rec.Size, 10))
	}
	w.WriteHeader(http.StatusOK)
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
