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

	"github.com/wharf-dev/wharf/backend/cache"
	"github.com/wharf-dev/wharf/backend/registry/gc"
	"github.com/wharf-dev/wharf/backend/storage/localfs"
	"github.com/wharf-dev/wharf/cleanup"
	"github.com/wharf-dev/wharf/gateway"
)

// cmdGC runs `wharf gc`: mark and sweep on every registry site's root
// (see backend/registry/gc), and eviction of what cache sites with a
// max_age have not used for that long (see backend/cache/evict.go); both
// are safe while `wharf serve` serves the same data.
func cmdGC(args []string, stdout, stderr io.Writer) int {
	var (
		dryRun, untagged bool
		grace            time.Duration
	)
	path, _, ok := loadFlags("gc", args, stderr, true, func(fs *flag.FlagSet) {
		fs.BoolVar(&dryRun, "dry-run", false, "list what would be removed, remove nothing")
		fs.BoolVar(&untagged, "delete-untagged", false, "registry sites: also remove manifests that no tag reaches")
		fs.DurationVar(&grace, "grace", gc.DefaultGrace, "registry sites: never remove anything modified more recently than this (cache sites evict by their max_age)")
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
	if !dryRun { // one clean-up at a time per data directory ([gc] every too)
		unlock, err := cleanup.Lock(cfg.Path(cfg.DataDir))
		if err != nil {
			fmt.Fprintf(stderr, "wharf gc: %v\n", err)
			return 1
		}
		defer unlock()
	}
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
	// Roots of registry sites are never evicted, whatever a cache site
	// says; a root shared by cache sites is evicted with the longest
	// max_age among them (none if one of them has none).
	regRoots := map[string]string{}
	cacheAge := map[string]time.Duration{}
	for _, s := range cfg.Sites {
		switch {
		case s.Backend == "registry" && s.Registry != nil:
			regRoots[cfg.DataPath(s.Registry.Root)] = s.Host
		case s.Backend == "cache" && s.Cache != nil:
			root := cfg.DataPath(s.Cache.Root)
			age, seen := cacheAge[root]
			if a := s.Cache.MaxAge.Std(); !seen || age > 0 && (a == 0 || a > age) {
				cacheAge[root] = a
			}
		}
	}
	seen := map[string]bool{}
	sites := 0
	for _, s := range cfg.Sites {
		switch {
		case s.Backend == "registry" && s.Registry != nil:
			root := cfg.DataPath(s.Registry.Root)
			if seen[root] {
				continue
			}
			seen[root] = true
			sites++
			if code := retainSite(ctx, cfg, s.Host, root, dryRun, stdout, stderr); code != 0 {
				return code
			}
			if code := gcRegistrySite(ctx, s.Host, root, verb, gc.Options{DeleteUntagged: untagged, DryRun: dryRun, Grace: grace}, stdout, stderr); code != 0 {
				return code
			}
		case s.Backend == "cache" && s.Cache != nil:
			root := cfg.DataPath(s.Cache.Root)
			if host, ok := regRoots[root]; ok {
				fmt.Fprintf(stderr, "wharf gc: cache site %s: its root %s is also the root of registry site %s; not evicting anything there\n", s.Host, root, host)
				return 1
			}
			if seen[root] {
				continue
			}
			seen[root] = true
			maxAge := cacheAge[root]
			if maxAge == 0 {
				fmt.Fprintf(stdout, "site %s (%s): cache without max_age; nothing evicted\n", s.Host, root)
				continue
			}
			sites++
			if code := evictCacheSite(ctx, s.Host, root, verb, cache.EvictOptions{MaxAge: maxAge, DryRun: dryRun}, stdout, stderr); code != 0 {
				return code
			}
		}
	}
	if sites == 0 {
		fmt.Fprintf(stderr, "wharf gc: %s has no site with backend = \"registry\" and no cache site with max_age; nothing to collect\n", path)
		return 1
	}
	return 0
}

// gcRegistrySite collects one registry root and prints what went.
func gcRegistrySite(ctx context.Context, host, root, verb string, o gc.Options, stdout, stderr io.Writer) int {
	if _, err := os.Stat(root); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stdout, "site %s (%s): no data yet\n", host, root)
		return 0
	}
	o.Report = func(it gc.Item) {
		switch it.Kind {
		case gc.KindManifest:
			fmt.Fprintf(stdout, "%s manifest %s@%s\n", verb, it.Repo, it.Digest)
		case gc.KindBlob:
			fmt.Fprintf(stdout, "%s blob %s (%d bytes)\n", verb, it.Digest, it.Size)
		}
	}
	res, err := gcRoot(ctx, root, o)
	if err != nil {
		fmt.Fprintf(stderr, "wharf gc: site %s (%s): %v\n", host, root, err)
		return 1
	}
	fmt.Fprintf(stdout, "site %s (%s): %s %d manifests, %d blobs (%s), %d repository links; %d blobs kept\n",
		host, root, verb, res.Manifests, res.Blobs, humanBytes(res.Bytes), res.Links, res.Kept)
	return 0
}

// evictCacheSite evicts what one cache root has not used for o.MaxAge
// and prints what went.
func evictCacheSite(ctx context.Context, host, root, verb string, o cache.EvictOptions, stdout, stderr io.Writer) int {
	if _, err := os.Stat(root); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stdout, "site %s (%s): no data yet\n", host, root)
		return 0
	}
	o.Report = func(it cache.EvictItem) {
		used := it.LastUse.UTC().Format(time.RFC3339)
		switch it.Kind {
		case cache.EvictTag:
			fmt.Fprintf(stdout, "%s tag %s:%s (last used %s)\n", verb, it.Repo, it.Tag, used)
		case cache.EvictManifest:
			fmt.Fprintf(stdout, "%s manifest %s@%s (last used %s)\n", verb, it.Repo, it.Digest, used)
		case cache.EvictBlob:
			fmt.Fprintf(stdout, "%s blob %s (%d bytes, last used %s)\n", verb, it.Digest, it.Size, used)
		}
	}
	st, err := localfs.New(localfs.Options{Root: root})
	if err != nil {
		fmt.Fprintf(stderr, "wharf gc: site %s (%s): %v\n", host, root, err)
		return 1
	}
	defer st.Close()
	res, err := cache.Evict(ctx, st, o)
	if err != nil {
		fmt.Fprintf(stderr, "wharf gc: site %s (%s): %v\n", host, root, err)
		return 1
	}
	if res.Unreadable > 0 {
		fmt.Fprintf(stderr, "wharf gc: site %s (%s): warning: %d cached manifests do not parse; the blobs they name were judged by their own last use\n", host, root, res.Unreadable)
	}
	fmt.Fprintf(stdout, "site %s (%s): %s %d tags, %d manifests, %d blobs (%s), %d repository links not used for %s; %d blobs (%s) kept\n",
		host, root, verb, res.Tags, res.Manifests, res.Blobs, humanBytes(res.Bytes), res.Links, o.MaxAge, res.KeptBlobs, humanBytes(res.KeptBytes))
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
