package backend

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// Paginate applies the n and last query parameters of a tag list or
// catalog request to a sorted list and sets the Link header of the next
// page (path is the endpoint's own path).
func Paginate(w http.ResponseWriter, req *http.Request, all []string, path string) ([]string, error) {
	q := req.URL.Query()
	out := all
	if last := q.Get("last"); last != "" {
		i := 0
		for i < len(out) && out[i] <= last {
			i++
		}
		out = out[i:]
	}
	if ns := q.Get("n"); ns != "" {
		n, err := strconv.Atoi(ns)
		if err != nil || n < 0 {
			return nil, Errorf(http.StatusBadRequest, CodeUnsupported, "invalid page size n=%q", clip(ns))
		}
		if n < len(out) {
			out = out[:n]
			if n > 0 {
				v := url.Values{}
				v.Set("n", strconv.Itoa(n))
				v.Set("last", out[n-1])
				w.Header().Set("Link", fmt.Sprintf("<%s?%s>; rel=\"next\"", path, v.Encode()))
			}
		}
	}
	if out == nil {
		out = []string{}
	}
	return out, nil
}

// WriteJSON answers 200 with v as JSON of content type ct, with its
// length; a HEAD request gets the headers only.
func WriteJSON(w http.ResponseWriter, req *http.Request, ct string, v any) error {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	h := w.Header()
	h.Set("Content-Type", ct)
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	if req.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
	return nil
}

// ServeTags answers a tag list request with one page of a sorted list.
func ServeTags(w http.ResponseWriter, req *http.Request, repo string, tags []string) error {
	page, err := Paginate(w, req, tags, "/v2/"+repo+"/tags/list")
	if err != nil {
		return err
	}
	return WriteJSON(w, req, "application/json", struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{repo, page})
}

// ServeCatalog answers a catalog request with one page of a sorted list of
// repositories, keeping only those the caller may see (Access.Catalog;
// nil keeps all).
func ServeCatalog(w http.ResponseWriter, req *http.Request, repos []string, keep func(repo string) bool) error {
	if keep != nil {
		kept := repos[:0]
		for _, n := range repos {
			if keep(n) {
				kept = append(kept, n)
			}
		}
		repos = kept
	}
	page, err := Paginate(w, req, repos, "/v2/_catalog")
	if err != nil {
		return err
	}
	return WriteJSON(w, req, "application/json", struct {
		Repositories []string `json:"repositories"`
	}{page})
}
