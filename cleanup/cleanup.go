// Package cleanup is wharf's scheduled clean-up ([gc] every): at each run
// it applies the [[retention]] rules and then garbage-collects every
// registry root (backend/registry/retention, backend/registry/gc), and
// evicts from cache roots with max_age (backend/cache), all while the
// registry keeps serving. A lock file under data_dir (flock) keeps two
// runs — the schedule, `wharf gc`, another process on the same data
// directory — from overlapping. Every run is logged and counted in
// Prometheus metrics.
package cleanup

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend/cache"
	"github.com/wharf-dev/wharf/backend/registry/gc"
	"github.com/wharf-dev/wharf/backend/registry/retention"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/localfs"
)

// Site is one root to clean: a registry root (retention, then gc) or a
// cache root with a max age (eviction). The gateway lists each root once.
type Site struct {
	Host     string
	Registry bool // a registry root; else a cache root
	Root     string
	MaxAge   time.Duration // cache roots: evict what was unused this long; 0 = never
	MaxSize  int64         // cache roots: evict least recently used images over this many bytes; 0 = no budget
	// Remote: Root names a bucket ("s3://bucket/prefix"), not a folder.
	Remote bool
	// Open opens the root's store as the site's backend does; nil: the
	// local file system store at Root.
	Open func() (storage.Store, error) `json:"-"`
}

func (s Site) open() (storage.Store, error) {
	if s.Open != nil {
		return s.Open()
	}
	return localfs.New(localfs.Options{Root: s.Root})
}

// Job is what one run does.
type Job struct {
	DataDir string // where the lock lives
	Sites   []Site
	Rules   []retention.Rule
	// Grace for the registry gc (gc.Options.Grace; zero = its default).
	Grace time.Duration
}

// Summary is what one run did.
type Summary struct {
	Tags, Manifests int // by retention and gc
	Blobs           int
	Bytes           int64 // freed
	Evicted         int   // cache tags and manifests evicted
	Refused         int   // repositories a rule would have emptied
	// Skipped counts shared sites (S3) whose gc lease another
	// collection held: that one collects them.
	Skipped  int
	Errors   int
	Duration time.Duration
}

// Metrics are the clean-up's Prometheus series.
type Metrics struct {
	runs      *prometheus.CounterVec
	tags      prometheus.Counter
	manifests prometheus.Counter
	blobs     prometheus.Counter
	bytes     prometheus.Counter
	errors    prometheus.Counter
	duration  prometheus.Gauge
	last      prometheus.Gauge
}

// NewMetrics registers the clean-up's series with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_gc_runs_total", Help: "Scheduled clean-up runs, by result (ok, error, busy: another gc held the lock).",
		}, []string{"result"}),
		tags:      prometheus.NewCounter(prometheus.CounterOpts{Name: "wharf_gc_tags_removed_total", Help: "Tags removed by retention rules and cache eviction."}),
		manifests: prometheus.NewCounter(prometheus.CounterOpts{Name: "wharf_gc_manifests_removed_total", Help: "Manifests removed by retention rules, gc and cache eviction."}),
		blobs:     prometheus.NewCounter(prometheus.CounterOpts{Name: "wharf_gc_blobs_removed_total", Help: "Blobs removed by gc and cache eviction."}),
		bytes:     prometheus.NewCounter(prometheus.CounterOpts{Name: "wharf_gc_bytes_freed_total", Help: "Bytes of blobs removed by gc and cache eviction."}),
		errors:    prometheus.NewCounter(prometheus.CounterOpts{Name: "wharf_gc_errors_total", Help: "Sites whose clean-up failed, and repositories a retention rule refused to empty."}),
		duration:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "wharf_gc_last_run_duration_seconds", Help: "How long the last clean-up run took."}),
		last:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "wharf_gc_last_run_timestamp_seconds", Help: "When the last clean-up run ended (Unix time)."}),
	}
	reg.MustRegister(m.runs, m.tags, m.manifests, m.blobs, m.bytes, m.errors, m.duration, m.last)
	return m
}

func (m *Metrics) record(s *Summary, err error) {
	if m == nil {
		return
	}
	switch {
	case errors.Is(err, ErrBusy):
		m.runs.WithLabelValues("busy").Inc()
		return
	case err != nil || s.Errors > 0:
		m.runs.WithLabelValues("error").Inc()
	default:
		m.runs.WithLabelValues("ok").Inc()
	}
	if s == nil {
		return
	}
	m.tags.Add(float64(s.Tags))
	m.manifests.Add(float64(s.Manifests))
	m.blobs.Add(float64(s.Blobs))
	m.bytes.Add(float64(s.Bytes))
	m.errors.Add(float64(s.Errors + s.Refused))
	m.duration.Set(s.Duration.Seconds())
	m.last.SetToCurrentTime()
}

// Run does one clean-up under the data directory's lock; ErrBusy if
// another holds it. A failing site is logged and counted, and the others
// still run; the context ending stops the run between steps.
func Run(ctx context.Context, job Job, log zerolog.Logger) (*Summary, error) {
	unlock, err := Lock(job.DataDir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	start := time.Now()
	s := &Summary{}
	for _, site := range job.Sites {
		if err := ctx.Err(); err != nil {
			return s, err
		}
		l := log.With().Str("site", site.Host).Str("root", site.Root).Logger()
		if _, err := os.Stat(site.Root); !site.Remote && errors.Is(err, os.ErrNotExist) {
			continue // nothing stored yet
		}
		var err error
		if site.Registry {
			err = registrySite(ctx, job, site, s, l)
		} else if site.MaxAge > 0 || site.MaxSize > 0 {
			err = cacheSite(ctx, site, s, l)
		}
		if errors.Is(err, storage.ErrGCRunning) {
			s.Skipped++
			l.Warn().Err(err).Msg("gc: site skipped")
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return s, ctx.Err()
			}
			s.Errors++
			l.Error().Err(err).Msg("gc: site failed")
		}
	}
	s.Duration = time.Since(start)
	return s, nil
}

func registrySite(ctx context.Context, job Job, site Site, s *Summary, log zerolog.Logger) error {
	st, err := site.open()
	if err != nil {
		return err
	}
	defer st.Close()
	ctx, release, err := LockStore(ctx, st, "scheduled gc")
	if err != nil {
		return err
	}
	defer release()
	if len(retention.ForHost(job.Rules, site.Host)) > 0 {
		res, err := retention.Apply(ctx, st, retention.Options{
			Host:  site.Host,
			Rules: job.Rules,
			Report: func(it retention.Item) {
				log.Info().Str("repo", it.Repo).Str("tag", it.Tag).Str("digest", string(it.Digest)).Msg("retention: " + it.String())
			},
		})
		if err != nil {
			return err
		}
		s.Tags += res.Tags
		s.Manifests += res.Manifests
		s.Refused += len(res.Refused)
	}
	res, err := gc.Run(ctx, st, gc.Options{Grace: job.Grace})
	if err != nil {
		return err
	}
	s.Manifests += res.Manifests
	s.Blobs += res.Blobs
	s.Bytes += res.Bytes
	log.Info().Int("blobs", res.Blobs).Int64("bytes", res.Bytes).Int("kept", res.Kept).Msg("gc: registry site collected")
	return nil
}

func cacheSite(ctx context.Context, site Site, s *Summary, log zerolog.Logger) error {
	st, err := site.open()
	if err != nil {
		return err
	}
	defer st.Close()
	ctx, release, err := LockStore(ctx, st, "scheduled eviction")
	if err != nil {
		return err
	}
	defer release()
	res, err := cache.Evict(ctx, st, cache.EvictOptions{MaxAge: site.MaxAge, MaxSize: site.MaxSize})
	if err != nil {
		return err
	}
	s.Tags += res.Tags
	s.Manifests += res.Manifests
	s.Evicted += res.Tags + res.Manifests
	s.Blobs += res.Blobs
	s.Bytes += res.Bytes
	log.Info().Int("tags", res.Tags).Int("manifests", res.Manifests).Int("blobs", res.Blobs).Int64("bytes", res.Bytes).Msg("gc: cache site evicted")
	return nil
}

// Scheduler runs the clean-up every Config.Every plus jitter until its
// context ends.
type Scheduler struct {
	done chan struct{}
}

// SchedulerOptions configure Start.
type SchedulerOptions struct {
	Config Config
	// Job returns what to do at each run, read anew every time so that a
	// config reload's rules and sites apply at the next run.
	Job     func() Job
	Log     zerolog.Logger
	Metrics *Metrics
	// Ran, if set, is told about every run (tests).
	Ran func(*Summary, error)
}

// Start begins the schedule; Wait returns after ctx ended and a run in
// progress stopped.
func Start(ctx context.Context, o SchedulerOptions) *Scheduler {
	s := &Scheduler{done: make(chan struct{})}
	go s.loop(ctx, o)
	return s
}

// Wait blocks until the scheduler has stopped.
func (s *Scheduler) Wait() { <-s.done }

func (s *Scheduler) loop(ctx context.Context, o SchedulerOptions) {
	defer close(s.done)
	every, jitter := o.Config.Every.Std(), o.Config.JitterOrDefault()
	// The first run comes `every` after the last one that finished (of
	// this or an earlier process: data_dir/gc.last), so restarts more
	// often than `every` do not keep postponing it.
	first := every
	if last, err := lastRun(o.Job().DataDir); err == nil {
		first = max(0, min(every, time.Until(last.Add(every))))
	}
	o.Log.Info().Dur("every", every).Dur("jitter", jitter).Dur("first_in", first).Msg("gc: scheduled clean-up on")
	for n := 0; ; n++ {
		wait := every
		if n == 0 {
			wait = first
		}
		if jitter > 0 {
			wait += rand.N(jitter)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		job := o.Job()
		o.Log.Info().Int("sites", len(job.Sites)).Int("rules", len(job.Rules)).Msg("gc: scheduled run starting")
		sum, err := Run(ctx, job, o.Log)
		o.Metrics.record(sum, err)
		if err == nil {
			if werr := writeLastRun(job.DataDir, time.Now()); werr != nil {
				o.Log.Warn().Err(werr).Msg("gc: cannot record the run's time")
			}
		}
		switch {
		case errors.Is(err, ErrBusy):
			o.Log.Warn().Err(err).Msg("gc: scheduled run skipped")
		case ctx.Err() != nil:
			o.Log.Info().Msg("gc: scheduled run stopped by shutdown")
		case err != nil:
			o.Log.Error().Err(err).Msg("gc: scheduled run failed")
		default:
			o.Log.Info().Int("tags_removed", sum.Tags).Int("manifests_removed", sum.Manifests).
				Int("blobs_removed", sum.Blobs).Int64("bytes_freed", sum.Bytes).Int("refused", sum.Refused).
				Int("errors", sum.Errors).Int("skipped", sum.Skipped).Dur("duration", sum.Duration).Msg("gc: scheduled run done")
		}
		if o.Ran != nil {
			o.Ran(sum, err)
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// String is a one-line summary for logs and the CLI.
func (s *Summary) String() string {
	skipped := ""
	if s.Skipped > 0 {
		skipped = fmt.Sprintf("; %d sites skipped (gc running elsewhere)", s.Skipped)
	}
	return fmt.Sprintf("%d tags, %d manifests, %d blobs (%d bytes) removed; %d refused; %d errors%s; %s",
		s.Tags, s.Manifests, s.Blobs, s.Bytes, s.Refused, s.Errors, skipped, s.Duration.Round(time.Millisecond))
}

// LastRunFile below data_dir holds when the last clean-up finished
// (RFC 3339), for the schedule across restarts.
const LastRunFile = "gc.last"

func lastRun(dataDir string) (time.Time, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, LastRunFile))
	if err != nil {
		return time.Time{}, err
	}
	return time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
}

// writeLastRun writes the time to a temp file and renames it into place.
func writeLastRun(dataDir string, t time.Time) error {
	f, err := os.CreateTemp(dataDir, LastRunFile+".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.WriteString(t.UTC().Format(time.RFC3339Nano) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dataDir, LastRunFile))
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
