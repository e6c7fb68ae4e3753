package gc

import (
	"context"
	"fmt"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage/layout"
	"github.com/wharf-dev/wharf/backend/storage/localfs"
)

// BenchmarkMark: one dry run over a registry of 50 repositories with 40
// tagged images each (config, 3 layers, manifest: 10,000 blobs), written
// straight through the store in the registry's layout. It measures the
// listing and the mark; a dry run removes nothing, so every iteration sees
// the same store.
func BenchmarkMark(b *testing.B) {
	ctx := context.Background()
	root := b.TempDir()
	st, err := localfs.New(localfs.Options{Root: root})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	put := func(data []byte) digest.Digest {
		d := digest.FromBytes(data)
		if err := st.PutBlob(ctx, d, data); err != nil {
			b.Fatal(err)
		}
		return d
	}
	for r := 0; r < 50; r++ {
		repo := fmt.Sprintf("team/app%d", r)
		for i := 0; i < 40; i++ {
			var layers string
			for l := 0; l < 3; l++ {
				ld := put([]byte(fmt.Sprintf("layer %d %d %d", r, i, l)))
				st.PutRecord(ctx, repo, layout.BlobLink(ld), nil)
				layers += fmt.Sprintf(`,{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":%q,"size":1}`, ld)
			}
			cd := put([]byte(fmt.Sprintf(`{"config":"%d %d"}`, r, i)))
			m := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":1},"layers":[%s]}`,
				backend.MediaTypeOCIManifest, cd, layers[1:]))
			md := put(m)
			st.PutRecord(ctx, repo, layout.Manifest(md), []byte(backend.MediaTypeOCIManifest))
			st.PutRecord(ctx, repo, layout.Tag("v"+fmt.Sprint(i)), []byte(md))
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := Run(ctx, st, Options{DryRun: true, DeleteUntagged: true})
		if err != nil {
			b.Fatal(err)
		}
		if res.Kept != 10000 || res.Marked != 10000 {
			b.Fatalf("kept %d, marked %d", res.Kept, res.Marked)
		}
	}
}
