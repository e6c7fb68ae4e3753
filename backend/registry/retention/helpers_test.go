package retention

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/registry"
	"github.com/wharf-dev/wharf/backend/storage/localfs"
	"github.com/wharf-dev/wharf/internal/conf"
)

// env is the real registry handler over a real directory; retention opens
// the same directory through its own store, as `wharf gc` and the
// scheduled clean-up do next to a serving registry.
type env struct {
	t    *testing.T
	root string
	srv  *httptest.Server
}

func newEnv(t *testing.T) *env {
	t.Helper()
	root := t.TempDir()
	reg, err := registry.New(context.Background(), registry.Options{Root: root, Delete: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg)
	t.Cleanup(func() { srv.Close(); reg.Close() })
	return &env{t: t, root: root, srv: srv}
}

func (e *env) do(method, path string, body []byte, ctype string) (int, http.Header, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return res.StatusCode, res.Header, b
}

type desc struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
}

func (e *env) blob(repo string, data []byte) desc {
	e.t.Helper()
	d := digest.FromBytes(data)
	if st, _, b := e.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+string(d), data, ""); st != http.StatusCreated {
		e.t.Fatalf("push blob: %d %s", st, b)
	}
	return desc{"application/vnd.oci.image.layer.v1.tar+gzip", d, int64(len(data))}
}

// image pushes a unique config and layer and returns an OCI manifest
// (not yet pushed); subject makes it a referrer.
func (e *env) image(repo, name string, subject *desc) []byte {
	e.t.Helper()
	cfg := e.blob(repo, []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","name":%q}`, name)))
	cfg.MediaType = "application/vnd.oci.image.config.v1+json"
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     backend.MediaTypeOCIManifest,
		"config":        cfg,
		"layers":        []desc{e.blob(repo, []byte("layer of "+name))},
	}
	if subject != nil {
		m["subject"] = subject
		m["artifactType"] = "application/vnd.example.signature"
	}
	b, _ := json.Marshal(m)
	return b
}

func index(children ...[]byte) []byte {
	var ms []desc
	for _, c := range children {
		ms = append(ms, desc{backend.MediaTypeOCIManifest, digest.FromBytes(c), int64(len(c))})
	}
	b, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": backend.MediaTypeOCIIndex, "manifests": ms})
	return b
}

func descOf(body []byte) *desc {
	var m struct{ MediaType string }
	_ = json.Unmarshal(body, &m)
	return &desc{m.MediaType, digest.FromBytes(body), int64(len(body))}
}

// put PUTs a manifest as repo:ref and returns its digest.
func (e *env) put(repo, ref string, body []byte) digest.Digest {
	e.t.Helper()
	st, h, b := e.do("PUT", "/v2/"+repo+"/manifests/"+ref, body, descOf(body).MediaType)
	if st != http.StatusCreated {
		e.t.Fatalf("put %s:%s: %d %s", repo, ref, st, b)
	}
	return digest.Digest(h.Get("Docker-Content-Digest"))
}

// at sets the push time of a tag or manifest record, simulating a push
// at that time.
func (e *env) tagAt(repo, tag string, t time.Time) {
	e.t.Helper()
	e.chtimes(filepath.Join(e.root, "repositories", repo, "_tags", tag), t)
}

func (e *env) manifestAt(repo string, d digest.Digest, t time.Time) {
	e.t.Helper()
	e.chtimes(filepath.Join(e.root, "repositories", repo, "_manifests", string(d.Algorithm()), d.Encoded()), t)
}

func (e *env) chtimes(p string, t time.Time) {
	e.t.Helper()
	if err := os.Chtimes(p, t, t); err != nil {
		e.t.Fatal(err)
	}
}

// apply runs retention over e's root through a store of its own.
func (e *env) apply(o Options) (*Result, []Item) {
	e.t.Helper()
	st, err := localfs.New(localfs.Options{Root: e.root})
	if err != nil {
		e.t.Fatal(err)
	}
	defer st.Close()
	var items []Item
	o.Report = func(it Item) { items = append(items, it) }
	if o.Grace == 0 {
		o.Grace = -1
	}
	res, err := Apply(context.Background(), st, o)
	if err != nil {
		e.t.Fatalf("retention: %v", err)
	}
	return res, items
}

// tags lists repo's tags through the API.
func (e *env) tags(repo string) []string {
	e.t.Helper()
	st, _, b := e.do("GET", "/v2/"+repo+"/tags/list", nil, "")
	if st != http.StatusOK {
		e.t.Fatalf("tags/list %s: %d %s", repo, st, b)
	}
	var l struct{ Tags []string }
	if err := json.Unmarshal(b, &l); err != nil {
		e.t.Fatal(err)
	}
	sort.Strings(l.Tags)
	return l.Tags
}

// has reports whether repo@d answers 200.
func (e *env) has(repo string, d digest.Digest) bool {
	e.t.Helper()
	st, _, _ := e.do("HEAD", "/v2/"+repo+"/manifests/"+string(d), nil, "")
	return st == http.StatusOK
}

func lines(items []Item) string {
	var s []string
	for _, it := range items {
		s = append(s, it.String())
	}
	return strings.Join(s, "\n")
}

func dur(d time.Duration) *conf.Duration { v := conf.Duration(d); return &v }
