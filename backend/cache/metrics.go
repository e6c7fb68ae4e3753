package cache

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wharf-dev/wharf/backend"
)

// Metrics are the cache's Prometheus series, shared by every cache site
// of a process (labels: site = the site's host, upstream = the registry
// name of the site's upstream table, "default" for the default upstream).
//
//	wharf_cache_requests_total{site,upstream,kind,result}  manifest/blob answers: hit (no upstream request), miss (the upstream was asked), stale (upstream failed, cached answer served)
//	wharf_cache_upstream_bytes_total{site,upstream}        bytes read from the upstream
//	wharf_cache_served_bytes_total{site,upstream}          bytes sent to clients
//	wharf_cache_upstream_errors_total{site,upstream,status,kind}  kind: status, timeout, refused, network, digest
//	wharf_cache_evictions_total{site}, wharf_cache_evicted_bytes_total{site}
//	wharf_cache_size_bytes{site}, wharf_cache_max_size_bytes{site}
type Metrics struct {
	requests    *prometheus.CounterVec
	upBytes     *prometheus.CounterVec
	servedBytes *prometheus.CounterVec
	upErrors    *prometheus.CounterVec
	evictions   *prometheus.CounterVec
	evictBytes  *prometheus.CounterVec
	size        *prometheus.GaugeVec
	maxSize     *prometheus.GaugeVec
}

// NewMetrics creates the series and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_cache_requests_total",
			Help: "Manifest and blob answers of cache sites by result: hit (served without asking the upstream), miss (the upstream was asked), stale (the upstream failed; the cached answer was served).",
		}, []string{"site", "upstream", "kind", "result"}),
		upBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_cache_upstream_bytes_total", Help: "Bytes read from upstream registries.",
		}, []string{"site", "upstream"}),
		servedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_cache_served_bytes_total", Help: "Response bytes cache sites sent to clients.",
		}, []string{"site", "upstream"}),
		upErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_cache_upstream_errors_total",
			Help: "Failed upstream requests by HTTP status (empty for network errors) and kind: status, timeout, refused, network, digest (content that did not match its digest).",
		}, []string{"site", "upstream", "status", "kind"}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_cache_evictions_total", Help: "Blobs evicted from cache sites (max_size, max_age).",
		}, []string{"site"}),
		evictBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_cache_evicted_bytes_total", Help: "Bytes freed by evicting blobs.",
		}, []string{"site"}),
		size: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wharf_cache_size_bytes", Help: "Bytes of content a cache site holds (as of its last count).",
		}, []string{"site"}),
		maxSize: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wharf_cache_max_size_bytes", Help: "The cache site's max_size; 0 = no budget.",
		}, []string{"site"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.upBytes, m.servedBytes, m.upErrors, m.evictions, m.evictBytes, m.size, m.maxSize)
	}
	return m
}

// siteMetrics is Metrics bound to one site; a nil one counts nothing.
type siteMetrics struct {
	m    *Metrics
	site string
}

func (m *Metrics) site(site string) *siteMetrics {
	if m == nil {
		return nil
	}
	return &siteMetrics{m: m, site: site}
}

func label(up *upstream) string {
	if up == nil || up.name == "" {
		return "default"
	}
	return up.name
}

func (s *siteMetrics) request(up string, kind backend.Kind, result string) {
	if s != nil {
		s.m.requests.WithLabelValues(s.site, up, kind.String(), result).Inc()
	}
}

func (s *siteMetrics) fromUpstream(up string, n int) {
	if s != nil && n > 0 {
		s.m.upBytes.WithLabelValues(s.site, up).Add(float64(n))
	}
}

func (s *siteMetrics) served(up string, n int64) {
	if s != nil && n > 0 {
		s.m.servedBytes.WithLabelValues(s.site, up).Add(float64(n))
	}
}

func (s *siteMetrics) upstreamError(up string, status int, kind string) {
	if s == nil {
		return
	}
	st := ""
	if status > 0 {
		st = strconv.Itoa(status)
	}
	s.m.upErrors.WithLabelValues(s.site, up, st, kind).Inc()
}

func (s *siteMetrics) evicted(blobs int, bytes int64) {
	if s != nil && blobs > 0 {
		s.m.evictions.WithLabelValues(s.site).Add(float64(blobs))
		s.m.evictBytes.WithLabelValues(s.site).Add(float64(bytes))
	}
}

func (s *siteMetrics) setSize(size, max int64) {
	if s != nil {
		s.m.size.WithLabelValues(s.site).Set(float64(size))
		s.m.maxSize.WithLabelValues(s.site).Set(float64(max))
	}
}

// networkKind classifies a failed upstream round trip.
func networkKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	}
	return "network"
}

// countingBody counts what is read from an upstream body.
type countingBody struct {
	io.ReadCloser
	add func(int)
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.add(n)
	return n, err
}

// outcome notes, for one request, whether the upstream was asked and
// whether a stale answer was served (the hit/miss/stale result).
type outcome struct {
	upstream bool
	stale    bool
}

type outcomeKey struct{}

// askedUpstream marks the request of ctx as a miss.
func askedUpstream(ctx context.Context) {
	if o, ok := ctx.Value(outcomeKey{}).(*outcome); ok {
		o.upstream = true
	}
}

// servedStale marks the request of ctx as answered stale.
func servedStale(ctx context.Context) {
	if o, ok := ctx.Value(outcomeKey{}).(*outcome); ok {
		o.stale = true
	}
}

// countingWriter counts the bytes of an answer without hiding
// io.ReaderFrom (sendfile) or http.Flusher.
type countingWriter struct {
	http.ResponseWriter
	n      int64
	status int
}

func (w *countingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
	}
	w.n += n
	return n, err
}

func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// digestMismatch counts content from repo's upstream that did not match
// its digest.
func (c *Cache) digestMismatch(repo string) {
	if u, _, err := c.upstreamFor(repo); err == nil {
		c.metrics.upstreamError(label(u), 0, "digest")
	}
}
