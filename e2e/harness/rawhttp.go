package harness

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// RawClient speaks the distribution API over plain HTTP without any client
// library, for tests that must see exact status codes and headers.
type RawClient struct {
	// Base is the registry's base URL ("http://127.0.0.1:port").
	Base string
	// HTTP is the client used; a fresh one if nil.
	HTTP *http.Client
}

// NewRawClient returns a RawClient for base with its own connection pool.
func NewRawClient(base string) *RawClient {
	return &RawClient{Base: base, HTTP: &http.Client{
		Timeout:   commandTimeout,
		Transport: http.DefaultTransport.(*http.Transport).Clone(),
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}}
}

// Response is a fully read HTTP response.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends one request to Base+path and reads the whole answer.
func (c *RawClient) Do(t testing.TB, method, path string, header http.Header, body []byte) *Response {
	t.Helper()
	req, err := http.NewRequest(method, c.Base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if body == nil {
		req.Body = http.NoBody
		req.ContentLength = 0
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// GetBlob GETs a blob as a registry client does: a 307 to the storage
// (wharf on S3 with redirect = true) is followed, without the
// registry's headers; the other answers are returned as they are.
func (c *RawClient) GetBlob(t testing.TB, repo, digest string) *Response {
	t.Helper()
	r := c.Do(t, http.MethodGet, "/v2/"+repo+"/blobs/"+digest, nil, nil)
	if r.Status != http.StatusTemporaryRedirect || r.Header.Get("Location") == "" {
		return r
	}
	res, err := c.HTTP.Get(r.Header.Get("Location"))
	if err != nil {
		t.Fatalf("GET blob %s: follow the redirect: %v", digest, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("GET blob %s: read the redirected body: %v", digest, err)
	}
	return &Response{Status: res.StatusCode, Header: res.Header, Body: b}
}

// PushBlob uploads b to repo in one POST ?digest= request (falling back to
// POST + PUT if the registry answers 202 without taking the blob) and
// returns its descriptor with mediaType.
func (c *RawClient) PushBlob(t testing.TB, repo, mediaType string, b []byte) v1.Descriptor {
	t.Helper()
	d := sha256Hash(b)
	h := http.Header{"Content-Type": {"application/octet-stream"}}
	r := c.Do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+url.QueryEscape(d.String()), h, b)
	switch r.Status {
	case http.StatusCreated:
	case http.StatusAccepted:
		loc, err := c.resolve(r.Header.Get("Location"))
		if err != nil {
			t.Fatalf("upload location: %v", err)
		}
		sep := "?"
		if bytes.ContainsRune([]byte(loc), '?') {
			sep = "&"
		}
		r = c.Do(t, http.MethodPut, loc+sep+"digest="+url.QueryEscape(d.String()), h, b)
		if r.Status != http.StatusCreated {
			t.Fatalf("PUT blob %s: %d %s", d, r.Status, r.Body)
		}
	default:
		t.Fatalf("POST blob %s: %d %s", d, r.Status, r.Body)
	}
	return v1.Descriptor{MediaType: mediaTypeOf(mediaType), Digest: d, Size: int64(len(b))}
}

// resolve turns a Location header into a path relative to Base.
func (c *RawClient) resolve(loc string) (string, error) {
	base, err := url.Parse(c.Base)
	if err != nil {
		return "", fmt.Errorf("base %q: %w", c.Base, err)
	}
	u, err := base.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("location %q: %w", loc, err)
	}
	if u.Host != base.Host {
		return "", fmt.Errorf("location %q points at another host than %s", loc, base.Host)
	}
	return u.RequestURI(), nil
}

// PutManifest uploads a manifest under ref (a tag or digest) and returns
// the answer (callers check Status and headers such as OCI-Subject).
func (c *RawClient) PutManifest(t testing.TB, repo, ref, mediaType string, body []byte) *Response {
	t.Helper()
	return c.Do(t, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, http.Header{"Content-Type": {mediaType}}, body)
}

// WaitHTTP polls GET base+path until it answers with any HTTP status, for
// servers whose readiness means "answers HTTP" rather than "accepts TCP".
func WaitHTTP(t testing.TB, base, path string) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(readyTimeout)
	for {
		resp, err := c.Get(base + path)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%s never answered: %v", base, path, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StreamedPatch is a PATCH whose body the test writes piece by piece, to
// kill the server while the body is on its way.
type StreamedPatch struct {
	pw   *io.PipeWriter
	done chan error
}

// StartPatch sends a PATCH of path (relative to c.Base) whose body comes
// from Write. The request's end goes to Cut; an answer counts as an
// error there, since the callers cut the request before it can come.
func (c *RawClient) StartPatch(t testing.TB, path string) *StreamedPatch {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPatch, c.Base+path, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	p := &StreamedPatch{pw: pw, done: make(chan error, 1)}
	go func() {
		resp, err := c.HTTP.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			err = fmt.Errorf("%w: %s %s", errAnswered, resp.Status, body)
		}
		p.done <- err
	}()
	return p
}

var errAnswered = errors.New("the streamed PATCH was answered before it was cut")

// Write sends b and returns once the server has taken it; it fails the
// test, instead of waiting for ever, if the request ends first.
func (p *StreamedPatch) Write(t testing.TB, b []byte) {
	t.Helper()
	wrote := make(chan error, 1)
	go func() {
		_, err := p.pw.Write(b)
		wrote <- err
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatalf("stream PATCH body: %v", err)
		}
	case err := <-p.done:
		t.Fatalf("streamed PATCH ended before its body was sent: %v", err)
	}
}

// Cut ends the body (after the server was killed) and fails the test if
// the server had answered the PATCH.
func (p *StreamedPatch) Cut(t testing.TB) {
	t.Helper()
	p.pw.CloseWithError(io.ErrClosedPipe)
	if err := <-p.done; errors.Is(err, errAnswered) {
		t.Fatal(err)
	}
}
