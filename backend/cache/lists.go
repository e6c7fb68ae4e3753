package cache

import (
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage/layout"
)

// tagsList passes the request (with n and last) to the upstream. When the
// upstream cannot answer, the tags this cache knows are listed instead.
func (c *Cache) tagsList(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	ctx, cancel := c.smallCtx(req.Context())
	defer cancel()
	q := url.Values{}
	for _, k := range []string{"n", "last"} {
		if v := req.URL.Query().Get(k); v != "" {
			q.Set(k, v)
		}
	}
	up, upRepo, err := c.upstreamFor(rt.Repo)
	if err != nil {
		return err
	}
	resp, err := up.do(ctx, http.MethodGet, "/v2/"+upRepo+"/tags/list", q, http.Header{"Accept": {"application/json"}}, upRepo)
	if err == nil {
		defer resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			relayList(w, req, resp, upRepo, rt, "Content-Type", "Content-Length")
			return nil
		case http.StatusNotFound:
			drain(resp)
			return backend.Errorf(http.StatusNotFound, backend.CodeNameUnknown, "repository %q unknown to the upstream", rt.Repo)
		case http.StatusBadRequest:
			drain(resp)
			return backend.Errorf(http.StatusBadRequest, backend.CodeUnsupported, "upstream refused the tag list query %q", q.Encode())
		}
		err = statusError(resp, "the tag list of "+rt.Repo)
		drain(resp)
	}
	tags, lerr := layout.Tags(req.Context(), c.store, rt.Repo)
	if lerr != nil || len(tags) == 0 {
		return err
	}
	c.log.Warn().Err(err).Str("repo", rt.Repo).Msg("cache: upstream failed listing tags; listing the cached ones")
	w.Header().Set("Warning", `110 - "response is stale"`)
	servedStale(req.Context())
	return backend.ServeTags(w, req, rt.Repo, tags)
}

// catalog lists the repositories this cache holds (not the upstream's).
func (c *Cache) catalog(w http.ResponseWriter, req *http.Request, keep func(string) bool) error {
	ctx := req.Context()
	repos, err := c.store.ListRepos(ctx)
	if err != nil {
		return err
	}
	return backend.ServeCatalog(w, req, repos, keep)
}

// referrers passes the request to the upstream. An upstream that cannot
// answer gives a 404, which clients take as "no referrers API" and fall
// back to the tag schema (sha256-<hex> tags, served from the cache).
func (c *Cache) referrers(w http.ResponseWriter, req *http.Request, rt *backend.Route) error {
	ctx, cancel := c.smallCtx(req.Context())
	defer cancel()
	q := url.Values{}
	if v := req.URL.Query()["artifactType"]; len(v) > 0 {
		q["artifactType"] = v
	}
	up, upRepo, err := c.upstreamFor(rt.Repo)
	if err != nil {
		return err
	}
	resp, err := up.do(ctx, http.MethodGet, "/v2/"+upRepo+"/referrers/"+rt.Reference, q,
		http.Header{"Accept": {backend.MediaTypeOCIIndex}}, upRepo)
	if err == nil {
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			relayList(w, req, resp, upRepo, rt, "Content-Type", "Content-Length", "OCI-Filters-Applied")
			return nil
		}
		err = statusError(resp, "referrers of "+rt.Reference)
		drain(resp)
	}
	if resp == nil || resp.StatusCode != http.StatusNotFound {
		c.log.Warn().Err(err).Str("repo", rt.Repo).Msg("cache: upstream failed listing referrers")
	}
	return backend.Errorf(http.StatusNotFound, backend.CodeUnsupported, "referrers of %s not available from the upstream (%v)", rt.Reference, err)
}

func copyHeaders(dst, src http.Header, keys ...string) {
	for _, k := range keys {
		if v := src.Get(k); v != "" {
			dst.Set(k, v)
		}
	}
}

// rewriteLink points a pagination Link at the client's name for the
// repository and drops the upstream's scheme and host. ns, when the
// client named the registry with ?ns=, is carried on in the link.
func rewriteLink(link, upRepo, repo, ns string) string {
	if i := strings.Index(link, "/v2/"); i >= 0 {
		if j := strings.LastIndexByte(link[:i], '<'); j >= 0 {
			link = link[:j+1] + link[i:]
		}
	}
	link = strings.Replace(link, "/v2/"+upRepo+"/", "/v2/"+repo+"/", 1)
	if ns != "" {
		if i := strings.IndexByte(link, '>'); i > 0 {
			sep := "?"
			if strings.Contains(link[:i], "?") {
				sep = "&"
			}
			link = link[:i] + sep + "ns=" + url.QueryEscape(ns) + link[i:]
		}
	}
	return link
}

// relayList passes the upstream's 200 answer to a list request (tags,
// referrers) on to the client: the named headers, the Link to the next
// page rewritten from the upstream's repository name to the client's, and
// the body.
func relayList(w http.ResponseWriter, req *http.Request, resp *http.Response, upRepo string, rt *backend.Route, headers ...string) {
	h := w.Header()
	copyHeaders(h, resp.Header, headers...)
	if link := resp.Header.Get("Link"); link != "" {
		repo := rt.Repo
		if rt.Namespace != "" {
			repo = rt.ClientRepo
		}
		h.Set("Link", rewriteLink(link, upRepo, repo, rt.Namespace))
	}
	w.WriteHeader(http.StatusOK)
	if req.Method != http.MethodHead {
		_, _ = io.Copy(w, resp.Body)
	}
}
