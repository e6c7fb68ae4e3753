package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/wharf-dev/wharf/bench/internal/servers"
)

// wharfStart starts wharf with spec; when the config with [auth] is
// refused, it tries again without auth and says so in the note.
func (b *bench) wharfStart(spec servers.WharfSpec) func(ctx context.Context) (*servers.Stack, string, string, error) {
	return func(ctx context.Context) (*servers.Stack, string, string, error) {
		st, base, err := b.env.Wharf(ctx, spec)
		if err == nil || spec.Htpasswd == "" {
			return st, base, "", err
		}
		withAuth := err
		spec.Htpasswd = ""
		st, base, err = b.env.Wharf(ctx, spec)
		if err != nil {
			if err.Error() == withAuth.Error() {
				return nil, "", "", err
			}
			return nil, "", "", fmt.Errorf("%w (with [auth]: %v)", err, withAuth)
		}
		return st, base, "measured WITHOUT auth, wharf refused [auth]: " + shorten(withAuth.Error(), 160), nil
	}
}

func shorten(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// sectionB is issue #3's acceptance: 1 GiB push and pulls over TLS through
// wharf's registry site, wharf's proxy site in front of docker-registry,
// the classic nginx + docker-registry stack, registry:3 and zot doing TLS
// themselves, and nginx serving the file over TLS as the ceiling.
func (b *bench) sectionB(ctx context.Context) *Section {
	s := newSection("B", "issue #3: TLS on loopback, logged in where the setup has auth", b.cfg.runs,
		"wharf-registry", "wharf-proxy", "nginx+registry2", "registry3", "zot", "nginx-static", "machine")
	c := b.ca
	if b.cfg.zot == "" && b.cfg.wants("zot") {
		msg := "not run: no zot binary given (BENCH_ZOT=/path/to/zot, built from github.com/project-zot/zot); zot targets use the issue's figures"
		s.note("zot", msg)
		fmt.Fprintf(b.out, "  B zot: %s\n", msg)
	}
	setups := []setup{
		{name: "wharf-registry", wharf: true, auth: true, start: b.wharfStart(servers.WharfSpec{
			Backend: "registry", TLS: true, Host: hostRegistry, Cert: c.Cert, Key: c.Key, Htpasswd: b.htpasswd})},
		{name: "wharf-proxy", wharf: true, auth: true, start: b.wharfStart(servers.WharfSpec{
			Backend: "proxy", TLS: true, Host: hostProxy, Cert: c.Cert, Key: c.Key, Htpasswd: b.htpasswd})},
		{name: "nginx+registry2", auth: true, start: func(ctx context.Context) (*servers.Stack, string, string, error) {
			st, base, err := b.env.NginxRegistry(ctx, hostNginx, c.Cert, c.Key, b.htpasswd)
			return st, base, "", err
		}},
		{name: "registry3", auth: true, start: func(ctx context.Context) (*servers.Stack, string, string, error) {
			st, base, err := b.env.Registry3(ctx, hostR3, c.Cert, c.Key, b.htpasswd)
			return st, base, "", err
		}},
		{name: "zot", auth: true, start: func(ctx context.Context) (*servers.Stack, string, string, error) {
			st, base, err := b.env.Zot(ctx, hostZot, c.Cert, c.Key, b.htpasswd)
			return st, base, "", err
		}},
		{name: "nginx-static", static: true, start: func(ctx context.Context) (*servers.Stack, string, string, error) {
			st, base, err := b.env.NginxStatic(ctx, dirOf(b.blob.Path), hostStatic, c.Cert, c.Key)
			return st, base, "", err
		}},
	}
	for r := 0; r < b.cfg.runs && ctx.Err() == nil; r++ {
		b.machinePhase(s, r)
		for _, sp := range rotate(setups, r) {
			if !b.cfg.wants(sp.name) || (sp.name == "zot" && b.cfg.zot == "") {
				continue
			}
			switch {
			case sp.static:
				b.runPhase(ctx, s, r, sp, "static", false, func(p *phase) error { return b.staticPhase(ctx, p, "") })
			default:
				b.runPhase(ctx, s, r, sp, "h1", false, func(p *phase) error { return b.registryPhase(ctx, p, "", false) })
				if sp.name == "wharf-registry" {
					b.runPhase(ctx, s, r, sp, "h2", true, func(p *phase) error { return b.registryPhase(ctx, p, "_h2", false) })
				}
			}
		}
	}
	b.printB(s)
	return s
}

var rowsB = []row{
	{"push, HTTP/1.1", "MB/s", "push_mbs", 0},
	{"push, HTTP/2", "MB/s", "push_h2_mbs", 0},
	{"pull, HTTP/1.1", "MB/s", "pull_mbs", 0},
	{"pull, HTTP/2", "MB/s", "pull_h2_mbs", 0},
	{"8 parallel pulls, HTTP/1.1", "MB/s", "pull8_mbs", 0},
	{"8 parallel pulls, HTTP/2", "MB/s", "pull8_h2_mbs", 0},
	{"peak RSS, whole stack", "MiB", "rss_mib", 1},
	{"peak RSS, front process", "MiB", "rss_front_mib", 1},
	{"CPU push", "s/GiB", "cpu_push", 2},
	{"CPU push, HTTP/2", "s/GiB", "cpu_push_h2", 2},
	{"CPU pull", "s/GiB", "cpu_pull", 2},
	{"CPU 8 pulls", "s/GiB", "cpu_pull8", 2},
	{"client CPU push", "s/GiB", "client_cpu_push", 2},
	{"client CPU pull", "s/GiB", "client_cpu_pull", 2},
	{"client CPU 8 pulls", "s/GiB", "client_cpu_pull8", 2},
	{"pull bound by client CPU", "MB/s", "bound_pull_mbs", 0},
	{"page-cache write, 1 MiB writes", "MB/s", "pagecache_write_mbs", 0},
}

// Figures of zot measured on the reference machine (issue #3): the targets
// when zot is not part of the run (no -zot binary). With zot in the run
// the targets are ratios to its figures in the same run.
const (
	zotPush  = 516.0
	zotPull  = 1554.0
	zotPull8 = 1786.0
)

func (b *bench) printB(s *Section) {
	w := "wharf-registry"
	s.ratioCheck("registry push >= 2x nginx stack", w, "push_mbs", "nginx+registry2", "push_mbs", 2)
	if s.has("zot", "push_mbs") {
		s.ratioCheck("registry push >= 1.3x zot", w, "push_mbs", "zot", "push_mbs", 1.3)
		s.ratioCheck("registry pull >= 1.1x zot", w, "pull_mbs", "zot", "pull_mbs", 1.1)
		s.ratioCheck("registry 8 pulls >= 1.1x zot", w, "pull8_mbs", "zot", "pull8_mbs", 1.1)
		s.ratioAtMost("registry CPU per pushed GiB <= zot (#9)", w, "cpu_push", "zot", "cpu_push", 1)
	} else {
		s.atLeast("registry push >= 1.3x zot (issue: 670 MB/s)", w, "push_mbs", 1.3*zotPush, "MB/s")
		s.atLeast("registry pull >= 1.1x zot (issue: 1709 MB/s)", w, "pull_mbs", 1.1*zotPull, "MB/s")
		s.atLeast("registry 8 pulls >= 1.1x zot (issue: 1965 MB/s)", w, "pull8_mbs", 1.1*zotPull8, "MB/s")
	}
	s.ratioAtMost("registry CPU per pushed GiB <= 0.85x registry3 (#9)", w, "cpu_push", "registry3", "cpu_push", 0.85)
	s.atMost("registry peak RSS < 64 MiB", w, "rss_mib", 64, "MiB")
	s.atMost("registry CPU per pulled GiB <= 0.5 s", w, "cpu_pull", 0.5, "s/GiB")
	s.ratioCheck("HTTP/2 push >= HTTP/1.1 push", w, "push_h2_mbs", w, "push_mbs", 1)
	s.ratioCheck("proxy push >= nginx stack", "wharf-proxy", "push_mbs", "nginx+registry2", "push_mbs", 1)
	s.ratioCheck("proxy pull >= nginx stack", "wharf-proxy", "pull_mbs", "nginx+registry2", "pull_mbs", 1)
	s.ratioCheck("proxy 8 pulls >= nginx stack", "wharf-proxy", "pull8_mbs", "nginx+registry2", "pull8_mbs", 1)
	// "less memory": wharf in front versus nginx in front (the registry
	// behind them is the same docker-registry).
	s.atMost("proxy front RSS <= nginx front RSS", "wharf-proxy", "rss_front_mib", s.med("nginx+registry2", "rss_front_mib"), "MiB")
	s.derive("bound_pull_mbs", "client_cpu_pull", pullBound)
	b.printSection(s, rowsB)
}
