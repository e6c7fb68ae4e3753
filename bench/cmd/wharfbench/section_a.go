package main

import (
	"context"
	"fmt"

	"github.com/wharf-dev/wharf/bench/internal/servers"
)

// sectionA is issue #2's acceptance: plain HTTP on loopback, no auth,
// wharf's registry against docker-registry, with the machine's limits
// (sha256 on one core, nginx sendfile) measured in the same run.
func (b *bench) sectionA(ctx context.Context) *Section {
	s := newSection("A", "issue #2: plain HTTP, loopback, no auth", b.cfg.runs, "wharf", "docker-registry", "nginx-sendfile", "client-limit", "machine")
	setups := []setup{
		{name: "wharf", wharf: true, start: func(ctx context.Context) (*servers.Stack, string, string, error) {
			st, base, err := b.env.Wharf(ctx, servers.WharfSpec{Backend: "registry", Host: "127.0.0.1"})
			return st, base, "", err
		}},
		{name: "docker-registry", start: func(ctx context.Context) (*servers.Stack, string, string, error) {
			st, base, err := b.env.DockerRegistry(ctx)
			return st, base, "", err
		}},
		{name: "nginx-sendfile", static: true, start: func(ctx context.Context) (*servers.Stack, string, string, error) {
			st, base, err := b.env.NginxStatic(ctx, dirOf(b.blob.Path), "127.0.0.1", "", "")
			return st, base, "", err
		}},
	}
	for r := 0; r < b.cfg.runs && ctx.Err() == nil; r++ {
		v := sha256Speed(2 * gib)
		s.put("machine", "sha256_mbs", r, v)
		logf("A run %d %-16s %-22s %7.0f MB/s", r+1, "machine", "sha256 one core", v)
		b.machinePhase(s, r)
		if err := b.sinkPhase(ctx, s, r); err != nil {
			s.note("client-limit", err.Error())
		}
		for _, sp := range rotate(setups, r) {
			if !b.cfg.wants(sp.name) {
				continue
			}
			if sp.name == "nginx-sendfile" {
				b.runPhase(ctx, s, r, sp, "static", false, func(p *phase) error { return b.staticPhase(ctx, p, "") })
				continue
			}
			b.runPhase(ctx, s, r, sp, "h1", false, func(p *phase) error { return b.registryPhase(ctx, p, "", true) })
			b.runPhase(ctx, s, r, sp, "mono", false, func(p *phase) error {
				return b.pushTransfer(p, "push monolithic PUT", "push_put_mbs", "cpu_push_put",
					func() error { return pushMonolithic(ctx, p.c, "bench/mono", b.blob) })
			})
		}
	}
	b.printA(s)
	return s
}

// staticPhase pulls the blob as a static file, once and in parallel.
func (b *bench) staticPhase(ctx context.Context, p *phase, sfx string) error {
	return b.urlPhase(ctx, p, p.c.URL("/"+baseOf(b.blob.Path)), sfx)
}

// urlPhase pulls the blob from an absolute URL once and in parallel; sfx
// ("", "_h2") is appended to the metric names.
func (b *bench) urlPhase(ctx context.Context, p *phase, url, sfx string) error {
	if err := p.transfer("pull"+sfx, "pull"+sfx+"_mbs", "cpu_pull"+sfx, b.blob.Size, func() error {
		return staticPulls(ctx, p.c, url, b.blob.Size, 1)
	}); err != nil {
		return err
	}
	n := b.cfg.pulls
	return p.transfer(fmt.Sprintf("%d parallel pulls%s", n, sfx), "pull8"+sfx+"_mbs", "cpu_pull8"+sfx, int64(n)*b.blob.Size, func() error {
		return staticPulls(ctx, p.c, url, b.blob.Size, n)
	})
}

// registryPhase pushes the blob as Docker does, tags it, pulls it once and
// in parallel, and, when withRates, measures the manifest HEAD rate. sfx
// ("", "_h2") is appended to the metric names.
func (b *bench) registryPhase(ctx context.Context, p *phase, sfx string, withRates bool) error {
	if err := b.pushTransfer(p, "push POST+PATCH+PUT"+sfx, "push"+sfx+"_mbs", "cpu_push"+sfx, func() error {
		return pushStreamed(ctx, p.c, "bench/blob", b.blob)
	}); err != nil {
		return err
	}
	if err := tagBlob(ctx, p.c, "bench/blob", "latest", b.blob); err != nil {
		return err
	}
	if p.r == 0 {
		// Once per setup, untimed: the bytes that come back are the blob.
		vctx, cancel := transferCtx(ctx)
		err := p.c.VerifyBlob(vctx, "bench/blob", b.blob.Digest, b.blob.Size)
		cancel()
		if err != nil {
			return fmt.Errorf("verify pulled blob: %w", err)
		}
	}
	if err := p.transfer("pull"+sfx, "pull"+sfx+"_mbs", "cpu_pull"+sfx, b.blob.Size, func() error {
		return pulls(ctx, p.c, "bench/blob", b.blob, 1)
	}); err != nil {
		return err
	}
	n := b.cfg.pulls
	if err := p.transfer(fmt.Sprintf("%d parallel pulls%s", n, sfx), "pull8"+sfx+"_mbs", "cpu_pull8"+sfx, int64(n)*b.blob.Size, func() error {
		return pulls(ctx, p.c, "bench/blob", b.blob, n)
	}); err != nil {
		return err
	}
	if !withRates {
		return nil
	}
	return b.rate(ctx, p, "head", "HEAD", "/v2/bench/blob/manifests/latest")
}

var rowsA = []row{
	{"push POST+PATCH+PUT", "MB/s", "push_mbs", 0},
	{"push monolithic PUT", "MB/s", "push_put_mbs", 0},
	{"pull", "MB/s", "pull_mbs", 0},
	{"8 parallel pulls", "MB/s", "pull8_mbs", 0},
	{"manifest HEAD, 16 conns", "req/s", "head_rps", 0},
	{"  HEAD p50", "ms", "head_p50_ms", 2},
	{"  HEAD p99", "ms", "head_p99_ms", 2},
	{"  HEAD server CPU", "µs/req", "head_cpu_us", 0},
	{"peak RSS", "MiB", "rss_mib", 1},
	{"CPU push", "s/GiB", "cpu_push", 2},
	{"CPU monolithic push", "s/GiB", "cpu_push_put", 2},
	{"CPU pull", "s/GiB", "cpu_pull", 2},
	{"CPU 8 pulls", "s/GiB", "cpu_pull8", 2},
	{"sha256, one core", "MB/s", "sha256_mbs", 0},
	{"page-cache write, 1 MiB writes", "MB/s", "pagecache_write_mbs", 0},
	{"client CPU push", "s/GiB", "client_cpu_push", 2},
	{"client CPU pull", "s/GiB", "client_cpu_pull", 2},
	{"pull bound by client CPU", "MB/s", "bound_pull_mbs", 0},
}

func (b *bench) printA(s *Section) {
	s.ratioCheck("push >= 1.5x docker-registry", "wharf", "push_mbs", "docker-registry", "push_mbs", 1.5)
	s.ratioCheck("push >= 50% of sha256 one core", "wharf", "push_mbs", "machine", "sha256_mbs", 0.5)
	s.ratioCheck("pull >= 1.5x docker-registry", "wharf", "pull_mbs", "docker-registry", "pull_mbs", 1.5)
	s.ratioCheck("pull >= 80% of nginx sendfile", "wharf", "pull_mbs", "nginx-sendfile", "pull_mbs", 0.8)
	s.ratioCheck("manifest HEAD rate >= 2x docker-registry", "wharf", "head_rps", "docker-registry", "head_rps", 2)
	s.atMost("peak RSS < 64 MiB", "wharf", "rss_mib", 64, "MiB")
	s.derive("bound_pull_mbs", "client_cpu_pull", pullBound)
	b.printSection(s, rowsA)
}

// printSection writes a section's title, table, notes and checks.
func (b *bench) printSection(s *Section, rows []row) {
	fmt.Fprintf(b.out, "\n== %s: %s — median of %d run(s), %d MiB blob ==\n", s.ID, s.Title, b.cfg.runs, b.blob.Size/mib)
	s.printTable(b.out, rows, s.columns())
	s.printChecks(b.out)
}

func dirOf(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "."
}

func baseOf(p string) string { return p[len(dirOf(p))+1:] }
