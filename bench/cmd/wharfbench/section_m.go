package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/wharf-dev/wharf/bench/internal/regclient"
	"github.com/wharf-dev/wharf/bench/internal/servers"
)

// sectionM is issue #11's acceptance: a mirror in front of Debian's
// docker-registry (plain HTTP, loopback), wharf's cache site against
// registry:3 in proxy mode with the same kind of upstream, and nginx
// serving the same file by sendfile as the machine's limit for warm pulls.
// Each phase starts the setup fresh (empty cache, new upstream holding the
// blobs), so every "cold" pull really goes to the upstream.
//
// Figures per blob size (200 MiB and the run's blob, 1 GiB by default):
// one cold pull; 10 concurrent cold pulls of a blob nobody fetched yet
// (aggregate MB/s, and how many GETs of it the upstream logged); a warm
// pull (median of 5, after the cold one, client discarding the bytes);
// the mirror's peak RSS.
func (b *bench) sectionM(ctx context.Context) *Section {
	s := newSection("M", "issue #11: mirror, plain HTTP, loopback, docker-registry upstream", b.cfg.runs, "wharf-cache", "registry3-proxy", "nginx-sendfile")
	small, err := ensureBlob(b.cfg.cache, 200*mib)
	if err != nil {
		s.note("wharf-cache", err.Error())
		return s
	}
	blobs := []*Blob{small}
	if b.blob.Size != small.Size {
		blobs = append(blobs, b.blob)
	}
	setups := []setup{
		{name: "wharf-cache", wharf: true, start: func(ctx context.Context) (*servers.Stack, string, string, error) {
			st, base, err := b.env.Wharf(ctx, servers.WharfSpec{Backend: "cache", Host: "127.0.0.1"})
			return st, base, "", err
		}},
		{name: "registry3-proxy", start: func(ctx context.Context) (*servers.Stack, string, string, error) {
			st, base, err := b.env.Registry3Mirror(ctx)
			return st, base, "", err
		}},
	}
	for r := 0; r < b.cfg.runs && ctx.Err() == nil; r++ {
		for _, sp := range rotate(setups, r) {
			if !b.cfg.wants(sp.name) {
				continue
			}
			b.runPhase(ctx, s, r, sp, "cold1", false, func(p *phase) error { return b.mirrorSingle(ctx, p, blobs) })
			b.runPhase(ctx, s, r, sp, "cold10", false, func(p *phase) error { return b.mirrorConcurrent(ctx, p, blobs) })
		}
		if b.cfg.wants("nginx-sendfile") {
			b.runPhase(ctx, s, r, setup{name: "nginx-sendfile", static: true, start: func(ctx context.Context) (*servers.Stack, string, string, error) {
				st, base, err := b.env.NginxStatic(ctx, dirOf(b.blob.Path), "127.0.0.1", "", "")
				return st, base, "", err
			}}, "static", false, func(p *phase) error {
				for _, bl := range blobs {
					url := p.c.URL("/" + baseOf(bl.Path))
					if err := b.warmPulls(p, bl, func() error { return staticPulls(ctx, p.c, url, bl.Size, 1) }); err != nil {
						return err
					}
				}
				return nil
			})
		}
	}
	b.printM(s, blobs)
	return s
}

// mirrorRepo is the repository the blobs are pushed to upstream and
// pulled through the mirror as.
const mirrorRepo = "library/bench"

// seedUpstream pushes the blobs to the stack's upstream (untimed).
func seedUpstream(ctx context.Context, p *phase, blobs []*Blob) error {
	if p.st.Upstream == "" {
		return fmt.Errorf("setup has no upstream")
	}
	c, err := regclient.New(regclient.Options{Base: p.st.Upstream, Conns: 2})
	if err != nil {
		return err
	}
	defer c.Close()
	for _, bl := range blobs {
		if err := pushStreamed(ctx, c, mirrorRepo, bl); err != nil {
			return fmt.Errorf("seed upstream: %w", err)
		}
	}
	return nil
}

func sizeTag(bl *Blob) string { return fmt.Sprintf("%d", bl.Size/mib) }

// mirrorSingle: one cold pull of each blob, then five warm ones.
func (b *bench) mirrorSingle(ctx context.Context, p *phase, blobs []*Blob) error {
	if err := seedUpstream(ctx, p, blobs); err != nil {
		return err
	}
	for _, bl := range blobs {
		t := sizeTag(bl)
		if err := p.transfer("cold pull "+t+" MiB", "cold_"+t+"_mbs", "cpu_cold_"+t, bl.Size, func() error {
			return pulls(ctx, p.c, mirrorRepo, bl, 1)
		}); err != nil {
			return err
		}
		if p.r == 0 {
			vctx, cancel := transferCtx(ctx)
			err := p.c.VerifyBlob(vctx, mirrorRepo, bl.Digest, bl.Size)
			cancel()
			if err != nil {
				return fmt.Errorf("verify pulled blob: %w", err)
			}
		}
		if err := b.warmPulls(p, bl, func() error { return pulls(ctx, p.c, mirrorRepo, bl, 1) }); err != nil {
			return err
		}
	}
	return nil
}

// warmPulls times five pulls and records their median.
func (b *bench) warmPulls(p *phase, bl *Blob, pull func() error) error {
	t := sizeTag(bl)
	var mbs []float64
	for i := 0; i < 5; i++ {
		tr, err := timed(p.g, bl.Size, pull)
		if err != nil {
			return fmt.Errorf("warm pull %s MiB: %w", t, err)
		}
		mbs = append(mbs, tr.MBs)
	}
	sort.Float64s(mbs)
	p.put("warm_"+t+"_mbs", mbs[2])
	logf("%s run %d %-16s %-22s %7.0f MB/s (median of 5)", p.s.ID, p.r+1, p.name, "warm pull "+t+" MiB", mbs[2])
	return nil
}

// mirrorConcurrent: 10 clients pull each blob at once from an empty
// cache; the upstream's log says how many GETs of it reached it.
func (b *bench) mirrorConcurrent(ctx context.Context, p *phase, blobs []*Blob) error {
	if err := seedUpstream(ctx, p, blobs); err != nil {
		return err
	}
	const n = 10
	for _, bl := range blobs {
		t := sizeTag(bl)
		if err := p.transfer(fmt.Sprintf("%d cold pulls %s MiB", n, t), "cold10_"+t+"_mbs", "cpu_cold10_"+t, n*bl.Size, func() error {
			return pulls(ctx, p.c, mirrorRepo, bl, n)
		}); err != nil {
			return err
		}
		gets, err := upstreamGets(p.st, bl.Digest)
		if err != nil {
			return err
		}
		p.put("cold10_"+t+"_gets", float64(gets))
		logf("%s run %d %-16s %-22s %7d", p.s.ID, p.r+1, p.name, "upstream GETs "+t+" MiB", gets)
	}
	return nil
}

// upstreamGets counts GETs of blob digest in the access log of the
// stack's docker-registry (its last process).
func upstreamGets(st *servers.Stack, digest string) (int, error) {
	up := st.Procs[len(st.Procs)-1]
	data, err := os.ReadFile(up.Log)
	if err != nil {
		return 0, fmt.Errorf("upstream log: %w", err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, `"GET /v2/`) && strings.Contains(line, "/blobs/"+digest) {
			n++
		}
	}
	return n, nil
}

func (b *bench) printM(s *Section, blobs []*Blob) {
	var rows []row
	for _, bl := range blobs {
		t := sizeTag(bl)
		rows = append(rows,
			row{"cold pull " + t + " MiB", "MB/s", "cold_" + t + "_mbs", 0},
			row{"10 cold pulls " + t + " MiB, aggregate", "MB/s", "cold10_" + t + "_mbs", 0},
			row{"  upstream GETs of the blob", "count", "cold10_" + t + "_gets", 0},
			row{"warm pull " + t + " MiB, median of 5", "MB/s", "warm_" + t + "_mbs", 0},
			row{"CPU cold pull " + t + " MiB", "s/GiB", "cpu_cold_" + t, 2},
			row{"CPU 10 cold pulls " + t + " MiB", "s/GiB", "cpu_cold10_" + t, 2},
		)
		s.ratioCheck("10 cold pulls "+t+" MiB >= 1.5x registry:3", "wharf-cache", "cold10_"+t+"_mbs", "registry3-proxy", "cold10_"+t+"_mbs", 1.5)
		s.atMost("10 cold pulls "+t+" MiB: one upstream GET", "wharf-cache", "cold10_"+t+"_gets", 1, "GETs")
		s.ratioCheck("cold pull "+t+" MiB >= registry:3", "wharf-cache", "cold_"+t+"_mbs", "registry3-proxy", "cold_"+t+"_mbs", 1)
		s.ratioCheck("warm pull "+t+" MiB >= 0.9x nginx sendfile", "wharf-cache", "warm_"+t+"_mbs", "nginx-sendfile", "warm_"+t+"_mbs", 0.9)
	}
	rows = append(rows, row{"mirror peak RSS", "MiB", "rss_front_mib", 1}, row{"peak RSS with upstream", "MiB", "rss_mib", 1})
	b.printSection(s, rows)
}
