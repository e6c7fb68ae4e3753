// Package proxy is the "proxy" backend: a streaming reverse proxy to a
// registry the user already runs (registry:2 on 127.0.0.1:5000, say).
//
// Bodies stream in both directions with no size limit and no buffering;
// X-Forwarded-For/-Proto/-Host tell the upstream who the client is and
// which scheme and host it used, and absolute Location headers that point
// at the upstream are rewritten to the address the client sees. Every
// answer carries Docker-Distribution-Api-Version, upstream errors and the
// proxy's own 502 included.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend"
)

// Options configure a Proxy.
type Options struct {
	// Upstream is the registry's base URL: http:// or https://, host and
	// optional port, no path ("http://127.0.0.1:5000").
	Upstream string
	// PreserveHost sends the client's Host header upstream instead of the
	// upstream's own host name. Either way X-Forwarded-Host carries it.
	PreserveHost bool
	// TLSClientConfig is used for an https upstream (extra roots, client
	// certificates). Nil means the system roots.
	TLSClientConfig *tls.Config
	// ResponseHeaderTimeout bounds the wait for the upstream's response
	// headers once the request body is sent. Zero means DefaultResponseHeaderTimeout.
	ResponseHeaderTimeout time.Duration
	// Transport replaces the built-in transport (tests).
	Transport http.RoundTripper
	// Log receives upstream errors; the request's logger from
	// zerolog.Ctx is preferred when the gateway has set one.
	Log zerolog.Logger
}

// DefaultResponseHeaderTimeout is generous: an upstream may verify a
// multi-GiB blob's digest before it answers the final PUT of an upload.
const DefaultResponseHeaderTimeout = 10 * time.Minute

// bufSize is the copy buffer for response bodies: big enough to keep the
// number of writes (and TLS records batches) per GiB low.
const bufSize = 128 << 10

// Proxy is an http.Handler forwarding every request to one upstream.
type Proxy struct {
	target *url.URL
	opts   Options
	rp     *httputil.ReverseProxy
	tr     http.RoundTripper
}

// New checks opts and builds the proxy.
func New(opts Options) (*Proxy, error) {
	target, err := ParseUpstream(opts.Upstream)
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, opts: opts}
	p.tr = opts.Transport
	if p.tr == nil {
		rht := opts.ResponseHeaderTimeout
		if rht <= 0 {
			rht = DefaultResponseHeaderTimeout
		}
		p.tr = &http.Transport{
			// A local upstream is reached directly, never through
			// HTTP_PROXY from the environment.
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:       opts.TLSClientConfig,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: rht,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			// Bytes pass through unchanged: never ask for or undo gzip.
			DisableCompression: true,
			ReadBufferSize:     64 << 10,
			WriteBufferSize:    64 << 10,
		}
	}
	pool := &sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      p.tr,
		FlushInterval:  -1, // every write reaches the client at once
		BufferPool:     bufferPool{pool},
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.errorHandler,
		ErrorLog:       nil,
	}
	return p, nil
}

// ParseUpstream checks an upstream URL as [site.proxy] upstream takes it.
func ParseUpstream(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("missing upstream URL (empty)")
	}
	if !strings.Contains(s, "://") {
		return nil, fmt.Errorf("invalid upstream %q: scheme must be http or https (\"http://127.0.0.1:5000\")", s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("invalid upstream %q: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("invalid upstream %q: scheme must be http or https", s)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("invalid upstream %q: no host", s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("invalid upstream %q: only scheme://host[:port] is allowed (the registry API lives at /v2/)", s)
	}
	u.Path = ""
	return u, nil
}

// ServeHTTP forwards r upstream and streams the answer back: every path
// outside /v2/, and the API when nothing stands in front of the proxy.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.rp.ServeHTTP(w, r)
}

// ServeRoute forwards a /v2/ request the gateway let through. The
// upstream registry parses and authorizes it again by itself, so the
// request goes as it came (the route and access are not needed).
func (p *Proxy) ServeRoute(w http.ResponseWriter, r *http.Request, _ *backend.Route, _ backend.Access) {
	p.rp.ServeHTTP(w, r)
}

// Close drops idle upstream connections (io.Closer, like the other
// backends; it never fails).
func (p *Proxy) Close() error {
	if t, ok := p.tr.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
	return nil
}

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(p.target)
	// The client's own X-Forwarded-For is not trusted: wharf is the edge.
	pr.SetXForwarded()
	if p.opts.PreserveHost {
		pr.Out.Host = pr.In.Host
	}
}

// clientView returns the scheme and host the client used, as sent upstream
// in X-Forwarded-Proto and X-Forwarded-Host.
func clientView(out *http.Request) (scheme, host string) {
	return out.Header.Get("X-Forwarded-Proto"), out.Header.Get("X-Forwarded-Host")
}

func (p *Proxy) modifyResponse(resp *http.Response) error {
	h := resp.Header
	if h.Get("Docker-Distribution-Api-Version") == "" {
		backend.SetAPIVersion(h)
	}
	if loc := h.Get("Location"); loc != "" && resp.Request != nil {
		if fixed, ok := p.fixLocation(loc, resp.Request); ok {
			h.Set("Location", fixed)
		}
	}
	return nil
}

// fixLocation rewrites an absolute Location that points at the upstream (by
// its own address, by the Host header it was sent, or at the client's host
// with the wrong scheme) to the scheme and host the client used. Relative
// locations and ones pointing elsewhere (a storage redirect to S3) are kept.
func (p *Proxy) fixLocation(loc string, out *http.Request) (string, bool) {
	if !strings.Contains(loc, "://") {
		return "", false
	}
	u, err := url.Parse(loc)
	if err != nil || u.Host == "" {
		return "", false
	}
	scheme, host := clientView(out)
	if scheme == "" || host == "" {
		return "", false
	}
	if !strings.EqualFold(u.Host, p.target.Host) && !strings.EqualFold(u.Host, out.Host) && !strings.EqualFold(u.Host, host) {
		return "", false
	}
	if u.Scheme == scheme && u.Host == host {
		return "", false
	}
	u.Scheme, u.Host = scheme, host
	return u.String(), true
}

func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	log := zerolog.Ctx(r.Context())
	if log.GetLevel() == zerolog.Disabled {
		log = &p.opts.Log
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; nobody is left to answer.
		log.Debug().Err(err).Str("upstream", p.target.Host).Msg("client canceled proxied request")
		w.WriteHeader(499)
		return
	}
	log.Error().Err(err).Str("upstream", p.target.Host).Str("method", r.Method).Str("path", r.URL.Path).Msg("proxy: upstream request failed")
	status, msg := http.StatusBadGateway, "upstream registry is unreachable"
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		status, msg = http.StatusGatewayTimeout, "upstream registry did not answer in time"
	}
	backend.WriteError(w, r, backend.Errorf(status, backend.CodeUnknown, "%s", msg))
}

// bufferPool adapts a sync.Pool of *[]byte to httputil.BufferPool without
// allocating on Put.
type bufferPool struct{ p *sync.Pool }

func (b bufferPool) Get() []byte { return *(b.p.Get().(*[]byte)) }

func (b bufferPool) Put(buf []byte) {
	if cap(buf) != bufSize {
		return
	}
	buf = buf[:bufSize]
	b.p.Put(&buf)
}
