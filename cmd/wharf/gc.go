package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/wharf-dev/wharf/backend/cache"
	"github.com/wharf-dev/wharf/backend/registry/gc"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/cleanup"
	"github.com/wharf-dev/wharf/gateway"
)

// cmdGC runs `wharf gc`: the [[retention]] rules and then mark and sweep on every registry site's root
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
	// Stores are opened through the gateway's site factory, as `wharf
	// serve` opens them.
	sites, code := collectSites(ctx, cfg, verb, gc.Options{DeleteUntagged: untagged, DryRun: dryRun, Grace: grace}, stdout, stderr)
	if code != 0 {
		return code
	}
	if sites == 0 {
		fmt.Fprintf(stderr, "wharf gc: %s has no site with backend = \"registry\" and no cache site with max_age or max_size; nothing to collect\n", path)
		return 1
	}
	return 0
}

// cacheLimits gives each cache location (root or bucket prefix) its
// eviction limits. Config validation
// refuses a cache root that is also a registry root; a root shared by cache
// sites is evicted with the longest max_age among them (none if one of them
// has none) and the smallest max_size.
func cacheLimits(plans []gateway.SitePlan) (maxAge map[string]time.Duration, maxSize map[string]int64) {
	maxAge, maxSize = map[string]time.Duration{}, map[string]int64{}
	for _, p := range plans {
		if p.Site.Backend != gateway.KindCache {
			continue
		}
		loc := p.Location()
		age, seen := maxAge[loc]
		if a := p.Site.Cache.MaxAge.Std(); !seen || age > 0 && (a == 0 || a > age) {
			maxAge[loc] = a
		}
		if m := int64(p.Site.Cache.MaxSize); m > 0 && (maxSize[loc] == 0 || m < maxSize[loc]) {
			maxSize[loc] = m
		}
	}
	return maxAge, maxSize
}

// collectSites runs retention and gc on every registry root and eviction on
// every cache root with limits, once per storage location. It returns how
// many sites it worked on, and a non-zero exit code when one failed.
func collectSites(ctx context.Context, cfg *gateway.Config, verb string, o gc.Options, stdout, stderr io.Writer) (int, int) {
	plans := cfg.Plan()
	cacheAge, cacheSize := cacheLimits(plans)
	seen := map[string]bool{}
	sites := 0
	for i := range plans {
		p := &plans[i]
		loc := p.Location()
		if loc == "" || seen[loc] {
			continue
		}
		seen[loc] = true
		switch p.Site.Backend {
		case gateway.KindRegistry:
			sites++
			if code := collectRegistrySite(ctx, cfg, p, verb, o, stdout, stderr); code != 0 {
				return sites, code
			}
		case gateway.KindCache:
			maxAge, maxSize := cacheAge[loc], cacheSize[loc]
			if maxAge == 0 && maxSize == 0 {
				fmt.Fprintf(stdout, "site %s (%s): cache without max_age or max_size; nothing evicted\n", p.Site.Host, loc)
				continue
			}
			sites++
			if code := evictCacheSite(ctx, p, verb, cache.EvictOptions{MaxAge: maxAge, MaxSize: maxSize, DryRun: o.DryRun}, stdout, stderr); code != 0 {
				return sites, code
			}
		}
	}
	return sites, 0
}

// collectRegistrySite runs retention and gc on one registry root, under
// the site's gc lease when its storage is shared by several instances
// (S3; the data directory's flock does not reach them). A lease held by
// another collection skips the site with a message: that one collects
// it.
func collectRegistrySite(ctx context.Context, cfg *gateway.Config, p *gateway.SitePlan, verb string, o gc.Options, stdout, stderr io.Writer) int {
	if !o.DryRun && p.Root == "" {
		st, err := p.OpenStore()
		if err != nil {
			fmt.Fprintf(stderr, "wharf gc: site %s (%s): %v\n", p.Site.Host, p.Location(), err)
			return 1
		}
		defer st.Close()
		lctx, release, err := cleanup.LockStore(ctx, st, "wharf gc")
		if errors.Is(err, storage.ErrGCRunning) {
			fmt.Fprintf(stdout, "site %s (%s): skipped: %v\n", p.Site.Host, p.Location(), err)
			return 0
		}
		if err != nil {
			fmt.Fprintf(stderr, "wharf gc: site %s (%s): %v\n", p.Site.Host, p.Location(), err)
			return 1
		}
		defer release()
		ctx = lctx
	}
	if code := retainSite(ctx, cfg, p, o.DryRun, stdout, stderr); code != 0 {
		return code
	}
	code := gcRegistrySite(ctx, p, verb, o, stdout, stderr)
	if code != 0 && ctx.Err() != nil {
		fmt.Fprintf(stderr, "wharf gc: site %s (%s): stopped: %v\n", p.Site.Host, p.Location(), context.Cause(ctx))
	}
	return code
}

// gcRegistrySite collects one registry root and prints what went.
func gcRegistrySite(ctx context.Context, p *gateway.SitePlan, verb string, o gc.Options, stdout, stderr io.Writer) int {
	host, root := p.Site.Host, p.Location()
	if _, err := os.Stat(root); p.Root != "" && errors.Is(err, os.ErrNotExist) {
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
	res, err := gcStore(ctx, p, o)
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
func evictCacheSite(ctx context.Context, p *gateway.SitePlan, verb string, o cache.EvictOptions, stdout, stderr io.Writer) int {
	host, root := p.Site.Host, p.Location()
	if _, err := os.Stat(root); p.Root != "" && errors.Is(err, os.ErrNotExist) {
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
	st, err := p.OpenStore()
	if err != nil {
		fmt.Fprintf(stderr, "wharf gc: site %s (%s): %v\n", host, root, err)
		return 1
	}
	defer st.Close()
	if !o.DryRun { // a cache on S3 is shared by several instances: one eviction at a time
		lctx, release, err := cleanup.LockStore(ctx, st, "wharf gc")
		if errors.Is(err, storage.ErrGCRunning) {
			fmt.Fprintf(stdout, "site %s (%s): skipped: %v\n", host, root, err)
			return 0
		}
		if err != nil {
			fmt.Fprintf(stderr, "wharf gc: site %s (%s): %v\n", host, root, err)
			return 1
		}
		defer release()
		ctx = lctx
	}
	res, err := cache.Evict(ctx, st, o)
	if err != nil {
		fmt.Fprintf(stderr, "wharf gc: site %s (%s): %v\n", host, root, err)
		return 1
	}
	if res.Unreadable > 0 {
		fmt.Fprintf(stderr, "wharf gc: site %s (%s): warning: %d cached manifests do not parse; the blobs they name were judged by their own last use\n", host, root, res.Unreadable)
	}
	var why []string
	if o.MaxAge > 0 {
		why = append(why, "not used for "+o.MaxAge.String())
	}
	if o.MaxSize > 0 {
		why = append(why, fmt.Sprintf("to keep within max_size %s (%s stored)", cache.Size(o.MaxSize), humanBytes(res.Total)))
	}
	fmt.Fprintf(stdout, "site %s (%s): %s %d tags, %d manifests, %d blobs (%s), %d repository links %s; %d blobs (%s) kept\n",
		host, root, verb, res.Tags, res.Manifests, res.Blobs, humanBytes(res.Bytes), res.Links, strings.Join(why, " or "), res.KeptBlobs, humanBytes(res.KeptBytes))
	return 0
}

func gcStore(ctx context.Context, p *gateway.SitePlan, o gc.Options) (*gc.Result, error) {
	st, err := p.OpenStore()
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
