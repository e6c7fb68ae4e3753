package load

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRunHEAD drives a real HTTP/1.1 server with HEAD and checks that every
// counted request reached it, on exactly Conns connections, with the header.
func TestRunHEAD(t *testing.T) {
	var hits atomic.Int64
	var mu sync.Mutex
	conns := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodHead || r.Header.Get("Authorization") != "Bearer x" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		conns[r.RemoteAddr] = true
		mu.Unlock()
		hits.Add(1)
		w.Header().Set("Content-Length", "1234")
	}))
	defer srv.Close()

	res, err := Run(context.Background(), Config{
		Method:       http.MethodHead,
		URL:          srv.URL + "/v2/x/manifests/latest",
		Header:       http.Header{"Authorization": {"Bearer x"}},
		Conns:        4,
		Duration:     200 * time.Millisecond,
		NewTransport: func() http.RoundTripper { return &http.Transport{} },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 {
		t.Fatalf("errors: %d (%s)", res.Errors, res.FirstError)
	}
	if res.Requests == 0 || res.Requests > hits.Load() {
		t.Fatalf("counted %d requests, server saw %d", res.Requests, hits.Load())
	}
	if len(conns) != 4 {
		t.Fatalf("used %d connections, want 4", len(conns))
	}
	if res.P50 <= 0 || res.P99 < res.P50 {
		t.Fatalf("percentiles p50=%v p99=%v", res.P50, res.P99)
	}
}

// TestRunWarmupFails checks that a server refusing the request fails the
// run up front instead of reporting an empty rate.
func TestRunWarmupFails(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()
	_, err := Run(context.Background(), Config{
		Method: http.MethodGet, URL: srv.URL, Conns: 2, Duration: 50 * time.Millisecond,
		NewTransport: func() http.RoundTripper { return &http.Transport{} },
	})
	if err == nil {
		t.Fatal("want error for 401 warm-up")
	}
}
