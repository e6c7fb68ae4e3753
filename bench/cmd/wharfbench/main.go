// Command wharfbench is the benchmark suite behind `make bench`: it starts
// wharf and its peers (Debian's docker-registry, nginx, registry:3) on
// loopback in temporary folders, moves the same 1 GiB blob through each in
// the same run, and prints medians of several runs as tables with ratios
// against the targets of issues #2, #3 and #4, plus a JSON report.
//
//	wharfbench run  [flags]   the suite (bench/run is the usual entry point)
//	wharfbench load [flags]   the load generator alone, against any URL
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wharf-dev/wharf/bench/internal/procstat"
	"github.com/wharf-dev/wharf/bench/internal/regclient"
	"github.com/wharf-dev/wharf/bench/internal/servers"
	"github.com/wharf-dev/wharf/bench/internal/tlsca"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: wharfbench run|load [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "run":
		err = runCmd(ctx, os.Args[2:])
	case "load":
		err = loadCmd(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (want run or load)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wharfbench:", err)
		os.Exit(1)
	}
}

// config is the suite's settings (flags, defaulted from BENCH_* variables
// by bench/run).
type config struct {
	sections          string
	runs              int
	blobMiB           int64
	duration          time.Duration
	conns, pulls      int
	wharf, registry3  string
	zot               string // zot binary; "" = section B runs without zot
	versitygw         string
	dockerRegistry    string
	nginx, htpasswdBn string
	cache, out, tmp   string
	keep              bool
	warm              bool            // write and free blob-size page cache right before each push
	only              map[string]bool // setups to run; empty = all
}

// wants reports whether setup name is to be run (-only).
func (c *config) wants(name string) bool { return len(c.only) == 0 || c.only[name] }

// bench is one invocation of the suite.
type bench struct {
	cfg        config
	env        *servers.Env
	blob       *Blob
	ca         *tlsca.Files
	htpasswd   string
	user, pass string
	user30     string // logs in only for the 30-layer pull
	out        io.Writer
	// skip remembers setups that were not available in an earlier run.
	skip map[string]bool
}

func runCmd(ctx context.Context, args []string) error {
	var c config
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.StringVar(&c.sections, "sections", "A,B,C,M", "sections to run: A (plain HTTP, #2), B (TLS transfers, #3), C (auth request rate, #4), M (mirror, #11), D (S3 storage, #15; not in the default)")
	fs.IntVar(&c.runs, "runs", 3, "runs per figure; tables show medians")
	fs.Int64Var(&c.blobMiB, "blob-mib", 1024, "blob size in MiB (at most 1024)")
	fs.DurationVar(&c.duration, "duration", 5*time.Second, "duration of each request-rate measurement")
	fs.IntVar(&c.conns, "conns", 16, "keep-alive connections for request-rate measurements")
	fs.IntVar(&c.pulls, "pulls", 8, "parallel pulls")
	fs.StringVar(&c.wharf, "wharf", "", "wharf binary (empty: wharf scenarios report not available)")
	fs.StringVar(&c.registry3, "registry3", "", "registry:3 binary (distribution v3.1.2)")
	fs.StringVar(&c.zot, "zot", "", "zot binary (built from its source; empty: section B says zot was not run)")
	fs.StringVar(&c.versitygw, "versitygw", "", "versitygw binary, the S3 server of section D")
	fs.StringVar(&c.dockerRegistry, "docker-registry", "/usr/bin/docker-registry", "Debian's registry 2.8 binary")
	fs.StringVar(&c.nginx, "nginx", "/usr/sbin/nginx", "nginx binary")
	fs.StringVar(&c.htpasswdBn, "htpasswd", "htpasswd", "apache2-utils htpasswd (for the bcrypt file)")
	fs.StringVar(&c.cache, "cache", filepath.Join(os.Getenv("HOME"), ".cache", "wharf-bench"), "cache folder (blob)")
	fs.StringVar(&c.out, "out", ".bench", "results folder")
	fs.StringVar(&c.tmp, "tmp", os.TempDir(), "parent of the servers' temporary folders")
	fs.BoolVar(&c.keep, "keep", false, "keep the servers' temporary folders (logs, configs)")
	fs.BoolVar(&c.warm, "warm", true, "right before each timed push, write and delete a blob-sized file, so that the push's page cache is memory freed a moment ago (see README)")
	only := fs.String("only", "", "comma-separated setups to run (e.g. wharf-registry,nginx-static); empty: all")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, name := range strings.Split(*only, ",") {
		if name = strings.TrimSpace(name); name != "" {
			if c.only == nil {
				c.only = map[string]bool{}
			}
			c.only[name] = true
		}
	}
	if c.blobMiB < 1 || c.blobMiB > 1024 {
		return fmt.Errorf("-blob-mib %d: must be 1..1024", c.blobMiB)
	}
	if c.runs < 1 {
		return fmt.Errorf("-runs %d: must be at least 1", c.runs)
	}
	sections := map[string]bool{}
	for _, s := range strings.Split(strings.ToUpper(c.sections), ",") {
		s = strings.TrimSpace(s)
		if s != "A" && s != "B" && s != "C" && s != "M" && s != "D" {
			return fmt.Errorf("-sections: unknown section %q (want A, B, C, M, D)", s)
		}
		sections[s] = true
	}

	tmp, err := os.MkdirTemp(c.tmp, "wharf-bench-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	if !c.keep {
		defer os.RemoveAll(tmp)
	} else {
		defer fmt.Fprintln(os.Stderr, "kept server folders under", tmp)
	}

	b := &bench{cfg: c, out: os.Stdout, skip: map[string]bool{}, user: "bench", user30: "bench30", pass: "bench-" + fmt.Sprint(time.Now().UnixNano())}
	blob, err := ensureBlob(c.cache, c.blobMiB*mib)
	if err != nil {
		return err
	}
	b.blob = blob
	if sections["B"] || sections["C"] {
		if b.ca, err = tlsca.New(tmp, []string{hostRegistry, hostProxy, hostNginx, hostR3, hostZot, hostStatic, "localhost", "127.0.0.1"}); err != nil {
			return err
		}
		b.htpasswd = filepath.Join(tmp, "htpasswd")
		out, err := exec.CommandContext(ctx, c.htpasswdBn, "-B", "-b", "-c", b.htpasswd, b.user, b.pass).CombinedOutput()
		if err != nil {
			return fmt.Errorf("htpasswd -B: %w: %s", err, out)
		}
		// A second user logs in only for the 30-layer pull, so its bcrypt
		// count is not hidden by credentials verified earlier.
		out, err = exec.CommandContext(ctx, c.htpasswdBn, "-B", "-b", b.htpasswd, b.user30, b.pass).CombinedOutput()
		if err != nil {
			return fmt.Errorf("htpasswd -B: %w: %s", err, out)
		}
	}
	pollOpts := regclient.Options{Conns: 2}
	if b.ca != nil {
		pollOpts.RootCAs = b.ca.Pool
	}
	b.env = &servers.Env{
		TempRoot: tmp, WharfBin: c.wharf, DockerRegistryBin: c.dockerRegistry,
		Registry3Bin: c.registry3, ZotBin: c.zot, NginxBin: c.nginx, VersityGWBin: c.versitygw,
		Poll: newPollClient(pollOpts),
	}

	rep := &Report{Started: time.Now().UTC(), Command: strings.Join(os.Args, " "), Runs: c.runs, Blob: blob.Size,
		Host: map[string]any{"cpus": runtime.NumCPU(), "go": runtime.Version(), "wharf": c.wharf != ""}}
	fmt.Fprintf(b.out, "command: BENCH=%s BENCH_RUNS=%d BENCH_BLOB_MIB=%d BENCH_DURATION=%s bench/run\n", c.sections, c.runs, c.blobMiB, c.duration)
	load0 := loadAvg()
	rep.Host["loadavg_start"] = load0
	fmt.Fprintf(b.out, "wharf bench: %d run(s) per figure, medians shown; blob %d MiB %s; %d CPUs; sections %s; load average %s\n",
		c.runs, c.blobMiB, blob.Digest[:19], runtime.NumCPU(), c.sections, load0)
	rep.Host["warm_before_push"] = c.warm
	if c.warm {
		fmt.Fprintf(b.out, "pushes: each timed push starts right after a blob-sized page-cache write is freed (BENCH_WARM=0 turns this off; see the page-cache write row)\n")
	}
	if f, err := strconv.ParseFloat(strings.Fields(load0 + " 0")[0], 64); err == nil && f > 0.5 {
		fmt.Fprintf(b.out, "warning: the machine is not quiet (1-minute load %.2f): figures will be noisy; ratios within this run still compare like with like\n", f)
	}
	var secs []*Section
	for _, id := range []string{"A", "B", "C", "M", "D"} {
		if !sections[id] {
			continue
		}
		var s *Section
		switch id {
		case "A":
			s = b.sectionA(ctx)
		case "B":
			s = b.sectionB(ctx)
		case "C":
			s = b.sectionC(ctx)
		case "M":
			s = b.sectionM(ctx)
		case "D":
			s = b.sectionD(ctx)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: %w", ctx.Err())
		}
		secs = append(secs, s)
		rep.add(s)
	}
	rep.Finished = time.Now().UTC()
	rep.Host["loadavg_end"] = loadAvg()
	name, err := rep.write(c.out)
	if err != nil {
		return err
	}
	fmt.Fprintln(b.out)
	for _, s := range secs {
		for _, ch := range s.Checks {
			fmt.Fprintln(b.out, summaryLine(s, ch))
		}
	}
	fmt.Fprintf(b.out, "results: %s (%.0f s)\n", name, rep.Finished.Sub(rep.Started).Seconds())
	return nil
}

// Host names of the TLS setups; every name is dialled on 127.0.0.1.
const (
	hostRegistry = "registry.bench.test"
	hostProxy    = "proxy.bench.test"
	hostNginx    = "nginx.bench.test"
	hostR3       = "registry3.bench.test"
	hostZot      = "zot.bench.test"
	hostStatic   = "static.bench.test"
)

// Repositories used by the scenarios (one token covers them all).
var repos = []string{"bench/blob", "bench/mono", "bench/small", "bench/thirty"}

// loadAvg returns the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, time.Now().UTC().Format("15:04:05 ")+format+"\n", a...)
}

// setup describes one column: how to start it and how to talk to it.
type setup struct {
	name  string
	wharf bool // a start failure means "not available yet", not a bench bug
	// auth: the setup is meant to ask for credentials.
	auth bool
	// static: a plain file server, no registry login.
	static bool
	// side: see phase.side.
	side  procstat.Group
	start func(ctx context.Context) (st *servers.Stack, base, note string, err error)
}

// phase is one fresh start of a setup, the client logged in to it.
type phase struct {
	s     *Section
	r     int
	name  string // column the figures go to
	c     *regclient.Client
	st    *servers.Stack
	g     procstat.Group
	opts  regclient.Options
	login string // none | basic | bearer
	// side is a server outside the setup that its transfers load too
	// (section D's versitygw): its CPU per GiB is recorded as s3_<metric>.
	side procstat.Group
}

// put records a figure of this phase.
func (p *phase) put(metric string, v float64) { p.s.put(p.name, metric, p.r, v) }

// runPhase starts sp fresh, logs in, runs body, records peak RSS and stops.
// Failures become notes: the suite goes on with the next setup.
//
// label names the phase (h1, h2, mono...): a wharf phase that fails for
// want of a feature is skipped in later runs, the setup's other phases not.
func (b *bench) runPhase(ctx context.Context, s *Section, r int, sp setup, label string, http2 bool, body func(p *phase) error) {
	key := s.ID + "/" + sp.name
	pkey := key + "/" + label
	if b.skip[key] || b.skip[pkey] || ctx.Err() != nil {
		return
	}
	st, base, note, err := sp.start(ctx)
	if err != nil {
		if sp.wharf || errors.Is(err, servers.ErrUnavailable) {
			msg := err.Error()
			if !errors.Is(err, servers.ErrUnavailable) {
				msg = "not available yet: " + msg
			}
			s.note(sp.name, msg)
			fmt.Fprintf(b.out, "  %s %s: %s\n", s.ID, sp.name, msg)
			b.skip[key] = true
			return
		}
		s.note(sp.name, "failed to start: "+err.Error())
		fmt.Fprintf(b.out, "  %s %s: failed to start: %v\n", s.ID, sp.name, err)
		return
	}
	defer st.Stop(b.cfg.keep)
	if note != "" {
		s.note(sp.name, note)
	}
	p := &phase{s: s, r: r, name: sp.name, st: st, g: st.Group(), side: sp.side}
	p.opts = regclient.Options{Base: base, HTTP2: http2, Conns: b.cfg.conns, User: b.user, Password: b.pass}
	if b.ca != nil {
		p.opts.RootCAs = b.ca.Pool
	}
	if p.c, err = regclient.New(p.opts); err != nil {
		s.note(sp.name, err.Error())
		return
	}
	defer p.c.Close()
	if sp.static {
		p.login = "none"
	} else if p.login, err = p.c.Login(ctx, repos...); err != nil {
		msg := label + ": login: " + err.Error()
		if sp.wharf {
			msg = "not available yet: " + msg
			b.skip[pkey] = true
		}
		s.note(sp.name, msg)
		fmt.Fprintf(b.out, "  %s %s: %s\n", s.ID, sp.name, msg)
		return
	}
	if !sp.static {
		if s.Logins == nil {
			s.Logins = map[string]string{}
		}
		s.Logins[sp.name] = p.login
	}
	if sp.auth && p.login == "none" {
		s.note(sp.name, "auth configured but /v2/ answered 200: measured WITHOUT auth (auth not available yet)")
		if s.ID == "C" {
			p.name += "(noauth)"
		}
	}
	if err := body(p); err != nil {
		if ex := st.Exited(); ex != "" {
			err = fmt.Errorf("%w (%s)", err, ex)
		}
		what := "failed"
		if sp.wharf {
			what = "not available yet"
			b.skip[pkey] = true
		}
		s.note(p.name, fmt.Sprintf("%s: %s: %v", label, what, err))
		fmt.Fprintf(b.out, "  %s %s %s run %d: %s: %v\n", s.ID, p.name, label, r+1, what, err)
	}
	// Peak RSS over the phase: the whole stack, and its front process.
	g := st.Group()
	if rss, err := g.PeakRSS(); err == nil {
		p.putMax("rss_mib", float64(rss)/mib)
	}
	if rss, err := st.Procs[0].Group().PeakRSS(); err == nil {
		p.putMax("rss_front_mib", float64(rss)/mib)
	}
}

// putMax records v unless the run already has a larger figure.
func (p *phase) putMax(metric string, v float64) {
	if old := p.s.Values[p.name][metric]; old != nil && !isNaN(old[p.r]) && old[p.r] >= v {
		return
	}
	p.put(metric, v)
}

func isNaN(v float64) bool { return v != v }

// transfer times fn and records MB/s and CPU s/GiB under the metric names,
// and the client's CPU as client_<cpuMetric>.
func (p *phase) transfer(what, mbsMetric, cpuMetric string, bytes int64, fn func() error) error {
	var side0 float64
	sideErr := errors.New("no side server")
	if p.side != nil {
		side0, sideErr = p.side.CPUSeconds()
	}
	t, err := timed(p.g, bytes, fn)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	p.put(mbsMetric, t.MBs)
	p.put(cpuMetric, t.CPUperGiB)
	p.put("client_"+cpuMetric, t.ClientCPUperGiB)
	if t.CoresBusy > 0 {
		p.put("busy_"+cpuMetric, t.CoresBusy)
	}
	if sideErr == nil {
		if side1, err := p.side.CPUSeconds(); err == nil {
			p.put("s3_"+cpuMetric, (side1-side0)/(float64(bytes)/gib))
		}
	}
	logf("%s run %d %-16s %-22s %7.0f MB/s  %5.2f CPU s/GiB  client %4.2f", p.s.ID, p.r+1, p.name, what, t.MBs, t.CPUperGiB, t.ClientCPUperGiB)
	return nil
}

// pushTransfer is transfer for pushes: with -warm it first writes and
// deletes a blob-sized file, so that the pages the push writes into were
// freed a moment ago, not handed back to the host (see pageCacheWriteSpeed).
func (b *bench) pushTransfer(p *phase, what, mbsMetric, cpuMetric string, fn func() error) error {
	if b.cfg.warm {
		if _, err := pageCacheWriteSpeed(b.env.TempRoot, b.blob.Size); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return p.transfer(what, mbsMetric, cpuMetric, b.blob.Size, fn)
}

// machinePhase records the run's page-cache write speed in the "machine"
// column (see pageCacheWriteSpeed).
func (b *bench) machinePhase(s *Section, r int) {
	v, err := pageCacheWriteSpeed(b.env.TempRoot, b.blob.Size)
	if err != nil {
		s.note("machine", err.Error())
		return
	}
	s.put("machine", "pagecache_write_mbs", r, v)
	logf("%s run %d %-16s %-22s %7.0f MB/s", s.ID, r+1, "machine", "page-cache write", v)
}

// rotate returns xs rotated left by r, so that no setup always goes first.
func rotate[T any](xs []T, r int) []T {
	if len(xs) == 0 {
		return xs
	}
	r %= len(xs)
	return append(slices.Clone(xs[r:]), xs[:r]...)
}

// columns returns the declared setups followed by any extra ones found.
func (s *Section) columns() []string {
	cols := slices.Clone(s.setups)
	var extra []string
	for k := range s.Values {
		if !slices.Contains(cols, k) {
			extra = append(extra, k)
		}
	}
	slices.Sort(extra)
	return append(cols, extra...)
}
