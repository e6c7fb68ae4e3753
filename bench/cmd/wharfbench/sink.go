package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/wharf-dev/wharf/bench/internal/regclient"
)

// startSink serves an upload endpoint that reads and discards every body
// (no hashing, no disk): pushing to it measures the client's own ceiling,
// the most any registry could show in this run. It returns the base URL
// and a stop function.
func startSink() (string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("sink: %w", err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 1<<20)
		for {
			if _, err := r.Body.Read(buf); err != nil {
				break
			}
		}
		switch r.Method {
		case http.MethodPost, http.MethodPatch:
			w.Header().Set("Location", "/v2/sink/blobs/uploads/1")
			w.WriteHeader(http.StatusAccepted)
		case http.MethodPut:
			w.WriteHeader(http.StatusCreated)
		default:
			w.WriteHeader(http.StatusOK)
		}
	})}
	go func() { _ = srv.Serve(l) }()
	return "http://" + l.Addr().String(), func() { _ = srv.Close() }, nil
}

// sinkPhase measures the client's push ceiling (streamed and monolithic).
func (b *bench) sinkPhase(ctx context.Context, s *Section, r int) error {
	base, stop, err := startSink()
	if err != nil {
		return err
	}
	defer stop()
	c, err := regclient.New(regclient.Options{Base: base})
	if err != nil {
		return err
	}
	defer c.Close()
	for _, m := range []struct {
		what, metric string
		fn           func() error
	}{
		{"push POST+PATCH+PUT", "push_mbs", func() error { return pushStreamed(ctx, c, "sink", b.blob) }},
		{"push monolithic PUT", "push_put_mbs", func() error { return pushMonolithic(ctx, c, "sink", b.blob) }},
	} {
		t, err := timed(nil, b.blob.Size, m.fn)
		if err != nil {
			return fmt.Errorf("sink %s: %w", m.what, err)
		}
		s.put("client-limit", m.metric, r, t.MBs)
		logf("%s run %d %-16s %-22s %7.0f MB/s", s.ID, r+1, "client-limit", m.what, t.MBs)
	}
	return nil
}
