package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/wharf-dev/wharf/backend/registry/importer"
	"github.com/wharf-dev/wharf/gateway"
)

// cmdImport runs `wharf import -from DIR -config F -site HOST`: it takes
// a registry:2/registry:3 filesystem storage root over into the registry
// site HOST of F (see backend/registry/importer). Safe to run again, and
// safe while `wharf serve` serves the site.
func cmdImport(args []string, stdout, stderr io.Writer) int {
	var (
		from, site            string
		dryRun, doCopy, trust bool
		workers               int
	)
	path, _, ok := loadFlags("import", args, stderr, true, func(fs *flag.FlagSet) {
		fs.StringVar(&from, "from", "", "the registry's storage root (its filesystem rootdirectory, e.g. /var/lib/registry)")
		fs.StringVar(&site, "site", "", "host name of the registry site to import into")
		fs.BoolVar(&dryRun, "dry-run", false, "read and verify everything, report what would be imported, write nothing")
		fs.BoolVar(&doCopy, "copy", false, "copy blobs even where a hard link is possible")
		fs.BoolVar(&trust, "trust-digests", false, "do not re-hash hard-linked blobs (seconds for any size; a blob corrupted on disk comes over as it is)")
		fs.IntVar(&workers, "workers", 0, "blobs hashed at once (default: the number of CPUs)")
	})
	if !ok {
		return 2
	}
	if from == "" || site == "" {
		fmt.Fprintln(stderr, "wharf import: -from and -site are required: wharf import -from /var/lib/registry -config gateway.toml -site registry.example.com")
		return 2
	}
	cfg, err := gateway.LoadConfig(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// The site's store is opened through the gateway's site factory, as
	// `wharf serve` opens it.
	var plan *gateway.SitePlan
	var hosts []string
	plans := cfg.Plan()
	for i := range plans {
		if plans[i].Site.Backend == gateway.KindRegistry {
			hosts = append(hosts, plans[i].Site.Host)
			if plans[i].Site.Host == strings.ToLower(strings.TrimSuffix(site, ".")) {
				plan = &plans[i]
			}
		}
	}
	if plan == nil {
		fmt.Fprintf(stderr, "wharf import: %s has no site with host = %q and backend = \"registry\" (registry sites: %v)\n", path, site, hosts)
		return 1
	}
	root := plan.Root
	if _, err := importer.FindRoot(from); err != nil {
		fmt.Fprintf(stderr, "wharf import: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	owner, ownerOf := dataOwner(root)
	st, err := plan.OpenStore()
	if err != nil {
		fmt.Fprintf(stderr, "wharf import: site %s (%s): %v\n", site, root, err)
		return 1
	}
	defer st.Close()
	o := importer.Options{
		From: from, Store: st, DryRun: dryRun, Copy: doCopy, TrustDigests: trust, Workers: workers,
		Skip: func(s importer.Skipped) { fmt.Fprintln(stdout, s) },
		Progress: func(done, total int, bytes int64) {
			fmt.Fprintf(stderr, "wharf import: blobs %d of %d done (%s read)\n", done, total, humanBytes(bytes))
		},
		Repo: func(r importer.RepoResult) {
			fmt.Fprintf(stdout, "repository %s: %d tags, %d manifests new; %d tags, %d manifests already there; %d skipped\n",
				r.Repo, r.Tags, r.Manifests, r.TagsPresent, r.ManifestsPresent, r.Skipped)
		},
	}
	res, err := importer.Run(ctx, o)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(stderr, "wharf import: interrupted; run it again to complete the import")
		} else {
			fmt.Fprintf(stderr, "wharf import: %v\n", err)
		}
		return 1
	}
	verb := "imported"
	if dryRun {
		verb = "would import"
	} else if n, err := giveTo(root, ownerOf, owner); err != nil {
		fmt.Fprintf(stderr, "wharf import: giving %s to uid %d: %v\n", root, owner.Uid, err)
		return 1
	} else if n > 0 {
		fmt.Fprintf(stdout, "gave %d files and folders to uid:gid %d:%d, the owner of %s, so that wharf serve can write there\n", n, owner.Uid, owner.Gid, ownerOf)
	}
	fmt.Fprintf(stdout, "site %s (%s): %s %d repositories, %d tags, %d manifests, %d blobs (%s; %d hard-linked, %d copied); already there: %d tags, %d manifests, %d blobs; %d skipped\n",
		site, root, verb, res.Repos, res.Tags, res.Manifests, res.Blobs, humanBytes(res.Bytes), res.Linked, res.Copied,
		res.TagsPresent, res.ManifestsPresent, res.BlobsPresent, res.Skipped)
	if res.Skipped > 0 {
		fmt.Fprintf(stderr, "wharf import: %d things skipped (the \"skipped\" lines above say why); everything else is in place\n", res.Skipped)
	}
	return 0
}

// dataOwner returns the owner of root or, if it does not exist yet, of
// its nearest existing parent (data_dir): who runs `wharf serve` there.
func dataOwner(root string) (*syscall.Stat_t, string) {
	for p := filepath.Clean(root); ; p = filepath.Dir(p) {
		var st syscall.Stat_t
		if syscall.Stat(p, &st) == nil {
			return &st, p
		}
		if p == filepath.Dir(p) {
			return nil, ""
		}
	}
}

// giveTo: an import run as root (needed to hard-link files a registry
// container wrote as root) would leave root-owned folders that wharf
// serve, running as its own user, cannot write into. When we are root
// and the data belongs to someone else, everything below root becomes
// theirs. Hard-linked blobs share their inode with the old registry's
// files, which change owner with them.
// The folders between ownerOf and root (created by this run) go too.
func giveTo(root, ownerOf string, owner *syscall.Stat_t) (int, error) {
	if owner == nil || os.Geteuid() != 0 || owner.Uid == 0 {
		return 0, nil
	}
	n := 0
	give := func(p string) error {
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		if st.Uid == owner.Uid && st.Gid == owner.Gid {
			return nil
		}
		n++
		return os.Lchown(p, int(owner.Uid), int(owner.Gid))
	}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return give(p)
	})
	for p := filepath.Dir(filepath.Clean(root)); err == nil && len(p) > len(ownerOf) && p != filepath.Dir(p); p = filepath.Dir(p) {
		err = give(p)
	}
	return n, err
}
