package ui

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/layout"
	"github.com/wharf-dev/wharf/backend/storage/localfs"
)

// The page benchmarks of issue #13: the repositories page of a registry
// with 10,000 repositories and the tags page of a repository with 5,000
// tags, rendered server side from a real local store (target: < 100 ms).
// `make bench` runs them as section U (bench/run). The store is written
// straight through the storage API (no HTTP) under /dev/shm when it
// exists, so building it does not wait for 35,000 fsyncs; the pages read
// it through the same code as on disk.

const (
	benchRepos = 10000
	benchTags  = 5000
)

func benchRoot(b *testing.B) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		dir, err := os.MkdirTemp("/dev/shm", "wharf-ui-bench-")
		if err == nil {
			b.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return b.TempDir()
}

// benchImages puts n distinct small images (config + 3 layers described,
// manifest stored) into st and returns their manifests' digests.
func benchImages(b *testing.B, st storage.Store, n int) []digest.Digest {
	ctx := context.Background()
	var out []digest.Digest
	for i := range n {
		cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","created":"2026-01-02T03:04:05Z","config":{"Labels":{"n":"%d","org.opencontainers.image.source":"https://example.test/%d"}}}`, i, i))
		cd := digest.FromBytes(cfg)
		if err := st.PutBlob(ctx, cd, cfg); err != nil {
			b.Fatal(err)
		}
		m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[`,
			backend.MediaTypeOCIManifest, cd, len(cfg))
		for l := range 3 {
			if l > 0 {
				m += ","
			}
			m += fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":%q,"size":%d}`, digest.FromString(fmt.Sprintf("%d-%d", i, l)), 1<<20*(l+1))
		}
		m += "]}"
		md := digest.FromString(m)
		if err := st.PutBlob(ctx, md, []byte(m)); err != nil {
			b.Fatal(err)
		}
		out = append(out, md)
	}
	return out
}

func benchStore(b *testing.B) storage.Store {
	st, err := localfs.New(localfs.Options{Root: benchRoot(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

func tagRepo(b *testing.B, st storage.Store, repo, tag string, d digest.Digest) {
	ctx := context.Background()
	if err := st.PutRecord(ctx, repo, layout.Manifest(d), []byte(backend.MediaTypeOCIManifest)); err != nil {
		b.Fatal(err)
	}
	if err := st.PutRecord(ctx, repo, layout.Tag(tag), []byte(d)); err != nil {
		b.Fatal(err)
	}
}

func benchUI(b *testing.B, st storage.Store) *UI {
	u, err := New(Config{Host: "registry.test", Store: st, Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	return u
}

// renderPage fetches one page and fails on anything but 200.
func renderPage(b *testing.B, u *UI, target string) {
	rec := httptest.NewRecorder()
	u.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
	if rec.Code != http.StatusOK {
		b.Fatalf("%s: %d %s", target, rec.Code, rec.Body)
	}
}

func BenchmarkReposPage10k(b *testing.B) {
	st := benchStore(b)
	imgs := benchImages(b, st, 100)
	for i := range benchRepos {
		tagRepo(b, st, fmt.Sprintf("team%02d/app-%05d", i%50, i), "latest", imgs[i%len(imgs)])
	}
	// the first page also holds a repository with 2,000 tags
	for i := range 2000 {
		tagRepo(b, st, "team00/aaa-many-tags", fmt.Sprintf("t%d", i), imgs[i%len(imgs)])
	}
	for _, bc := range []struct{ name, target string }{
		{"first", "/"},
		{"last", fmt.Sprintf("/?page=%d", benchRepos/50)},
		{"search", "/?q=app-0999"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			u := benchUI(b, st)
			renderPage(b, u, bc.target) // warm: names listed, manifests parsed
			for b.Loop() {
				renderPage(b, u, bc.target)
			}
		})
	}
	// cold: a new UI (empty manifest cache) for every render
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			renderPage(b, benchUI(b, st), "/")
		}
	})
}

func BenchmarkTagsPage5k(b *testing.B) {
	st := benchStore(b)
	imgs := benchImages(b, st, 500)
	for i := range benchTags {
		tagRepo(b, st, "big/repo", fmt.Sprintf("v1.%d.%d", i/100, i%100), imgs[i%len(imgs)])
	}
	for _, bc := range []struct{ name, target string }{
		{"by-name", "/r/big/repo"},
		{"by-date", "/r/big/repo?sort=date"},
		{"last-page", fmt.Sprintf("/r/big/repo?page=%d", benchTags/50)},
		{"image", "/r/big/repo@" + string(imgs[0])}, // lists the 10 of 5,000 tags that name it
	} {
		b.Run(bc.name, func(b *testing.B) {
			u := benchUI(b, st)
			renderPage(b, u, bc.target) // warm: names listed, manifests parsed
			for b.Loop() {
				renderPage(b, u, bc.target)
			}
		})
	}
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			renderPage(b, benchUI(b, st), "/r/big/repo?sort=date")
		}
	})
}
