package gateway

import (
	"net/http"
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

// AdminHandler serves /metrics, /healthz (the process is alive) and /readyz
// (the gateway has a site table and serves it).
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
	return mux
}
