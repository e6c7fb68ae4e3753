package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/wharf-dev/wharf/backend/registry/retention"
	"github.com/wharf-dev/wharf/gateway"
)

// retainSite applies the [[retention]] rules to one registry root before
// its gc (`wharf gc`), printing each removed tag and manifest with the
// rule and the reason ("would remove: rule 1 (repos ci/*): tag ci/app:abc
// not in newest 10, pushed 41d ago" with -dry-run).
func retainSite(ctx context.Context, cfg *gateway.Config, p *gateway.SitePlan, dryRun bool, stdout, stderr io.Writer) int {
	host, root := p.Site.Host, p.Location()
	if _, err := os.Stat(root); p.Root != "" && errors.Is(err, os.ErrNotExist) {
		return 0 // gcRegistrySite says "no data yet"
	}
	if len(retention.ForHost(cfg.Retention, host)) == 0 {
		return 0
	}
	verb := "removed"
	if dryRun {
		verb = "would remove"
	}
	st, err := p.OpenStore()
	if err != nil {
		fmt.Fprintf(stderr, "wharf gc: site %s (%s): %v\n", host, root, err)
		return 1
	}
	defer st.Close()
	res, err := retention.Apply(ctx, st, retention.Options{
		Host:   host,
		Rules:  cfg.Retention,
		DryRun: dryRun,
		Report: func(it retention.Item) {
			if it.Kind == retention.KindRefused {
				fmt.Fprintf(stderr, "wharf gc: warning: %s\n", it)
				return
			}
			fmt.Fprintf(stdout, "%s: %s\n", verb, it)
		},
	})
	if err != nil {
		fmt.Fprintf(stderr, "wharf gc: site %s (%s): %v\n", host, root, err)
		return 1
	}
	fmt.Fprintf(stdout, "site %s (%s): retention %s %d tags, %d manifests in %d repositories with a rule; %d repositories refused\n",
		host, root, verb, res.Tags, res.Manifests, res.Repos, len(res.Refused))
	return 0
}
