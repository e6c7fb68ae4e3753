package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend/registry"
	"github.com/wharf-dev/wharf/backend/registry/migration"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/gateway"
)

// cmdMigrateStorage runs `wharf migrate-storage -config F -site HOST -to
// s3|filesystem`: it copies the registry site HOST between its file
// system root and its [site.registry.s3] bucket (both from F, whatever
// `storage` says now), verifying every blob's digest, while `wharf serve`
// keeps serving the site. Safe to run again; the last run after the
// switch-over copies what was pushed meanwhile.
func cmdMigrateStorage(args []string, stdout, stderr io.Writer) int {
	var (
		site, to string
		workers  int
	)
	path, _, ok := loadFlags("migrate-storage", args, stderr, true, func(fs *flag.FlagSet) {
		fs.StringVar(&site, "site", "", "host name of the registry site to move")
		fs.StringVar(&to, "to", "", `where to copy the site to: "s3" (from its root to its [site.registry.s3] bucket) or "filesystem" (back)`)
		fs.IntVar(&workers, "workers", migration.DefaultWorkers, "blobs copied at once")
	})
	if !ok {
		return 2
	}
	const example = "wharf migrate-storage -config gateway.toml -site registry.example.com -to s3"
	if site == "" || (to != registry.StorageS3 && to != registry.StorageFilesystem) {
		fmt.Fprintf(stderr, "wharf migrate-storage: -site and -to (s3 or filesystem) are required: %s\n", example)
		return 2
	}
	if workers < 1 {
		fmt.Fprintln(stderr, "wharf migrate-storage: -workers must be at least 1")
		return 2
	}
	cfg, err := gateway.LoadConfig(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	s, hosts := registrySite(cfg, site)
	if s == nil {
		fmt.Fprintf(stderr, "wharf migrate-storage: %s has no site with host = %q and backend = \"registry\" (registry sites: %v)\n", path, site, hosts)
		return 1
	}
	rc := s.Registry
	if rc.S3 == nil {
		fmt.Fprintf(stderr, "wharf migrate-storage: site %s has no [site.registry.s3] table: add one (bucket, endpoint, ...) next to storage = %q, run wharf check, then run this again\n", s.Host, rc.Storage)
		return 1
	}
	// The root as the site would use it with storage = "filesystem".
	root, err := filepath.Abs(cfg.DataPath(rc.Root))
	if err != nil {
		fmt.Fprintf(stderr, "wharf migrate-storage: root: %v\n", err)
		return 1
	}
	bucket := "s3://" + rc.S3.Bucket + "/" + rc.S3.Prefix
	if other := overlappingRoot(cfg, s.Host, root); other != "" {
		fmt.Fprintf(stderr, "wharf migrate-storage: the site's root %s overlaps %s: give the site its own root\n", root, other)
		return 1
	}
	if to == registry.StorageS3 {
		// Never create an empty source: a typo in root would otherwise
		// "migrate" nothing and succeed.
		if fi, err := os.Stat(filepath.Join(root, "blobs")); err != nil || !fi.IsDir() {
			fmt.Fprintf(stderr, "wharf migrate-storage: %s is not a wharf registry root (no blobs folder): nothing to copy\n", root)
			return 1
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	owner, ownerOf := dataOwner(root) // before the store creates root
	local, err := rc.OpenLocal(root, zerolog.Nop())
	if err != nil {
		fmt.Fprintf(stderr, "wharf migrate-storage: site %s: %s: %v\n", s.Host, root, err)
		return 1
	}
	defer local.Close()
	remote, err := rc.OpenS3(ctx, cfg.Env(), zerolog.Nop())
	if err != nil {
		fmt.Fprintf(stderr, "wharf migrate-storage: site %s: %s: %v\n", s.Host, bucket, err)
		return 1
	}
	defer remote.Close()
	var from, dest storage.Store = local, remote
	fromName, destName := root, bucket
	if to == registry.StorageFilesystem {
		from, dest = remote, local
		fromName, destName = bucket, root
	}
	fmt.Fprintf(stderr, "wharf migrate-storage: site %s (serving from %s now): copying %s -> %s, %d blobs at a time\n",
		s.Host, rc.Storage, fromName, destName, workers)
	o := migrateReports(stdout, stderr)
	o.From, o.To, o.Workers = from, dest, workers
	// After the switch-over clients push to the destination: their
	// tags must not be overwritten by older ones of the source.
	o.DestServed = rc.Storage == to
	res, err := migration.Run(ctx, o)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(stderr, "wharf migrate-storage: interrupted; run it again to complete the copy")
		} else {
			fmt.Fprintf(stderr, "wharf migrate-storage: %v (run it again to complete the copy)\n", err)
		}
		return 1
	}
	if to == registry.StorageFilesystem {
		// Run as root into a data_dir of the wharf user (as wharf
		// import): what this run created becomes theirs.
		if n, err := giveTo(root, ownerOf, owner); err != nil {
			fmt.Fprintf(stderr, "wharf migrate-storage: giving %s to uid %d: %v\n", root, owner.Uid, err)
			return 1
		} else if n > 0 {
			fmt.Fprintf(stdout, "gave %d files and folders to uid:gid %d:%d, the owner of %s, so that wharf serve can write there\n", n, owner.Uid, owner.Gid, ownerOf)
		}
	}
	fmt.Fprintf(stdout, "site %s: %s -> %s: copied %d blobs (%s) and %d records (%d tags, %d moved) of %d repositories; already there: %d blobs, %d records; %d skipped\n",
		s.Host, fromName, destName, res.Blobs, humanBytes(res.Bytes), res.Records, res.Tags, res.TagsMoved, res.Repos,
		res.BlobsPresent, res.RecordsPresent, res.Skipped)
	if res.Skipped > 0 {
		fmt.Fprintf(stderr, "wharf migrate-storage: %d things skipped (the \"skipped\" lines above say why); everything else is in place\n", res.Skipped)
	}
	return 0
}

// registrySite finds the registry site named host, and lists the
// registry sites for a message when there is none.
func registrySite(cfg *gateway.Config, host string) (*gateway.Site, []string) {
	var hosts []string
	var found *gateway.Site
	for i := range cfg.Sites {
		if cfg.Sites[i].Backend == gateway.KindRegistry {
			hosts = append(hosts, cfg.Sites[i].Host)
			if cfg.Sites[i].Host == strings.ToLower(strings.TrimSuffix(host, ".")) {
				found = &cfg.Sites[i]
			}
		}
	}
	return found, hosts
}

// migrateReports prints what a migration reports: skips and
// repositories with news on stdout, progress on stderr.
func migrateReports(stdout, stderr io.Writer) migration.Options {
	return migration.Options{
		Skip: func(sk migration.Skipped) { fmt.Fprintln(stdout, sk) },
		Progress: func(p migration.Progress) {
			fmt.Fprintf(stderr, "wharf migrate-storage: blobs %d of %d checked, %d copied (%s); %s read\n", p.Checked, p.Total, p.Copied, humanBytes(p.Bytes), humanBytes(p.Read))
		},
		Repo: func(r migration.RepoResult) {
			if r.Links+r.Manifests+r.Referrers+r.Tags+r.Skipped == 0 {
				return // nothing new: keep re-runs quiet
			}
			fmt.Fprintf(stdout, "repository %s: %d links, %d manifests, %d referrers, %d tags (%d moved) copied; %d records already there; %d skipped\n",
				r.Repo, r.Links, r.Manifests, r.Referrers, r.Tags, r.TagsMoved, r.Present, r.Skipped)
		},
	}
}

// overlappingRoot names another site whose storage root is root, holds it
// or lies inside it ("" if none): `wharf check` does not compare the root
// of a site on S3, which `-to filesystem` is about to fill.
func overlappingRoot(cfg *gateway.Config, host, root string) string {
	sep := string(filepath.Separator)
	for _, p := range cfg.Plan() {
		if p.Site.Host == host || p.Root == "" {
			continue
		}
		if p.Root == root || strings.HasPrefix(root, p.Root+sep) || strings.HasPrefix(p.Root, root+sep) {
			return fmt.Sprintf("the root %s of site %s", p.Root, p.Site.Host)
		}
	}
	return ""
}
