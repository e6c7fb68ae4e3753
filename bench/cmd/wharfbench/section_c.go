package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/wharf-dev/wharf/bench/internal/regclient"
	"github.com/wharf-dev/wharf/bench/internal/servers"
)

// sectionC is issue #4's acceptance: authenticated manifest HEAD and GET
// rates over TLS with keep-alive, and the bcrypt checks a 30-layer pull
// costs.
func (b *bench) sectionC(ctx context.Context) *Section {
	s := newSection("C", "issue #4: authenticated manifest requests over TLS, keep-alive", b.cfg.runs,
		"wharf", "nginx+registry2", "registry3")
	c := b.ca
	setups := []setup{
		{name: "wharf", wharf: true, auth: true, start: b.wharfStart(servers.WharfSpec{
			Backend: "registry", TLS: true, Host: hostRegistry, Cert: c.Cert, Key: c.Key, Htpasswd: b.htpasswd})},
		{name: "nginx+registry2", auth: true, start: func(ctx context.Context) (*servers.Stack, string, string, error) {
			st, base, err := b.env.NginxRegistry(ctx, hostNginx, c.Cert, c.Key, b.htpasswd)
			return st, base, "", err
		}},
		{name: "registry3", auth: true, start: func(ctx context.Context) (*servers.Stack, string, string, error) {
			st, base, err := b.env.Registry3(ctx, hostR3, c.Cert, c.Key, b.htpasswd)
			return st, base, "", err
		}},
	}
	for r := 0; r < b.cfg.runs && ctx.Err() == nil; r++ {
		for _, sp := range rotate(setups, r) {
			if !b.cfg.wants(sp.name) {
				continue
			}
			b.runPhase(ctx, s, r, sp, "rate", false, func(p *phase) error { return b.authPhase(ctx, p) })
		}
	}
	b.printC(s)
	return s
}

// layers returns n small random layers (the same bytes every run).
func layers(n, size int, seed uint64) [][]byte {
	rng := rand.New(rand.NewPCG(seed, 42))
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, size)
		for j := range out[i] {
			out[i][j] = byte(rng.Uint32())
		}
	}
	return out
}

// authPhase pushes a small image, measures HEAD and GET rates on its
// manifest, then counts the bcrypt checks of a 30-layer pull.
func (b *bench) authPhase(ctx context.Context, p *phase) error {
	if _, _, err := p.c.PushImage(ctx, "bench/small", "latest", layers(1, 4096, 1)); err != nil {
		return fmt.Errorf("push small image: %w", err)
	}
	if err := b.rate(ctx, p, "head", http.MethodHead, "/v2/bench/small/manifests/latest"); err != nil {
		return err
	}
	if err := b.rate(ctx, p, "get", http.MethodGet, "/v2/bench/small/manifests/latest"); err != nil {
		return err
	}
	return b.bcrypt30(ctx, p)
}

// bcrypt30 pulls a 30-layer image as a fresh client of a user that has not
// logged in before (login, manifest, config, layers) and records how many
// bcrypt checks it cost: wharf's own
// counter when it exposes one, else for servers without a credential cache
// the number of requests that carried the password (one check each).
func (b *bench) bcrypt30(ctx context.Context, p *phase) error {
	if _, _, err := p.c.PushImage(ctx, "bench/thirty", "latest", layers(30, 1024, 30)); err != nil {
		return fmt.Errorf("push 30-layer image: %w", err)
	}
	var before float64
	var counted bool
	if p.st.Admin != "" {
		v, err := bcryptMetric(ctx, p.st.Admin)
		if err != nil {
			p.s.note(p.name, "bcrypt count: "+err.Error())
		} else {
			before, counted = v, true
		}
	}
	o := p.opts
	o.User = b.user30
	c, err := regclient.New(o)
	if err != nil {
		return err
	}
	defer c.Close()
	scheme, err := c.Login(ctx, "bench/thirty")
	if err != nil {
		return fmt.Errorf("30-layer pull: %w", err)
	}
	mb, err := c.GetManifest(ctx, "bench/thirty", "latest")
	if err != nil {
		return fmt.Errorf("30-layer pull: %w", err)
	}
	digests, err := manifestBlobs(mb)
	if err != nil {
		return fmt.Errorf("30-layer pull: %w", err)
	}
	for _, d := range digests {
		if err := c.PullBlob(ctx, "bench/thirty", d, -1); err != nil {
			return fmt.Errorf("30-layer pull: %w", err)
		}
	}
	switch {
	case counted:
		after, err := bcryptMetric(ctx, p.st.Admin)
		if err != nil {
			return fmt.Errorf("bcrypt count: %w", err)
		}
		p.put("bcrypt30", after-before)
		logf("%s run %d %-16s 30-layer pull: %.0f bcrypt checks (wharf's counter)", p.s.ID, p.r+1, p.name, after-before)
	default:
		// A server can only run bcrypt on a request that carries the
		// password: the count is exact for servers without a credential
		// cache, an upper bound for wharf when it exposes no counter.
		p.put("bcrypt30", float64(c.CredentialedRequests()))
		logf("%s run %d %-16s 30-layer pull: %d requests carried the password (bcrypt checks <= that)", p.s.ID, p.r+1, p.name, c.CredentialedRequests())
		if p.st.Admin != "" {
			p.s.note(p.name, "bcrypt count is the upper bound 'requests that carried the password' (no counter on /metrics)")
		}
	}
	reqs := 2 + len(digests) // ping, manifest, config and layers
	if scheme == "bearer" {
		reqs++ // the token request
	}
	p.put("req30", float64(reqs))
	return nil
}

// manifestBlobs lists the config and layer digests of a schema 2 / OCI
// image manifest.
func manifestBlobs(b []byte) ([]string, error) {
	var m struct {
		Config struct {
			Digest string `json:"digest"`
		} `json:"config"`
		Layers []struct {
			Digest string `json:"digest"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	out := []string{m.Config.Digest}
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out, nil
}

// bcryptMetric reads wharf's /metrics on the admin address and sums the
// counter named by BENCH_BCRYPT_METRIC, or else the bcrypt counter it finds
// (see sumMetric).
func bcryptMetric(ctx context.Context, admin string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return 0, fmt.Errorf("metrics request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("metrics: status %s", resp.Status)
	}
	v, ok, err := sumMetric(resp.Body, os.Getenv("BENCH_BCRYPT_METRIC"))
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("wharf exposes no bcrypt counter on /metrics yet (set BENCH_BCRYPT_METRIC to its name)")
	}
	return v, nil
}

// sumMetric sums the samples of the Prometheus text exposition in r whose
// metric name is name. With no name it picks the counters whose name
// contains "bcrypt" and ends in _total, or failing those the _count series
// of a bcrypt histogram or summary (never its buckets or sums).
func sumMetric(r io.Reader, name string) (float64, bool, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sums := map[string]float64{} // by kind: "name", "_total", "_count"
	found := map[string]bool{}
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		metric, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(metric, "{")
		var kind string
		switch {
		case name != "":
			if n != name {
				continue
			}
			kind = "name"
		case !strings.Contains(strings.ToLower(n), "bcrypt"):
			continue
		case strings.HasSuffix(n, "_total"):
			kind = "_total"
		case strings.HasSuffix(n, "_count"):
			kind = "_count"
		default:
			continue
		}
		f := strings.Fields(value)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, false, fmt.Errorf("metrics: %s: %w", n, err)
		}
		sums[kind] += v
		found[kind] = true
	}
	if err := sc.Err(); err != nil {
		return 0, false, fmt.Errorf("metrics: %w", err)
	}
	for _, k := range []string{"name", "_total", "_count"} {
		if found[k] {
			return sums[k], true, nil
		}
	}
	return 0, false, nil
}

var rowsC = []row{
	{"manifest HEAD, 16 conns", "req/s", "head_rps", 0},
	{"  HEAD p50", "ms", "head_p50_ms", 2},
	{"  HEAD p99", "ms", "head_p99_ms", 2},
	{"  HEAD server CPU", "µs/req", "head_cpu_us", 0},
	{"manifest GET, 16 conns", "req/s", "get_rps", 0},
	{"  GET p50", "ms", "get_p50_ms", 2},
	{"  GET p99", "ms", "get_p99_ms", 2},
	{"  GET server CPU", "µs/req", "get_cpu_us", 0},
	{"30-layer pull: bcrypt checks", "count", "bcrypt30", 0},
	{"30-layer pull: requests", "count", "req30", 0},
	{"peak RSS, whole stack", "MiB", "rss_mib", 1},
}

func (b *bench) printC(s *Section) {
	for _, m := range []string{"head", "get"} {
		best := "nginx+registry2"
		if s.med("registry3", m+"_rps") > s.med(best, m+"_rps") {
			best = "registry3"
		}
		up := strings.ToUpper(m)
		s.ratioCheck(up+" rate >= 5x best of nginx, registry3", "wharf", m+"_rps", best, m+"_rps", 5)
		s.atMost(up+" p99 <= nginx stack's", "wharf", m+"_p99_ms", s.med("nginx+registry2", m+"_p99_ms"), "ms")
	}
	s.atMost("30-layer pull: <= 1 bcrypt check per user", "wharf", "bcrypt30", 1, "checks")
	b.printSection(s, rowsC)
	fmt.Fprintln(b.out, "  (bcrypt checks of nginx and registry3 = requests that carried the password: neither caches a verified password;")
	fmt.Fprintln(b.out, "   requests = ping, manifest, config and 30 layers, plus the token request with Bearer)")
}
