// Package regclient is the small OCI distribution client the benchmarks
// drive: uploads the way Docker makes them (POST, one streamed PATCH,
// PUT?digest=) or monolithic, blob pulls that discard the bytes, manifest
// pushes, and the login dance (Basic, or Docker's Bearer token flow).
package regclient

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options say where a registry is and how to talk to it.
type Options struct {
	// Base is the URL clients see, e.g. "https://registry.bench.test:8443".
	Base string
	// RootCAs verifies the server's certificate; nil uses the system roots.
	RootCAs *x509.CertPool
	// HTTP2 selects HTTP/2 over TLS instead of HTTP/1.1.
	HTTP2 bool
	// Conns bounds idle keep-alive connections kept per host.
	Conns int
	// User and Password are sent when the server asks for credentials.
	User, Password string
}

// NewTransport returns a transport for bulk transfers on loopback: every
// host name is dialled on 127.0.0.1 (so that certificates and Host headers
// carry the site's name), 256 KiB bufio buffers, no compression, and
// exactly the protocol asked for.
func NewTransport(o Options) *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	conns := max(o.Conns, 16)
	t := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, fmt.Errorf("dial %s: %w", addr, err)
			}
			return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
		},
		TLSClientConfig:       &tls.Config{RootCAs: o.RootCAs},
		MaxIdleConns:          conns,
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: 0,
		DisableCompression:    true,
		WriteBufferSize:       256 << 10,
		ReadBufferSize:        256 << 10,
		Protocols:             new(http.Protocols),
		// HTTP/2 keeps Go's defaults (frame size, flow-control windows):
		// that is what Docker, containerd and crane, all Go clients, send.
	}
	if o.HTTP2 {
		t.Protocols.SetHTTP2(true)
	} else {
		t.Protocols.SetHTTP1(true)
	}
	return t
}

// Client talks to one registry.
type Client struct {
	base *url.URL
	opts Options
	hc   *http.Client

	mu   sync.Mutex
	auth string // Authorization header value, "" when none is needed

	// credentialed counts requests that carried a password (Basic), each of
	// which costs a bcrypt check on servers without a credential cache.
	credentialed atomic.Int64
}

// New returns a client for o.Base.
func New(o Options) (*Client, error) {
	u, err := url.Parse(o.Base)
	if err != nil {
		return nil, fmt.Errorf("parse base url %q: %w", o.Base, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("base url %q: scheme must be http or https", o.Base)
	}
	return &Client{base: u, opts: o, hc: &http.Client{Transport: NewTransport(o)}}, nil
}

// Close drops idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Base returns the registry's base URL.
func (c *Client) Base() *url.URL { return c.base }

// AuthHeader returns the Authorization value in use ("" for none), so that
// load generators can send what a logged-in client sends.
func (c *Client) AuthHeader() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.auth
}

// CredentialedRequests counts requests sent with a password so far.
func (c *Client) CredentialedRequests() int64 { return c.credentialed.Load() }

// URL returns the absolute URL of a path below the base.
func (c *Client) URL(path string) string {
	return c.base.ResolveReference(&url.URL{Path: path}).String()
}

// do sends req with the current credentials.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	if a := c.AuthHeader(); a != "" {
		req.Header.Set("Authorization", a)
		if strings.HasPrefix(a, "Basic ") {
			c.credentialed.Add(1)
		}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	return resp, nil
}

// Do sends a request built by the caller with the client's credentials.
func (c *Client) Do(req *http.Request) (*http.Response, error) { return c.do(req) }

// Login pings /v2/ and, if the server answers with a challenge, obtains
// what the challenge asks for: Basic credentials, or a Bearer token from
// the realm for pull and push on repos. It returns the scheme in use
// ("none", "basic" or "bearer").
func (c *Client) Login(ctx context.Context, repos ...string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL("/v2/"), nil)
	if err != nil {
		return "", fmt.Errorf("ping request: %w", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("ping: %w", err)
	}
	drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
		return "none", nil
	case http.StatusUnauthorized:
	default:
		return "", fmt.Errorf("ping: unexpected status %s", resp.Status)
	}
	scheme, params := ParseChallenge(resp.Header.Get("WWW-Authenticate"))
	switch strings.ToLower(scheme) {
	case "basic":
		if c.opts.User == "" {
			return "", fmt.Errorf("ping: server wants Basic credentials, none configured")
		}
		c.setAuth("Basic " + basic(c.opts.User, c.opts.Password))
		return "basic", nil
	case "bearer":
		tok, err := c.token(ctx, params, repos)
		if err != nil {
			return "", err
		}
		c.setAuth("Bearer " + tok)
		return "bearer", nil
	default:
		return "", fmt.Errorf("ping: unsupported challenge %q", resp.Header.Get("WWW-Authenticate"))
	}
}

func (c *Client) setAuth(v string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.auth = v
}

// drain reads the rest of a small body so the connection can be reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
}

// errorf describes an unexpected response, with the start of its body.
func errorf(resp *http.Response, what string) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_ = resp.Body.Close()
	return fmt.Errorf("%s: unexpected status %s: %s", what, resp.Status, strings.TrimSpace(string(b)))
}

// Digest returns the sha256 digest string of b.
func Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// withDigest adds digest=... to an upload location, keeping its query.
func withDigest(loc *url.URL, digest string) string {
	u := *loc
	q := u.Query()
	q.Set("digest", digest)
	u.RawQuery = q.Encode()
	return u.String()
}

// startUpload POSTs a new upload session and returns its location.
func (c *Client) startUpload(ctx context.Context, repo string) (*url.URL, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL("/v2/"+repo+"/blobs/uploads/"), nil)
	if err != nil {
		return nil, fmt.Errorf("upload start request: %w", err)
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusAccepted {
		return nil, errorf(resp, "upload start")
	}
	drain(resp)
	loc, err := resp.Location()
	if err != nil {
		return nil, fmt.Errorf("upload start: %w", err)
	}
	return loc, nil
}

// finish PUTs the upload with its digest and an optional body.
func (c *Client) finish(ctx context.Context, loc *url.URL, digest string, body io.Reader, size int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, withDigest(loc, digest), body)
	if err != nil {
		return fmt.Errorf("upload finish request: %w", err)
	}
	req.ContentLength = size
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated {
		return errorf(resp, "upload finish")
	}
	drain(resp)
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != digest {
		return fmt.Errorf("upload finish: server stored %s, sent %s", got, digest)
	}
	return nil
}

// PushStreamed uploads a blob as Docker does: POST, one PATCH whose body
// streams with chunked encoding (no length), then PUT ?digest=. open gives
// the blob's bytes.
func (c *Client) PushStreamed(ctx context.Context, repo string, open func() (io.ReadCloser, error), digest string) error {
	loc, err := c.startUpload(ctx, repo)
	if err != nil {
		return err
	}
	r, err := open()
	if err != nil {
		return fmt.Errorf("open blob: %w", err)
	}
	defer r.Close()
	// Hiding the concrete type keeps net/http from learning a length.
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, loc.String(), io.NopCloser(struct{ io.Reader }{r}))
	if err != nil {
		return fmt.Errorf("patch request: %w", err)
	}
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusNoContent {
		return errorf(resp, "patch")
	}
	drain(resp)
	if l, err := resp.Location(); err == nil {
		loc = l
	}
	return c.finish(ctx, loc, digest, nil, 0)
}

// PushMonolithic uploads a blob with POST, then one PUT ?digest= carrying
// the whole body with its length.
func (c *Client) PushMonolithic(ctx context.Context, repo string, body io.Reader, size int64, digest string) error {
	loc, err := c.startUpload(ctx, repo)
	if err != nil {
		return err
	}
	return c.finish(ctx, loc, digest, body, size)
}

// PushBytes uploads a small blob monolithically and returns its digest.
func (c *Client) PushBytes(ctx context.Context, repo string, b []byte) (string, error) {
	d := Digest(b)
	if err := c.PushMonolithic(ctx, repo, strings.NewReader(string(b)), int64(len(b)), d); err != nil {
		return "", err
	}
	return d, nil
}

// PullBlob GETs a blob, discards its bytes and checks the length.
func (c *Client) PullBlob(ctx context.Context, repo, digest string, size int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL("/v2/"+repo+"/blobs/"+digest), nil)
	if err != nil {
		return fmt.Errorf("pull request: %w", err)
	}
	return c.get(req, size)
}

// VerifyBlob GETs a blob and checks that its bytes hash to digest
// (sha256), so that a fast answer is also a right one.
func (c *Client) VerifyBlob(ctx context.Context, repo, digest string, size int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL("/v2/"+repo+"/blobs/"+digest), nil)
	if err != nil {
		return fmt.Errorf("verify request: %w", err)
	}
	h := sha256.New()
	if err := c.read(req, size, h); err != nil {
		return err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("GET %s: bytes hash to %s", req.URL.Path, got)
	}
	return nil
}

// GetURL GETs an absolute URL (a static file), discards its bytes and
// checks the length.
func (c *Client) GetURL(ctx context.Context, u string, size int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("get request: %w", err)
	}
	return c.get(req, size)
}

// bufPool holds the read buffers of pulls (1 MiB, so reads bypass bufio).
var bufPool = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

func (c *Client) get(req *http.Request, size int64) error { return c.read(req, size, nil) }

// read GETs req, reads the body to the end (into sink when not nil) and
// checks the length when size >= 0.
func (c *Client) read(req *http.Request, size int64, sink io.Writer) error {
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return errorf(resp, "GET "+req.URL.Path)
	}
	defer resp.Body.Close()
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		n += int64(k)
		if sink != nil && k > 0 {
			_, _ = sink.Write(buf[:k])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("GET %s: read after %d bytes: %w", req.URL.Path, n, err)
		}
	}
	if size >= 0 && n != size {
		return fmt.Errorf("GET %s: got %d bytes, want %d", req.URL.Path, n, size)
	}
	return nil
}

// Manifest media types used by the suite.
const (
	MediaDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaDockerConfig   = "application/vnd.docker.container.image.v1+json"
	MediaDockerLayer    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	// AcceptManifests is what Docker sends when it asks for a manifest.
	AcceptManifests = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
)

// Descriptor names a blob in a manifest.
type Descriptor struct {
	MediaType string
	Digest    string
	Size      int64
}

// ImageManifest renders a Docker schema 2 manifest for config and layers.
func ImageManifest(config Descriptor, layers []Descriptor) []byte {
	var b strings.Builder
	desc := func(d Descriptor) string {
		return fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d}`, d.MediaType, d.Digest, d.Size)
	}
	b.WriteString(`{"schemaVersion":2,"mediaType":"` + MediaDockerManifest + `","config":`)
	b.WriteString(desc(config))
	b.WriteString(`,"layers":[`)
	for i, l := range layers {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(desc(l))
	}
	b.WriteString("]}")
	return []byte(b.String())
}

// PushManifest PUTs a manifest under a tag and returns its digest.
func (c *Client) PushManifest(ctx context.Context, repo, tag, mediaType string, body []byte) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.URL("/v2/"+repo+"/manifests/"+tag), strings.NewReader(string(body)))
	if err != nil {
		return "", fmt.Errorf("manifest request: %w", err)
	}
	req.Header.Set("Content-Type", mediaType)
	resp, err := c.do(req)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusCreated {
		return "", errorf(resp, "manifest put")
	}
	drain(resp)
	return Digest(body), nil
}

// GetManifest GETs a manifest and returns its body.
func (c *Client) GetManifest(ctx context.Context, repo, ref string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL("/v2/"+repo+"/manifests/"+ref), nil)
	if err != nil {
		return nil, fmt.Errorf("manifest request: %w", err)
	}
	req.Header.Set("Accept", AcceptManifests)
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, errorf(resp, "manifest get")
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("manifest get: %w", err)
	}
	return b, nil
}

// PushImage pushes a config and the given small layers plus a manifest
// under tag; it returns the manifest's digest and the layer digests.
func (c *Client) PushImage(ctx context.Context, repo, tag string, layers [][]byte) (string, []Descriptor, error) {
	var descs []Descriptor
	var diffIDs []string
	for i, l := range layers {
		d, err := c.PushBytes(ctx, repo, l)
		if err != nil {
			return "", nil, fmt.Errorf("layer %d: %w", i, err)
		}
		descs = append(descs, Descriptor{MediaDockerLayer, d, int64(len(l))})
		diffIDs = append(diffIDs, strconv.Quote(d))
	}
	cfg := []byte(`{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[` + strings.Join(diffIDs, ",") + `]}}`)
	cd, err := c.PushBytes(ctx, repo, cfg)
	if err != nil {
		return "", nil, fmt.Errorf("config: %w", err)
	}
	m := ImageManifest(Descriptor{MediaDockerConfig, cd, int64(len(cfg))}, descs)
	md, err := c.PushManifest(ctx, repo, tag, MediaDockerManifest, m)
	if err != nil {
		return "", nil, err
	}
	return md, append([]Descriptor{{MediaDockerConfig, cd, int64(len(cfg))}}, descs...), nil
}
