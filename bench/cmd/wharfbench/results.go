package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wharf-dev/wharf/bench/internal/stats"
)

// Section collects the figures of one section: for every setup (a column)
// and metric, one value per run.
type Section struct {
	ID     string `json:"id"`
	Title  string `json:"title"`
	runs   int
	setups []string
	// Values[setup][metric] has one entry per run; NaN where a run gave none.
	Values map[string]map[string][]float64 `json:"-"`
	// Notes says why a setup has no figures or what was measured instead.
	Notes map[string]string `json:"notes,omitempty"`
	// Logins records how the client logged in to each setup (none, basic,
	// bearer), so a reader sees that auth was really exercised.
	Logins map[string]string `json:"logins,omitempty"`
	Checks []Check           `json:"checks"`
}

// Check is one target with its outcome.
type Check struct {
	Target  string        `json:"target"`
	Verdict stats.Verdict `json:"verdict"`
	Detail  string        `json:"detail"`
}

func newSection(id, title string, runs int, setups ...string) *Section {
	return &Section{ID: id, Title: title, runs: runs, setups: setups, Values: map[string]map[string][]float64{}, Notes: map[string]string{}}
}

// put records value v of metric for setup in run r.
func (s *Section) put(setup, metric string, r int, v float64) {
	m := s.Values[setup]
	if m == nil {
		m = map[string][]float64{}
		s.Values[setup] = m
	}
	vs := m[metric]
	if vs == nil {
		vs = make([]float64, s.runs)
		for i := range vs {
			vs[i] = math.NaN()
		}
		m[metric] = vs
	}
	vs[r] = v
}

// derive records, for every setup and run that has src, dst = f(src).
func (s *Section) derive(dst, src string, f func(float64) float64) {
	for setup, m := range s.Values {
		for r, v := range m[src] {
			if !math.IsNaN(v) {
				s.put(setup, dst, r, f(v))
			}
		}
	}
}

// pullBound is the most MB/s one stream can reach when its client spends
// clientCPU seconds per GiB: the stream is read by one goroutine.
func pullBound(clientCPU float64) float64 {
	if clientCPU <= 0 {
		return math.NaN()
	}
	return gib / mb / clientCPU
}

// med returns the median of a setup's metric over runs (NaN if none).
func (s *Section) med(setup, metric string) float64 {
	return stats.Median(s.Values[setup][metric])
}

// note records why a setup is missing or special; distinct notes are
// joined, repeats (the same failure in every run) kept once.
func (s *Section) note(setup, msg string) {
	old, ok := s.Notes[setup]
	switch {
	case !ok:
		s.Notes[setup] = msg
	case !strings.Contains(old, msg):
		s.Notes[setup] = old + "; " + msg
	}
}

// row is one line of a section's table.
type row struct {
	label, unit, metric string
	prec                int
}

func fmtNum(v float64, prec int) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

// printTable writes the medians of rows (one column per setup with data).
func (s *Section) printTable(w io.Writer, rows []row, setups []string) {
	const lw = 38
	fmt.Fprintf(w, "%-*s", lw, "")
	for _, st := range setups {
		fmt.Fprintf(w, " %16s", st)
	}
	fmt.Fprintln(w)
	for _, r := range rows {
		any := false
		for _, st := range setups {
			if !math.IsNaN(s.med(st, r.metric)) {
				any = true
			}
		}
		if !any {
			continue
		}
		fmt.Fprintf(w, "%-*s", lw, r.label+" ("+r.unit+")")
		for _, st := range setups {
			fmt.Fprintf(w, " %16s", fmtNum(s.med(st, r.metric), r.prec))
		}
		fmt.Fprintln(w)
	}
	var logins []string
	for _, st := range setups {
		if l, ok := s.Logins[st]; ok {
			logins = append(logins, st+"="+l)
		}
	}
	if len(logins) > 0 {
		fmt.Fprintf(w, "  login: %s\n", strings.Join(logins, ", "))
	}
	for _, st := range setups {
		if n, ok := s.Notes[st]; ok {
			fmt.Fprintf(w, "  note %s: %s\n", st, n)
		}
	}
}

// ratioCheck: setup's metric >= factor x ref's metric.
func (s *Section) ratioCheck(target, setup, metric, ref, refMetric string, factor float64) {
	got, base := s.med(setup, metric), s.med(ref, refMetric)
	v := stats.AtLeast(got, factor*base)
	d := fmt.Sprintf("%s %s / %s %s = %sx (need %.2fx)", setup, fmtNum(got, 0), ref, fmtNum(base, 0), fmtNum(got/base, 2), factor)
	s.Checks = append(s.Checks, Check{target, v, d})
}

// ratioAtMost: setup's metric <= factor x ref's metric (costs: CPU, memory).
func (s *Section) ratioAtMost(target, setup, metric, ref, refMetric string, factor float64) {
	got, base := s.med(setup, metric), s.med(ref, refMetric)
	v := stats.AtMost(got, factor*base)
	d := fmt.Sprintf("%s %s / %s %s = %sx (need <= %.2fx)", setup, fmtNum(got, 2), ref, fmtNum(base, 2), fmtNum(got/base, 2), factor)
	s.Checks = append(s.Checks, Check{target, v, d})
}

// has reports whether setup has at least one figure of metric in this run.
func (s *Section) has(setup, metric string) bool {
	return !math.IsNaN(s.med(setup, metric))
}

// atLeast: setup's metric >= want.
func (s *Section) atLeast(target, setup, metric string, want float64, unit string) {
	got := s.med(setup, metric)
	s.Checks = append(s.Checks, Check{target, stats.AtLeast(got, want), fmt.Sprintf("%s %s %s (need >= %s)", setup, fmtNum(got, 1), unit, fmtNum(want, 1))})
}

// atMost: setup's metric <= want.
func (s *Section) atMost(target, setup, metric string, want float64, unit string) {
	got := s.med(setup, metric)
	s.Checks = append(s.Checks, Check{target, stats.AtMost(got, want), fmt.Sprintf("%s %s %s (need <= %s)", setup, fmtNum(got, 2), unit, fmtNum(want, 2))})
}

func (s *Section) printChecks(w io.Writer) {
	if len(s.Checks) == 0 {
		return
	}
	fmt.Fprintln(w, "targets:")
	for _, c := range s.Checks {
		fmt.Fprintf(w, "  [%-4s] %-46s %s\n", c.Verdict, c.Target, c.Detail)
	}
}

// jsonSection is the machine-readable form of a section.
type jsonSection struct {
	*Section
	Setups map[string]map[string]jsonMetric `json:"setups"`
}

type jsonMetric struct {
	Median *float64   `json:"median"`
	Runs   []*float64 `json:"runs"`
}

func num(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// Report is the JSON file written after a run.
type Report struct {
	Started  time.Time      `json:"started"`
	Finished time.Time      `json:"finished"`
	Command  string         `json:"command"`
	Runs     int            `json:"runs"`
	Blob     int64          `json:"blob_bytes"`
	Host     map[string]any `json:"host"`
	Sections []jsonSection  `json:"sections"`
}

func (r *Report) add(s *Section) {
	js := jsonSection{Section: s, Setups: map[string]map[string]jsonMetric{}}
	for st, ms := range s.Values {
		js.Setups[st] = map[string]jsonMetric{}
		for m, vs := range ms {
			jm := jsonMetric{Median: num(stats.Median(vs))}
			for _, v := range vs {
				jm.Runs = append(jm.Runs, num(v))
			}
			js.Setups[st][m] = jm
		}
	}
	r.Sections = append(r.Sections, js)
}

// write stores the report as results-<time>.json and latest.json in dir.
func (r *Report) write(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("results dir: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode results: %w", err)
	}
	name := filepath.Join(dir, "results-"+r.Started.UTC().Format("20060102T150405Z")+".json")
	if err := os.WriteFile(name, b, 0o644); err != nil {
		return "", fmt.Errorf("write results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.json"), b, 0o644); err != nil {
		return "", fmt.Errorf("write results: %w", err)
	}
	return name, nil
}

// summaryLine is one grep-able line per check: "BENCH <sec> <verdict> <target>".
func summaryLine(s *Section, c Check) string {
	return fmt.Sprintf("BENCH %s %s %s", s.ID, c.Verdict, strings.ReplaceAll(c.Target, " ", "_"))
}
