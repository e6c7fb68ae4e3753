package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wharf-dev/wharf/backend/registry/gc"
	"github.com/wharf-dev/wharf/backend/storage/localfs"
	"github.com/wharf-dev/wharf/gateway"
)

// cmdGC runs `wharf gc`: mark and sweep on every registry site's root,
// safe while `wharf serve` serves the same data (see backend/registry/gc).
func cmdGC(args []string, stdout, stderr io.Writer) int {
	var (
		dryRun, untagged bool
		grace            time.Duration
	)
	path, _, ok := loadFlags("gc", args, stderr, true, func(fs *flag.FlagSet) {
		fs.BoolVar(&dryRun, "dry-run", false, "list what would be removed, remove nothing")
		fs.BoolVar(&untagged, "delete-untagged", false, "also remove manifests that no tag reaches")
		fs.DurationVar(&grace, "grace", gc.DefaultGrace, "never remove anything modified more recently than this")
	})
	if !ok {
		return 2
	}
	if grace < 0 {
		fmt.Fprintln(stderr, "wharf gc: -grace must not be negative")
		return 2
	}
	cfg, err := gateway.LoadConfig(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if grace < time.Minute {
		fmt.Fprintf(stderr, "wharf gc: warning: -grace %s: a push in progress (blobs uploaded, manifest not yet) may lose its blobs and fail\n", grace)
	}
	if grace == 0 {
		grace = -1 // gc.Options: zero means the default
	}
	verb := "removed"
	if dryRun {
		verb = "would remove"
	}
	seen := map[string]bool{}
	sites := 0
	for _, s := range cfg.Sites {
		if s.Backend != "registry" || s.Registry == nil {
			continue
		}
		root := cfg.DataPath(s.Registry.Root)
		if seen[root] {
			continue
		}
		seen[root] = true
		sites++
		if _, err := os.Stat(root); errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(stdout, "site %s (%s): no data yet\n", s.Host, root)
			continue
		}
		res, err := gcRoot(ctx, root, gc.Options{
			DeleteUntagged: untagged,
			DryRun:         dryRun,
			Grace:          grace,
			Report: func(it gc.Item) {
				switch it.Kind {
				case gc.KindManifest:
					fmt.Fprintf(stdout, "%s manifest %s@%s\n", verb, it.Repo, it.Digest)
				case gc.KindBlob:
					fmt.Fprintf(stdout, "%s blob %s (%d bytes)\n", verb, it.Digest, it.Size)
				}
			},
		})
		if err != nil {
			fmt.Fprintf(stderr, "wharf gc: site %s (%s): %v\n", s.Host, root, err)
			return 1
		}
		fmt.Fprintf(stdout, "site %s (%s): %s %d manifests, %d blobs (%s), %d repository links; %d blobs kept\n",
			s.Host, root, verb, res.Manifests, res.Blobs, humanBytes(res.Bytes), res.Links, res.Kept)
	}
	if sites == 0 {
		fmt.Fprintf(stderr, "wharf gc: %s has no site with backend = \"registry\"; nothing to collect\n", path)
		return 1
	}
	return 0
}

func gcRoot(ctx context.Context, root string, o gc.Options) (*gc.Result, error) {
	st, err := localfs.New(localfs.Options{Root: root})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return gc.Run(ctx, st, o)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB, %d bytes", float64(n)/float64(div), "KMGTPE"[exp], n)
}
