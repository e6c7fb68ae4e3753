package main

import (
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSumMetric(t *testing.T) {
	counter := `# HELP wharf_auth_bcrypt_checks_total bcrypt comparisons
# TYPE wharf_auth_bcrypt_checks_total counter
wharf_auth_bcrypt_checks_total{result="ok"} 3
wharf_auth_bcrypt_checks_total{result="fail"} 1
wharf_http_requests_total{site="a",code="200"} 99
wharf_auth_bcrypt_seconds_bucket{le="0.01"} 7
wharf_auth_bcrypt_seconds_count 7
wharf_auth_bcrypt_seconds_sum 0.02
`
	histogramOnly := `wharf_auth_bcrypt_seconds_bucket{le="0.01"} 2
wharf_auth_bcrypt_seconds_bucket{le="+Inf"} 2
wharf_auth_bcrypt_seconds_sum 0.004
wharf_auth_bcrypt_seconds_count 2 1700000000
`
	tests := []struct {
		text, name string
		want       float64
		found      bool
	}{
		{counter, "", 4, true},
		{counter, "wharf_http_requests_total", 99, true},
		{counter, "missing_total", 0, false},
		{histogramOnly, "", 2, true},
		{"wharf_http_requests_total 5\n", "", 0, false},
	}
	for _, tt := range tests {
		got, found, err := sumMetric(strings.NewReader(tt.text), tt.name)
		if err != nil || got != tt.want || found != tt.found {
			t.Errorf("sumMetric(%q) = %v %v %v, want %v %v", tt.name, got, found, err, tt.want, tt.found)
		}
	}
	if _, _, err := sumMetric(strings.NewReader("x_bcrypt_total nope\n"), ""); err == nil {
		t.Error("bad value: want error")
	}
}

func TestManifestBlobs(t *testing.T) {
	m := `{"schemaVersion":2,"config":{"digest":"sha256:c"},"layers":[{"digest":"sha256:a"},{"digest":"sha256:b"}]}`
	got, err := manifestBlobs([]byte(m))
	if err != nil || !reflect.DeepEqual(got, []string{"sha256:c", "sha256:a", "sha256:b"}) {
		t.Fatalf("got %v %v", got, err)
	}
	if _, err := manifestBlobs([]byte("{")); err == nil {
		t.Fatal("bad json: want error")
	}
}

func TestSectionMedianAndChecks(t *testing.T) {
	s := newSection("A", "t", 3, "wharf", "ref")
	for r, v := range []float64{300, 100, 200} {
		s.put("wharf", "push_mbs", r, v)
	}
	s.put("ref", "push_mbs", 0, 100)
	if got := s.med("wharf", "push_mbs"); got != 200 {
		t.Fatalf("median %v, want 200", got)
	}
	if got := s.med("ref", "push_mbs"); got != 100 {
		t.Fatalf("median with missing runs %v, want 100", got)
	}
	if !math.IsNaN(s.med("nobody", "push_mbs")) {
		t.Fatal("missing setup: want NaN")
	}
	s.ratioCheck("2x", "wharf", "push_mbs", "ref", "push_mbs", 2)
	s.ratioCheck("3x", "wharf", "push_mbs", "ref", "push_mbs", 3)
	s.ratioCheck("absent", "nobody", "push_mbs", "ref", "push_mbs", 1)
	var got []string
	for _, c := range s.Checks {
		got = append(got, string(c.Verdict))
	}
	if want := []string{"PASS", "FAIL", "N/A"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("verdicts %v, want %v", got, want)
	}
}

func TestRotate(t *testing.T) {
	xs := []string{"a", "b", "c"}
	if got := rotate(xs, 4); !reflect.DeepEqual(got, []string{"b", "c", "a"}) {
		t.Fatalf("rotate: %v", got)
	}
	if !reflect.DeepEqual(xs, []string{"a", "b", "c"}) {
		t.Fatal("rotate changed its input")
	}
}

func TestPageCacheWriteSpeed(t *testing.T) {
	dir := t.TempDir()
	v, err := pageCacheWriteSpeed(dir, 8*mib)
	if err != nil || !(v > 0) {
		t.Fatalf("pageCacheWriteSpeed = %v, %v; want a positive speed", v, err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("left %d files behind", len(left))
	}
	if _, err := pageCacheWriteSpeed(filepath.Join(dir, "missing"), mib); err == nil {
		t.Error("missing folder: want an error")
	}
}

func TestTimedCountsClientCPU(t *testing.T) {
	// A transfer that spins on this process's CPU for a while: the
	// client's share must show, and the bound follows from it.
	// Spin until 50 ms of CPU (not of wall time: a loaded machine may
	// deschedule the test) have been used.
	tr, err := timed(nil, gib, func() error {
		var ru syscall.Rusage
		start := time.Duration(0)
		for used := time.Duration(0); used < 50*time.Millisecond; {
			if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
				return err
			}
			now := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			if start == 0 {
				start = now
			}
			used = now - start
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if tr.ClientCPUperGiB < 0.045 || tr.ClientCPUperGiB > 5 {
		t.Errorf("client CPU per GiB = %v, want about 0.05", tr.ClientCPUperGiB)
	}
}

func TestDerivePullBound(t *testing.T) {
	s := newSection("B", "t", 3, "wharf")
	s.put("wharf", "client_cpu_pull", 0, 1)
	s.put("wharf", "client_cpu_pull", 2, 0.5)
	s.derive("bound_pull_mbs", "client_cpu_pull", pullBound)
	got := s.Values["wharf"]["bound_pull_mbs"]
	want := []float64{gib / mb, math.NaN(), 2 * gib / mb}
	for i := range want {
		if got[i] != want[i] && !(math.IsNaN(got[i]) && math.IsNaN(want[i])) {
			t.Fatalf("bound = %v, want %v", got, want)
		}
	}
	if !math.IsNaN(pullBound(0)) {
		t.Error("pullBound(0): want NaN")
	}
}

// TestZotTargets: with zot in the run, section B's zot targets are ratios
// to its figures in the same run (and wharf's push CPU is checked against
// zot's); without it they fall back to the absolute figures.
func TestZotTargets(t *testing.T) {
	details := func(withZot bool) map[string]string {
		b := &bench{cfg: config{runs: 1}, blob: &Blob{Size: mib}, out: io.Discard}
		s := newSection("B", "t", 1, "wharf-registry", "registry3", "zot")
		s.put("wharf-registry", "push_mbs", 0, 700)
		s.put("wharf-registry", "cpu_push", 0, 1.6)
		s.put("registry3", "cpu_push", 0, 2.0)
		if withZot {
			s.put("zot", "push_mbs", 0, 500)
			s.put("zot", "cpu_push", 0, 2.2)
		}
		b.printB(s)
		out := map[string]string{}
		for _, c := range s.Checks {
			out[c.Target] = string(c.Verdict) + " " + c.Detail
		}
		return out
	}
	with := details(true)
	if got := with["registry push >= 1.3x zot"]; !strings.HasPrefix(got, "PASS wharf-registry 700 / zot 500 = 1.40x") {
		t.Errorf("push vs zot: %q", got)
	}
	if got := with["registry CPU per pushed GiB <= zot (#9)"]; !strings.HasPrefix(got, "PASS") {
		t.Errorf("push CPU vs zot: %q", got)
	}
	if got := with["registry CPU per pushed GiB <= 0.85x registry3 (#9)"]; !strings.HasPrefix(got, "PASS wharf-registry 1.60 / registry3 2.00 = 0.80x") {
		t.Errorf("push CPU vs registry3: %q", got)
	}
	without := details(false)
	if got := without["registry push >= 1.3x zot (issue: 670 MB/s)"]; !strings.HasPrefix(got, "PASS") {
		t.Errorf("absolute push target without zot: %q (all: %v)", got, without)
	}
	if _, ok := without["registry CPU per pushed GiB <= zot (#9)"]; ok {
		t.Error("zot CPU target present without zot figures")
	}
}
