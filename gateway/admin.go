package gateway

import (
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the gateway's Prometheus series, kept in the gateway's own
// registry (no global state) and served on [listen] admin at /metrics.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	bytesOut *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_http_requests_total", Help: "Requests answered, by site, method and status code.",
		}, []string{"site", "method", "code"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_http_response_bytes_total", Help: "Response body bytes sent, by site.",
		}, []string{"site"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wharf_http_request_duration_seconds", Help: "Time to answer a request, by site.",
			Buckets: []float64{.001, .005, .025, .1, .5, 2.5, 10, 60, 300},
		}, []string{"site"}),
	}
	m.reg.MustRegister(m.requests, m.bytesOut, m.duration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observe(site, method string, status int, bytes int64, d time.Duration) {
	if m == nil {
		return
	}
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
	default:
		method = "OTHER" // clients choose methods; keep the label set bounded
	}
	m.requests.WithLabelValues(site, method, strconv.Itoa(status)).Inc()
	m.bytesOut.WithLabelValues(site).Add(float64(bytes))
	m.duration.WithLabelValues(site).Observe(d.Seconds())
}

// authCollector exports the auth service's counters. It reads whichever
// service is current, so a reload that replaces the service shows up as a
// counter reset, which Prometheus handles.
type authCollector struct {
	g                                    *Gateway
	bcrypts, failures, throttled, tokens *prometheus.Desc
}

func newAuthCollector(g *Gateway) *authCollector {
	return &authCollector{
		g:         g,
		bcrypts:   prometheus.NewDesc("wharf_auth_bcrypt_checks_total", "bcrypt comparisons run (logins not answered from the cache of verified credentials).", nil, nil),
		failures:  prometheus.NewDesc("wharf_auth_login_failures_total", "Logins refused for a wrong user name or password.", nil, nil),
		throttled: prometheus.NewDesc("wharf_auth_throttled_total", "Logins refused with 429 after repeated failures.", nil, nil),
		tokens:    prometheus.NewDesc("wharf_auth_tokens_issued_total", "Tokens issued by the built-in token service.", nil, nil),
	}
}

func (c *authCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.bcrypts
	ch <- c.failures
	ch <- c.throttled
	ch <- c.tokens
}

func (c *authCollector) Collect(ch chan<- prometheus.Metric) {
	c.g.mu.Lock()
	svc := c.g.auth
	c.g.mu.Unlock()
	if svc == nil {
		return
	}
	st := svc.Stats()
	ch <- prometheus.MustNewConstMetric(c.bcrypts, prometheus.CounterValue, float64(st.BcryptChecks))
	ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(st.LoginFailures))
	ch <- prometheus.MustNewConstMetric(c.throttled, prometheus.CounterValue, float64(st.Throttled))
	ch <- prometheus.MustNewConstMetric(c.tokens, prometheus.CounterValue, float64(st.TokensIssued))
}

// AdminHandler serves /metrics, /healthz (the process is alive), /readyz
// (the gateway has a site table and serves it) and Go's profiles under
// /debug/pprof/; the admin address is meant for loopback or a management
// network only, as Caddy's admin endpoint is.
func (g *Gateway) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !g.ready.Load() {
			http.Error(w, "not ready: listeners not started", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /gc/report", g.gcReport)
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}
