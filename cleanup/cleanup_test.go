package cleanup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend/registry"
	"github.com/wharf-dev/wharf/backend/registry/retention"
	"github.com/wharf-dev/wharf/internal/conf"
	"github.com/wharf-dev/wharf/internal/testlog"
)

func TestLockExcludes(t *testing.T) {
	dir := t.TempDir()
	unlock, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(dir); !errors.Is(err, ErrBusy) {
		t.Fatalf("second lock: %v, want ErrBusy", err)
	}
	if _, err := Run(context.Background(), Job{DataDir: dir}, testlog.New(t, zerolog.InfoLevel)); !errors.Is(err, ErrBusy) {
		t.Fatalf("run while locked: %v, want ErrBusy", err)
	}
	unlock()
	unlock2, err := Lock(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}

func TestValidate(t *testing.T) {
	j := conf.Duration(2 * time.Hour)
	for _, tc := range []struct {
		c    Config
		keys string
	}{
		{Config{}, ""},
		{Config{Every: conf.Duration(24 * time.Hour)}, ""},
		{Config{Every: conf.Duration(time.Millisecond)}, "every"},
		{Config{Every: conf.Duration(time.Hour), Jitter: &j}, "jitter"},
	} {
		var keys []string
		for _, p := range tc.c.Validate() {
			keys = append(keys, p.Key)
		}
		if strings.Join(keys, ",") != tc.keys {
			t.Errorf("%+v: problems at %v, want %q", tc.c, keys, tc.keys)
		}
	}
	if got := (&Config{Every: conf.Duration(24 * time.Hour)}).JitterOrDefault(); got != time.Hour {
		t.Errorf("default jitter of 24h: %v", got)
	}
}

// pushOld pushes n tagged images to repo through a registry on root and
// dates them days ago, one day apart.
func pushOld(t *testing.T, root, repo string, n int) {
	t.Helper()
	reg, err := registry.New(context.Background(), registry.Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	srv := httptest.NewServer(reg)
	defer srv.Close()
	put := func(method, path, ctype string, body []byte) *http.Response {
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("%s %s: %d", method, path, res.StatusCode)
		}
		return res
	}
	for i := 0; i < n; i++ {
		cfg := []byte(fmt.Sprintf(`{"os":"linux","n":%d}`, i))
		layer := bytes.Repeat([]byte{byte(i)}, 1000)
		for _, b := range [][]byte{cfg, layer} {
			put("POST", "/v2/"+repo+"/blobs/uploads/?digest="+digest.FromBytes(b).String(), "", b)
		}
		m, _ := json.Marshal(map[string]any{
			"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
			"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest.FromBytes(cfg), "size": len(cfg)},
			"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest.FromBytes(layer), "size": len(layer)}},
		})
		put("PUT", fmt.Sprintf("/v2/%s/manifests/t%d", repo, i), "application/vnd.oci.image.manifest.v1+json", m)
	}
	// everything older than gc's grace; tag i pushed n-i days ago
	old := time.Now().Add(-time.Duration(n+1) * 24 * time.Hour)
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			os.Chtimes(p, old, old)
		}
		return nil
	})
	for i := 0; i < n; i++ {
		at := time.Now().Add(-time.Duration(n-i) * 24 * time.Hour)
		os.Chtimes(filepath.Join(root, "repositories", repo, "_tags", fmt.Sprintf("t%d", i)), at, at)
	}
}

// TestRunAndSchedule: a scheduled run applies the rules, collects the
// freed blobs, counts them in the metrics, and the scheduler stops when
// its context ends.
func TestRunAndSchedule(t *testing.T) {
	dataDir := t.TempDir()
	root := filepath.Join(dataDir, "registry")
	pushOld(t, root, "ci/app", 5)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	job := Job{
		DataDir: dataDir,
		Sites:   []Site{{Host: "r.test", Registry: true, Root: root}, {Host: "c.test", Root: filepath.Join(dataDir, "nothing-yet"), MaxAge: time.Hour}},
		Rules:   []retention.Rule{{Repos: []string{"ci/*"}, KeepLast: 2, UntaggedAfter: new(conf.Duration)}},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan *Summary, 10)
	jitter := conf.Duration(0)
	s := Start(ctx, SchedulerOptions{
		Config:  Config{Every: conf.Duration(10 * time.Millisecond), Jitter: &jitter},
		Job:     func() Job { return job },
		Log:     testlog.New(t, zerolog.InfoLevel),
		Metrics: m,
		Ran: func(s *Summary, err error) {
			if err != nil {
				t.Errorf("run: %v", err)
			}
			ran <- s
		},
	})
	first := <-ran
	second := <-ran
	cancel()
	s.Wait()
	if first.Tags != 3 || first.Manifests != 3 || first.Blobs != 9 || first.Errors != 0 {
		t.Errorf("first run: %+v, want 3 tags, 3 manifests, 9 blobs (3 configs, 3 layers, 3 manifests)", first)
	}
	if second.Tags+second.Manifests+second.Blobs != 0 {
		t.Errorf("second run removed more: %+v", second)
	}
	if got := metric(t, reg, "wharf_gc_tags_removed_total", ""); got != 3 {
		t.Errorf("wharf_gc_tags_removed_total = %v", got)
	}
	if got := metric(t, reg, "wharf_gc_bytes_freed_total", ""); got != float64(first.Bytes) || got == 0 {
		t.Errorf("wharf_gc_bytes_freed_total = %v, summary %d", got, first.Bytes)
	}
	if got := metric(t, reg, "wharf_gc_runs_total", "ok"); got < 2 {
		t.Errorf("wharf_gc_runs_total{result=ok} = %v", got)
	}
	tags, _ := os.ReadDir(filepath.Join(root, "repositories", "ci/app", "_tags"))
	if len(tags) != 2 || tags[0].Name() != "t3" || tags[1].Name() != "t4" {
		t.Errorf("tags left: %v", tags)
	}
}

// metric reads a counter from reg; label, if set, is the value of its one
// label.
func metric(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label {
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

// TestFirstRunFollowsLast: a scheduler whose data directory last ran a
// clean-up longer than `every` ago runs at once instead of waiting a
// whole interval (restarts do not postpone gc), and records its own run.
func TestFirstRunFollowsLast(t *testing.T) {
	dataDir := t.TempDir()
	if err := writeLastRun(dataDir, time.Now().Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan struct{}, 1)
	jitter := conf.Duration(0)
	s := Start(ctx, SchedulerOptions{
		Config: Config{Every: conf.Duration(time.Hour), Jitter: &jitter},
		Job:    func() Job { return Job{DataDir: dataDir} },
		Log:    testlog.New(t, zerolog.InfoLevel),
		Ran:    func(*Summary, error) { ran <- struct{}{} },
	})
	select {
	case <-ran:
	case <-time.After(time.Minute): // a hang guard; the run is due at once
		t.Fatal("no run although the last one was two hours ago")
	}
	cancel()
	s.Wait()
	last, err := lastRun(dataDir)
	if err != nil || time.Since(last) > time.Minute {
		t.Errorf("last run recorded as %v, %v", last, err)
	}
}
