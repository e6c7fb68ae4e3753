// Package load is a closed-loop HTTP load generator: a fixed number of
// keep-alive connections, each sending the same request back to back for a
// fixed time, with every latency kept for exact percentiles. Unlike wrk and
// h2load it does not hang on HEAD over HTTP/1.1.
package load

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/wharf-dev/wharf/bench/internal/stats"
)

// Config describes one load run.
type Config struct {
	Method   string
	URL      string
	Header   http.Header
	Conns    int           // concurrent connections, one worker each
	Duration time.Duration // measured time, after one warm-up request per connection
	// NewTransport returns a transport per connection, so that every worker
	// owns exactly one keep-alive connection.
	NewTransport func() http.RoundTripper
}

// Result summarises a run.
type Result struct {
	Requests int64         // successful (2xx) requests in the measured time
	Errors   int64         // failed or non-2xx requests
	Elapsed  time.Duration // measured wall time
	P50, P99 time.Duration
	// FirstError describes the first failure, for the report.
	FirstError string
}

// RPS returns successful requests per second.
func (r Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

type worker struct {
	client *http.Client
	lat    []time.Duration
	errs   int64
	first  string
}

func (w *worker) once(ctx context.Context, cfg *Config) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, cfg.Method, cfg.URL, nil)
	if err != nil {
		return 0, fmt.Errorf("request: %w", err)
	}
	for k, v := range cfg.Header {
		req.Header[k] = v
	}
	start := time.Now()
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return 0, fmt.Errorf("status %s", resp.Status)
	}
	return d, nil
}

// Run performs the load run. The warm-up request of each connection opens
// it (and does any TLS handshake); it must succeed or Run fails.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Conns < 1 || cfg.Duration <= 0 || cfg.NewTransport == nil {
		return Result{}, fmt.Errorf("load: need conns >= 1, a duration and a transport")
	}
	ws := make([]*worker, cfg.Conns)
	for i := range ws {
		ws[i] = &worker{client: &http.Client{Transport: cfg.NewTransport()}, lat: make([]time.Duration, 0, 1<<16)}
		if _, err := ws[i].once(ctx, &cfg); err != nil {
			return Result{}, fmt.Errorf("load: warm-up %s %s: %w", cfg.Method, cfg.URL, err)
		}
	}
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runCtx.Err() == nil {
				d, err := w.once(runCtx, &cfg)
				if runCtx.Err() != nil {
					return // the request cut by the deadline does not count
				}
				if err != nil {
					w.errs++
					if w.first == "" {
						w.first = err.Error()
					}
					continue
				}
				w.lat = append(w.lat, d)
			}
		}()
	}
	wg.Wait()
	res := Result{Elapsed: time.Since(start)}
	var all []time.Duration
	for _, w := range ws {
		all = append(all, w.lat...)
		res.Errors += w.errs
		if res.FirstError == "" {
			res.FirstError = w.first
		}
		w.client.CloseIdleConnections()
	}
	slices.Sort(all)
	res.Requests = int64(len(all))
	res.P50 = stats.Percentile(all, 50)
	res.P99 = stats.Percentile(all, 99)
	return res, nil
}
