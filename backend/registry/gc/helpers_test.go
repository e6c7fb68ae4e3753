package gc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
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
)

// env is the real registry handler on a loopback server over a real
// directory; gc opens the same directory through its own store, as
// `wharf gc` does next to a running `wharf serve`.
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

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (e *env) do(method, path string, body []byte, hdr ...string) *resp {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
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
	return &resp{status: res.StatusCode, header: res.Header, body: b}
}

func (e *env) must(r *resp, status int, what string) *resp {
	e.t.Helper()
	if r.status != status {
		e.t.Fatalf("%s: status %d, want %d; body %s", what, r.status, status, r.body)
	}
	return r
}

func (e *env) pushBlob(repo string, data []byte) digest.Digest {
	e.t.Helper()
	d := digest.FromBytes(data)
	e.must(e.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+string(d), data), http.StatusCreated, "push blob")
	return d
}

type desc struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
}

// image pushes a config and the layers to repo and returns an OCI manifest
// (not pushed) that uses them; subject, if set, makes it a referrer.
func (e *env) image(repo string, subject *desc, layers ...string) []byte {
	e.t.Helper()
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","layers":%q}`, strings.Join(layers, ",")))
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     backend.MediaTypeOCIManifest,
		"config":        desc{"application/vnd.oci.image.config.v1+json", e.pushBlob(repo, cfg), int64(len(cfg))},
	}
	ls := []desc{}
	for _, l := range layers {
		ls = append(ls, desc{"application/vnd.oci.image.layer.v1.tar+gzip", e.pushBlob(repo, []byte(l)), int64(len(l))})
	}
	m["layers"] = ls
	if subject != nil {
		m["subject"] = subject
		m["artifactType"] = "application/vnd.example.signature"
	}
	b, err := json.Marshal(m)
	if err != nil {
		e.t.Fatal(err)
	}
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

// put PUTs manifest body as repo:ref and returns its digest.
func (e *env) put(repo, ref string, body []byte) digest.Digest {
	e.t.Helper()
	var m struct{ MediaType string }
	_ = json.Unmarshal(body, &m)
	r := e.must(e.do("PUT", "/v2/"+repo+"/manifests/"+ref, body, "Content-Type: "+m.MediaType), http.StatusCreated, "put manifest "+repo+":"+ref)
	return digest.Digest(r.header.Get("Docker-Content-Digest"))
}

func (e *env) status(method, path string) int {
	e.t.Helper()
	return e.do(method, path, nil).status
}

func (e *env) hasBlobFile(d digest.Digest) bool {
	_, err := os.Stat(filepath.Join(e.root, "blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded()))
	return err == nil
}

// age makes everything stored so far look older than the default grace
// period by moving file times back by two hours.
func (e *env) age() {
	e.t.Helper()
	old := time.Now().Add(-2 * time.Hour)
	for _, dir := range []string{"blobs", "repositories"} {
		err := filepath.WalkDir(filepath.Join(e.root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			return os.Chtimes(p, old, old)
		})
		if err != nil {
			e.t.Fatal(err)
		}
	}
}

type run struct {
	res   *Result
	items []string // "manifest repo@d", "blob d", "link repo d"
}

func (r *run) has(kind Kind, repo string, d digest.Digest) bool {
	for _, it := range r.items {
		if it == itemString(Item{Kind: kind, Repo: repo, Digest: d}) {
			return true
		}
	}
	return false
}

func itemString(it Item) string {
	return strings.TrimSpace(fmt.Sprintf("%s %s %s", it.Kind, it.Repo, it.Digest))
}

// gc runs the collector on e's root through a store of its own.
func (e *env) gc(o Options) *run {
	e.t.Helper()
	st, err := localfs.New(localfs.Options{Root: e.root})
	if err != nil {
		e.t.Fatal(err)
	}
	defer st.Close()
	r := &run{}
	o.Report = func(it Item) { r.items = append(r.items, itemString(it)) }
	res, err := Run(context.Background(), st, o)
	if err != nil {
		e.t.Fatalf("gc: %v", err)
	}
	r.res = res
	sort.Strings(r.items)
	return r
}

// pullsCompletely fetches every manifest revision left in every repository
// through the API, checks its digest, and fetches and verifies every blob
// and child manifest it names. It returns how many manifests it pulled.
func (e *env) pullsCompletely() int {
	e.t.Helper()
	st, err := localfs.New(localfs.Options{Root: e.root})
	if err != nil {
		e.t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	repos, err := st.ListRepos(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	n := 0
	for _, repo := range repos {
		algs, _ := st.ListRecords(ctx, repo, "manifests")
		for _, a := range algs {
			hexes, _ := st.ListRecords(ctx, repo, "manifests/"+a)
			for _, h := range hexes {
				e.pullManifest(repo, digest.NewDigestFromEncoded(digest.Algorithm(a), h))
				n++
			}
		}
		tags, _ := st.ListRecords(ctx, repo, "tags")
		for _, tag := range tags {
			r := e.must(e.do("GET", "/v2/"+repo+"/manifests/"+tag, nil), http.StatusOK, "pull "+repo+":"+tag)
			e.pullManifest(repo, digest.FromBytes(r.body))
		}
	}
	return n
}

func (e *env) pullManifest(repo string, d digest.Digest) {
	e.t.Helper()
	r := e.must(e.do("GET", "/v2/"+repo+"/manifests/"+string(d), nil), http.StatusOK, "pull manifest "+repo+"@"+string(d))
	if got := d.Algorithm().FromBytes(r.body); got != d {
		e.t.Fatalf("manifest %s@%s has digest %s", repo, d, got)
	}
	var m backend.Manifest
	if err := json.Unmarshal(r.body, &m); err != nil {
		e.t.Fatal(err)
	}
	var blobs []digest.Digest
	if m.Config != nil {
		blobs = append(blobs, m.Config.Digest)
	}
	for _, l := range m.Layers {
		blobs = append(blobs, l.Digest)
	}
	for _, b := range blobs {
		r := e.must(e.do("GET", "/v2/"+repo+"/blobs/"+string(b), nil), http.StatusOK, "pull blob "+string(b)+" of "+repo+"@"+string(d))
		if got := b.Algorithm().FromBytes(r.body); got != b {
			e.t.Fatalf("blob %s of %s has digest %s", b, repo, got)
		}
	}
	for _, c := range m.Manifests {
		e.pullManifest(repo, c.Digest)
	}
}

// tree lists every file below root with its size and time, to show that a
// dry run changed nothing.
func (e *env) tree() string {
	e.t.Helper()
	var b strings.Builder
	for _, dir := range []string{"blobs", "repositories"} {
		err := filepath.WalkDir(filepath.Join(e.root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "%s %d %d\n", p, fi.Size(), fi.ModTime().UnixNano())
			return nil
		})
		if err != nil {
			e.t.Fatal(err)
		}
	}
	return b.String()
}
