package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/wharf-dev/wharf/bench/internal/servers"
)

// sectionD is issue #15's acceptance: wharf's registry site on S3 against
// registry:3 with its S3 driver, both on the same versitygw (started once
// for the section, outside both setups' CPU and RSS figures, reported
// beside them as "S3 server CPU"), plain HTTP, no auth: push, pull,
// parallel pulls and the manifest HEAD rate. The s3-direct column is the
// machine's limit for a pull from this S3 server: the same client GETs
// the blob from versitygw with a pre-signed URL, no registry between.
func (b *bench) sectionD(ctx context.Context) *Section {
	s := newSection("D", "issue #15: registry on S3 (versitygw), plain HTTP, no auth", b.cfg.runs, "wharf-s3", "registry3-s3", "s3-direct")
	g, err := b.env.VersityGW(ctx)
	if err != nil {
		s.note("wharf-s3", err.Error())
		b.printD(s)
		return s
	}
	defer g.Stop(b.cfg.keep)
	side := g.Group()
	setups := []setup{
		{name: "wharf-s3", wharf: true, side: side, start: func(ctx context.Context) (*servers.Stack, string, string, error) {
			st, base, err := b.env.Wharf(ctx, servers.WharfSpec{Backend: "registry", Host: "127.0.0.1", S3: g})
			return st, base, "", err
		}},
		{name: "registry3-s3", side: side, start: func(ctx context.Context) (*servers.Stack, string, string, error) {
			st, base, err := b.env.Registry3S3(ctx, g)
			return st, base, "", err
		}},
		{name: "s3-direct", static: true, start: func(ctx context.Context) (*servers.Stack, string, string, error) {
			return &servers.Stack{Name: "s3-direct", Procs: g.Procs, Borrowed: true}, g.Endpoint, "", nil
		}},
	}
	var direct string // pre-signed URL of the blob in the bucket
	for r := 0; r < b.cfg.runs && ctx.Err() == nil; r++ {
		for _, sp := range rotate(setups, r) {
			if !b.cfg.wants(sp.name) {
				continue
			}
			if sp.static {
				b.runPhase(ctx, s, r, sp, "s3", false, func(p *phase) error {
					if direct == "" {
						if direct, err = putDirect(ctx, g, b.blob); err != nil {
							return err
						}
					}
					return b.urlPhase(ctx, p, direct, "")
				})
				continue
			}
			b.runPhase(ctx, s, r, sp, "s3", false, func(p *phase) error { return b.registryPhase(ctx, p, "", true) })
		}
	}
	b.printD(s)
	return s
}

// putDirect uploads the blob into g's bucket (untimed) and returns a
// pre-signed GET URL for it.
func putDirect(ctx context.Context, g *servers.S3, bl *Blob) (string, error) {
	u, err := url.Parse(g.Endpoint)
	if err != nil {
		return "", err
	}
	c, err := minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(g.AccessKey, g.SecretKey, ""), Region: "us-east-1"})
	if err != nil {
		return "", err
	}
	f, err := os.Open(bl.Path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	const key = "s3-direct/blob"
	if _, err := c.PutObject(ctx, g.Bucket, key, f, bl.Size, minio.PutObjectOptions{PartSize: 64 << 20}); err != nil {
		return "", fmt.Errorf("put blob for s3-direct: %w", err)
	}
	p, err := c.PresignedGetObject(ctx, g.Bucket, key, 6*time.Hour, nil)
	if err != nil {
		return "", fmt.Errorf("presign: %w", err)
	}
	return p.String(), nil
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
	{"S3 server CPU push", "s/GiB", "s3_cpu_push", 2},
	{"S3 server CPU pull", "s/GiB", "s3_cpu_pull", 2},
	{"client CPU pull", "s/GiB", "client_cpu_pull", 2},
	{"machine cores busy, push", "cores", "busy_cpu_push", 2},
	{"machine cores busy, pull", "cores", "busy_cpu_pull", 2},
	{"machine cores busy, 8 pulls", "cores", "busy_cpu_pull8", 2},
}

func (b *bench) printD(s *Section) {
	s.ratioCheck("push >= 1.3x registry:3 on S3", "wharf-s3", "push_mbs", "registry3-s3", "push_mbs", 1.3)
	s.ratioCheck("pull >= 1.3x registry:3 on S3", "wharf-s3", "pull_mbs", "registry3-s3", "pull_mbs", 1.3)
	s.atMost("peak RSS < 64 MiB", "wharf-s3", "rss_mib", 64, "MiB")
	b.printSection(s, rowsD)
	if d := s.med("s3-direct", "pull_mbs"); d > 0 {
		fmt.Fprintf(b.out, "  pull as a share of s3-direct (the same GET without a registry): wharf-s3 %s%%, registry3-s3 %s%%\n",
			fmtNum(100*s.med("wharf-s3", "pull_mbs")/d, 0), fmtNum(100*s.med("registry3-s3", "pull_mbs")/d, 0))
	}
}
