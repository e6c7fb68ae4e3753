package retention

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage/layout"
	"github.com/wharf-dev/wharf/backend/storage/localfs"
	"github.com/wharf-dev/wharf/internal/conf"
)

// BenchmarkRetention: the rules over 10,000 tags in 200 repositories (50
// tags each, one manifest per tag, pushed a day apart) in the registry's
// layout (blobs through the store; records written as plain files, which
// is what the store's PutRecord leaves, without its fsyncs, to keep the
// setup short). Each iteration is a dry run (it decides 8,000 tag and
// 8,000 manifest removals and makes none, so every iteration sees the
// same store); after the loop one real run removes them, reported as
// real-run-s, with 8 and with 32 repositories at once.
//
//	go test -run '^$' -bench Retention -benchtime 3x ./backend/registry/retention/
func BenchmarkRetention(b *testing.B) {
	for _, workers := range []int{8, 32} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) { benchRetention(b, workers) })
	}
}

func benchRetention(b *testing.B, workers int) {
	ctx := context.Background()
	root := b.TempDir()
	st, err := localfs.New(localfs.Options{Root: root})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	const repos, perRepo = 200, 50
	record := func(repo, key string, value []byte, at time.Time) {
		p := filepath.Join(root, "repositories", repo, "_"+key)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, value, 0o644); err != nil {
			b.Fatal(err)
		}
		os.Chtimes(p, at, at)
	}
	for r := 0; r < repos; r++ {
		repo := fmt.Sprintf("ci/app%03d", r)
		for i := 0; i < perRepo; i++ {
			m := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%064x","size":1},"layers":[]}`,
				backend.MediaTypeOCIManifest, r*perRepo+i))
			d := digest.FromBytes(m)
			if err := st.PutBlob(ctx, d, m); err != nil {
				b.Fatal(err)
			}
			at := now.Add(-time.Duration(perRepo-i) * 24 * time.Hour)
			record(repo, layout.Manifest(d), []byte(backend.MediaTypeOCIManifest), at)
			record(repo, layout.Tag(fmt.Sprintf("build-%d", i)), []byte(d), at)
		}
	}
	rules := []Rule{{Repos: []string{"ci/*"}, KeepLast: 10, KeepWithin: conf.Duration(5 * 24 * time.Hour), KeepTags: []string{"latest"}, UntaggedAfter: dur(24 * time.Hour)}}
	const wantTags = repos * (perRepo - 10)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := Apply(ctx, st, Options{Rules: rules, DryRun: true, Workers: workers})
		if err != nil {
			b.Fatal(err)
		}
		if res.Tags != wantTags || res.Manifests != wantTags {
			b.Fatalf("dry run: %+v, want %d tags and manifests", res, wantTags)
		}
	}
	b.StopTimer()
	start := time.Now()
	res, err := Apply(ctx, st, Options{Rules: rules, Workers: workers})
	if err != nil {
		b.Fatal(err)
	}
	if res.Tags != wantTags || res.Manifests != wantTags {
		b.Fatalf("real run: %+v", res)
	}
	b.ReportMetric(time.Since(start).Seconds(), "real-run-s")
}
