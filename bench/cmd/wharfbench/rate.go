package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/wharf-dev/wharf/bench/internal/load"
	"github.com/wharf-dev/wharf/bench/internal/regclient"
)

// newPollClient is the client that waits for servers to come up.
func newPollClient(o regclient.Options) *http.Client {
	return &http.Client{Transport: regclient.NewTransport(o), Timeout: 2 * time.Second}
}

// rate measures method on a manifest with b.cfg.conns keep-alive
// connections for b.cfg.duration and records req/s, p50/p99 and server CPU
// per request under prefix_*.
func (b *bench) rate(ctx context.Context, p *phase, prefix, method, path string) error {
	one := p.opts
	one.Conns = 1
	h := http.Header{"Accept": {regclient.AcceptManifests}}
	if a := p.c.AuthHeader(); a != "" {
		h.Set("Authorization", a)
	}
	c0, err := p.g.CPUSeconds()
	if err != nil {
		return err
	}
	res, err := load.Run(ctx, load.Config{
		Method: method, URL: p.c.URL(path), Header: h,
		Conns: b.cfg.conns, Duration: b.cfg.duration,
		NewTransport: func() http.RoundTripper { return regclient.NewTransport(one) },
	})
	if err != nil {
		return fmt.Errorf("%s rate: %w", method, err)
	}
	c1, err := p.g.CPUSeconds()
	if err != nil {
		return err
	}
	if res.Requests == 0 {
		return fmt.Errorf("%s rate: no successful request (%d errors: %s)", method, res.Errors, res.FirstError)
	}
	if res.Errors > 0 {
		p.s.note(p.name, fmt.Sprintf("%s: %d errors among requests, first: %s", method, res.Errors, res.FirstError))
	}
	p.put(prefix+"_rps", res.RPS())
	p.put(prefix+"_p50_ms", float64(res.P50)/float64(time.Millisecond))
	p.put(prefix+"_p99_ms", float64(res.P99)/float64(time.Millisecond))
	// Includes the warm-up requests' share, which is tiny against seconds.
	p.put(prefix+"_cpu_us", (c1-c0)/float64(res.Requests)*1e6)
	logf("%s run %d %-16s %-22s %7.0f req/s  p50 %.2f ms  p99 %.2f ms  %.0f µs CPU/req", p.s.ID, p.r+1, p.name, method+" manifest",
		res.RPS(), float64(res.P50)/1e6, float64(res.P99)/1e6, (c1-c0)/float64(res.Requests)*1e6)
	return nil
}
