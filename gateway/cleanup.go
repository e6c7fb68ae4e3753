package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/wharf-dev/wharf/backend/registry/retention"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/localfs"
	"github.com/wharf-dev/wharf/cleanup"
)

// validateCleanup checks [gc], [[retention]] and [[webhook]] with their
// packages' rules, plus what only the whole config knows: a rule's hosts
// must name registry sites.
func (c *Config) validateCleanup(v *validation) {
	v.section("gc", c.GC.Validate())
	for i := range c.Retention {
		r := &c.Retention[i]
		key := fmt.Sprintf("retention[%d]", i)
		v.section(key, r.Validate())
		for _, h := range r.Hosts {
			if !c.hasRegistrySite(h) {
				v.add(key+".hosts", "[[retention]] host %q matches no site with backend = \"registry\", so this rule never applies", h)
			}
		}
	}
	for i := range c.Webhooks {
		v.section(fmt.Sprintf("webhook[%d]", i), c.Webhooks[i].Validate(v.env))
	}
}

func (c *Config) hasRegistrySite(glob string) bool {
	r := retention.Rule{Hosts: []string{glob}}
	for _, s := range c.Sites {
		if s.Backend == KindRegistry && r.Matches(s.Host, "") {
			return true
		}
	}
	return false
}

// CleanupJob lists what the scheduled clean-up and the admin report work
// on: each registry root once (under the first site that names it), and
// each cache root once, with the longest max_age of the cache sites
// sharing it (none if one of them has none) and the smallest max_size,
// as `wharf gc` does. Validation refuses a root shared by a registry and a cache.
func (c *Config) CleanupJob() cleanup.Job {
	job := cleanup.Job{DataDir: c.Path(c.DataDir), Rules: c.Retention}
	seen := map[string]int{}
	for _, p := range c.Plan() {
		loc := p.Location() // a folder, or s3://bucket/prefix
		if loc == "" {
			continue
		}
		switch p.Site.Backend {
		case KindRegistry:
			if _, dup := seen[loc]; dup {
				continue
			}
			seen[loc] = len(job.Sites)
			job.Sites = append(job.Sites, cleanup.Site{Host: p.Site.Host, Registry: true, Root: loc, Remote: p.Root == "", Open: p.OpenStore})
		case KindCache:
			age, size := p.Site.Cache.MaxAge.Std(), int64(p.Site.Cache.MaxSize)
			if i, dup := seen[loc]; dup {
				cs := &job.Sites[i]
				if cs.Registry {
					continue
				}
				if cs.MaxAge > 0 && (age == 0 || age > cs.MaxAge) {
					cs.MaxAge = age
				}
				if size > 0 && (cs.MaxSize == 0 || size < cs.MaxSize) {
					cs.MaxSize = size
				}
				continue
			}
			seen[loc] = len(job.Sites)
			job.Sites = append(job.Sites, cleanup.Site{Host: p.Site.Host, Root: loc, Remote: p.Root == "", MaxAge: age, MaxSize: size, Open: p.OpenStore})
		}
	}
	return job
}

// startCleanup starts the [gc] every schedule, if configured; the
// returned scheduler stops when ctx ends. The job is read from the
// current config at each run, so reloaded rules apply at the next one
// (a changed interval needs a restart).
func (g *Gateway) startCleanup(ctx context.Context, cfg *Config) *cleanup.Scheduler {
	if cfg.GC.Every == 0 {
		return nil
	}
	return cleanup.Start(ctx, cleanup.SchedulerOptions{
		Config: cfg.GC,
		Job: func() cleanup.Job {
			g.mu.Lock()
			defer g.mu.Unlock()
			return g.cfg.CleanupJob()
		},
		Log:     g.log.With().Str("component", "gc").Logger(),
		Metrics: g.cleanupMetrics,
	})
}

// siteReport is one registry site's part of GET /gc/report.
type siteReport struct {
	Host   string            `json:"host"`
	Root   string            `json:"root"`
	Items  []retention.Item  `json:"items"`
	Result *retention.Result `json:"result,omitempty"`
	Error  string            `json:"error,omitempty"`
}

// gcReport answers GET /gc/report on the admin listener: a dry run of
// the [[retention]] rules over every registry site, computed now. JSON by
// default; ?format=text gives the lines `wharf gc -dry-run` prints.
func (g *Gateway) gcReport(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	cfg := g.cfg
	g.mu.Unlock()
	text := r.URL.Query().Get("format") == "text"
	var out struct {
		Generated time.Time    `json:"generated"`
		Rules     int          `json:"rules"`
		Sites     []siteReport `json:"sites"`
	}
	out.Generated = time.Now().UTC()
	out.Rules = len(cfg.Retention)
	out.Sites = []siteReport{}
	for _, s := range cfg.CleanupJob().Sites {
		if !s.Registry {
			continue
		}
		sr := siteReport{Host: s.Host, Root: s.Root, Items: []retention.Item{}}
		res, err := reportSite(r.Context(), s, cfg.Retention, func(it retention.Item) { sr.Items = append(sr.Items, it) })
		sr.Result = res
		if err != nil {
			sr.Error = err.Error()
		}
		out.Sites = append(out.Sites, sr)
	}
	if text {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		var b strings.Builder
		for _, s := range out.Sites {
			for _, it := range s.Items {
				b.WriteString("would remove: " + it.String() + "\n")
			}
			switch {
			case s.Error != "":
				fmt.Fprintf(&b, "site %s (%s): error: %s\n", s.Host, s.Root, s.Error)
			case s.Result != nil:
				fmt.Fprintf(&b, "site %s (%s): retention would remove %d tags, %d manifests; %d repositories refused\n", s.Host, s.Root, s.Result.Tags, s.Result.Manifests, len(s.Result.Refused))
			}
		}
		_, _ = w.Write([]byte(b.String()))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}

// reportSite is a retention dry run over one registry root.
func reportSite(ctx context.Context, s cleanup.Site, rules []retention.Rule, report func(retention.Item)) (*retention.Result, error) {
	if _, err := os.Stat(s.Root); !s.Remote && errors.Is(err, os.ErrNotExist) {
		return &retention.Result{}, nil
	}
	open := s.Open
	if open == nil {
		open = func() (storage.Store, error) { return localfs.New(localfs.Options{Root: s.Root}) }
	}
	st, err := open()
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return retention.Apply(ctx, st, retention.Options{Host: s.Host, Rules: rules, DryRun: true, Report: report})
}
