package main

import (
	"context"

	"github.com/wharf-dev/wharf/bench/internal/servers"
)

// sectionD is issue #15's acceptance: wharf's registry site on S3 against
// registry:3 with its S3 driver, both on the same versitygw (started once
// for the section, outside both setups' CPU and RSS figures), plain HTTP,
// no auth: push, pull, parallel pulls and the manifest HEAD rate.
func (b *bench) sectionD(ctx context.Context) *Section {
	s := newSection("D", "issue #15: registry on S3 (versitygw), plain HTTP, no auth", b.cfg.runs, "wharf-s3", "registry3-s3")
	g, err := b.env.VersityGW(ctx)
	if err != nil {
		s.note("wharf-s3", err.Error())
		b.printD(s)
		return s
	}
	defer g.Stop(b.cfg.keep)
	setups := []setup{
		{name: "wharf-s3", wharf: true, start: func(ctx context.Context) (*servers.Stack, string, string, error) {
			st, base, err := b.env.Wharf(ctx, servers.WharfSpec{Backend: "registry", Host: "127.0.0.1", S3: g})
			return st, base, "", err
		}},
		{name: "registry3-s3", start: func(ctx context.Context) (*servers.Stack, string, string, error) {
			st, base, err := b.env.Registry3S3(ctx, g)
			return st, base, "", err
		}},
	}
	for r := 0; r < b.cfg.runs && ctx.Err() == nil; r++ {
		for _, sp := range rotate(setups, r) {
			if !b.cfg.wants(sp.name) {
				continue
			}
			b.runPhase(ctx, s, r, sp, "s3", false, func(p *phase) error { return b.registryPhase(ctx, p, "", true) })
		}
	}
	b.printD(s)
	return s
}

var rowsD = []row{
	{"push POST+PATCH+PUT", "MB/s", "push_mbs", 0},
	{"pull", "MB/s", "pull_mbs", 0},
	{"8 parallel pulls", "MB/s", "pull8_mbs", 0},
	{"manifest HEAD, 16 conns", "req/s", "head_rps", 0},
	{"  HEAD p50", "ms", "head_p50_ms", 2},
	{"  HEAD p99", "ms", "head_p99_ms", 2},
	{"peak RSS", "MiB", "rss_mib", 1},
	{"CPU push", "s/GiB", "cpu_push", 2},
	{"CPU pull", "s/GiB", "cpu_pull", 2},
	{"CPU 8 pulls", "s/GiB", "cpu_pull8", 2},
}

func (b *bench) printD(s *Section) {
	s.ratioCheck("push >= 1.3x registry:3 on S3", "wharf-s3", "push_mbs", "registry3-s3", "push_mbs", 1.3)
	s.ratioCheck("pull >= 1.3x registry:3 on S3", "wharf-s3", "pull_mbs", "registry3-s3", "pull_mbs", 1.3)
	s.atMost("peak RSS < 64 MiB", "wharf-s3", "rss_mib", 64, "MiB")
	b.printSection(s, rowsD)
}
