package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
)

// env is a registry on a real loopback server with a real directory.
type env struct {
	t    *testing.T
	root string
	reg  *Registry
	srv  *httptest.Server
}

func newEnv(t *testing.T, o Options) *env {
	t.Helper()
	if o.Root == "" {
		o.Root = t.TempDir()
	}
	e := &env{t: t, root: o.Root}
	e.start(o)
	t.Cleanup(e.stop)
	return e
}

func (e *env) start(o Options) {
	e.t.Helper()
	o.Root = e.root
	reg, err := New(context.Background(), o)
	if err != nil {
		e.t.Fatal(err)
	}
	e.reg = reg
	e.srv = httptest.NewServer(reg)
}

func (e *env) stop() {
	if e.srv != nil {
		e.srv.Close()
		e.reg.Close()
		e.srv = nil
	}
}

// restart is a new Registry on the same root, as after a process restart.
func (e *env) restart(o Options) {
	e.stop()
	e.start(o)
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r *resp) errCode() string {
	var v struct {
		Errors []backend.Error `json:"errors"`
	}
	if json.Unmarshal(r.body, &v) != nil || len(v.Errors) == 0 {
		return ""
	}
	return v.Errors[0].Code
}

// do sends one request; hdr is "Key: value" strings.
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
	if res.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
		e.t.Errorf("%s %s: no Docker-Distribution-Api-Version header", method, path)
	}
	return &resp{status: res.StatusCode, header: res.Header, body: b}
}

func (e *env) expect(r *resp, status int, code string) {
	e.t.Helper()
	if r.status != status {
		e.t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if code != "" && r.errCode() != code {
		e.t.Fatalf("error code %q, want %q; body %s", r.errCode(), code, r.body)
	}
}

// pushBlob uploads data monolithically and returns its digest.
func (e *env) pushBlob(repo string, data []byte) digest.Digest {
	e.t.Helper()
	d := digest.FromBytes(data)
	r := e.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+string(d), data, "Content-Type: application/octet-stream")
	e.expect(r, http.StatusCreated, "")
	return d
}

// pushManifest PUTs a manifest and returns the response.
func (e *env) pushManifest(repo, ref, mediaType string, body []byte) *resp {
	e.t.Helper()
	return e.do("PUT", "/v2/"+repo+"/manifests/"+ref, body, "Content-Type: "+mediaType)
}

// image pushes a config and layers to repo and returns an OCI manifest
// (not pushed) referencing them.
func (e *env) image(repo string, layers ...string) []byte {
	e.t.Helper()
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","n":%q}`, strings.Join(layers, ",")))
	cd := e.pushBlob(repo, cfg)
	var ls []string
	for _, l := range layers {
		ld := e.pushBlob(repo, []byte(l))
		ls = append(ls, fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":%q,"size":%d}`, ld, len(l)))
	}
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[%s]}`,
		backend.MediaTypeOCIManifest, cd, len(cfg), strings.Join(ls, ",")))
}
