package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/e2e/harness"
)

// TestGCLease: of eight stores (eight instances) asking for the gc lease
// of one prefix at once, exactly one gets it (versitygw honours
// If-None-Match: *); the others are told who holds it and until when.
// Another prefix has its own lease. After release the next one gets it.
func TestGCLease(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	ctx := context.Background()
	const n = 8
	stores := make([]*Store, n)
	for i := range stores {
		stores[i] = newStore(t, gw, "site.test", nil)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		winners  []int
		releases []func()
		heldErrs []error
	)
	start := make(chan struct{})
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, release, err := s.LockGC(ctx, fmt.Sprintf("instance-%d", i))
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				winners = append(winners, i)
				releases = append(releases, release)
				return
			}
			heldErrs = append(heldErrs, err)
		}()
	}
	close(start)
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("%d stores hold the lease at once (%v); errors: %v", len(winners), winners, heldErrs)
	}
	for _, err := range heldErrs {
		var he *storage.GCHeldError
		if !errors.As(err, &he) || !errors.Is(err, storage.ErrGCRunning) {
			t.Fatalf("loser's error %v is no GCHeldError", err)
		}
		want := fmt.Sprintf("gc already running on %s/site.test (held by instance-%d until ", bucket, winners[0])
		if !strings.HasPrefix(err.Error(), want) {
			t.Fatalf("message %q, want it to start with %q", err, want)
		}
		if d := time.Until(he.Until); d <= 0 || d > leaseTTL+time.Minute {
			t.Fatalf("held until %s: not within the lease TTL from now", he.Until)
		}
	}
	// The server refuses both conditional writes, so exclusion does
	// not rest on the read-back alone.
	if err := stores[0].writeLease(ctx, lease{Owner: "x"}, ""); !errors.Is(err, errHeld) {
		t.Fatalf("PUT If-None-Match: * over a lease: %v, want 412", err)
	}
	if err := stores[0].writeLease(ctx, lease{Owner: "x"}, "0123456789abcdef0123456789abcdef"); !errors.Is(err, errHeld) {
		t.Fatalf("PUT If-Match: <wrong etag>: %v, want 412", err)
	}
	// Another site in the bucket is not blocked.
	_, rel, err := newStore(t, gw, "other.test", nil).LockGC(ctx, "other")
	if err != nil {
		t.Fatalf("other prefix: %v", err)
	}
	rel()
	releases[0]()
	if l, err := stores[0].readLease(ctx); err != nil || l != nil {
		t.Fatalf("lease after release: %+v %v", l, err)
	}
	next := (winners[0] + 1) % n
	_, rel, err = stores[next].LockGC(ctx, "next")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	rel()
}

// TestGCLeaseExpiry: a lease whose holder stopped renewing it (a killed
// gc) is taken over once expired; the old holder, if it still runs,
// learns at its next renewal that the lease is gone and its context is
// cancelled, so it stops deleting.
func TestGCLeaseExpiry(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	ctx := context.Background()
	a := newStore(t, gw, "site.test", nil)
	a.leaseTTL = 4 * time.Second // renews every second
	b := newStore(t, gw, "site.test", nil)
	actx, arel, err := a.LockGC(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer arel()
	if _, _, err := b.LockGC(ctx, "b"); !errors.Is(err, storage.ErrGCRunning) {
		t.Fatalf("b while a holds: %v", err)
	}
	// Renewals rewrite the lease with a new ETag, so a taker holding
	// the version it saw before cannot overwrite a renewed lease.
	first, err := b.readLease(ctx)
	if err != nil || first == nil {
		t.Fatalf("lease: %+v %v", first, err)
	}
	for {
		now, err := b.readLease(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if now.etag != first.etag {
			if now.Token != first.Token || !now.Renewed.After(first.Renewed) {
				t.Fatalf("renewal changed the lease to %+v (was %+v)", now.lease, first.lease)
			}
			break
		}
		time.Sleep(100 * time.Millisecond) // a renews every second
	}
	if err := b.writeLease(ctx, lease{Owner: "b"}, first.etag); !errors.Is(err, errHeld) {
		t.Fatalf("take-over with the ETag from before a renewal: %v, want 412", err)
	}
	// Pretend a stopped renewing two hours ago: versitygw's LastModified
	// is the file's modification time. (a still renews every second;
	// should a renewal land between the backdating and b's read, b is
	// told a holds it, and the backdating is done again.)
	var brel func()
	for try := 0; ; try++ {
		old := time.Now().Add(-2 * time.Hour)
		if err := os.Chtimes(filepath.Join(gw.Dir, bucket, "site.test", "gc.lease"), old, old); err != nil {
			t.Fatal(err)
		}
		_, brel, err = b.LockGC(ctx, "b")
		if err == nil {
			break
		}
		if !errors.Is(err, storage.ErrGCRunning) || try == 10 {
			t.Fatalf("expired lease not taken over: %v", err)
		}
	}
	defer brel()
	if l, err := b.readLease(ctx); err != nil || l.Owner != "b" {
		t.Fatalf("lease now %+v %v", l, err)
	}
	<-actx.Done() // a's next renewal finds b's lease
	if cause := context.Cause(actx); cause == nil || !strings.Contains(cause.Error(), "taken over") {
		t.Fatalf("a's context ended with %v", cause)
	}
	// a's release must not delete b's lease.
	arel()
	if l, err := b.readLease(ctx); err != nil || l == nil || l.Owner != "b" {
		t.Fatalf("b's lease after a's release: %+v %v", l, err)
	}
}

// noConditions answers 501 Not Implemented to conditional PUTs, as S3
// servers without conditional writes do.
type noConditions struct{ next http.RoundTripper }

func (n noConditions) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut && (req.Header.Get("If-None-Match") != "" || req.Header.Get("If-Match") != "") {
		if req.Body != nil {
			req.Body.Close()
		}
		body := `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code><Message>A header you provided implies functionality that is not implemented</Message></Error>`
		return &http.Response{
			StatusCode: http.StatusNotImplemented, Status: "501 Not Implemented", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header:        http.Header{"Content-Type": {"application/xml"}},
			Body:          io.NopCloser(strings.NewReader(body)),
			ContentLength: int64(len(body)), Request: req,
		}, nil
	}
	return n.next.RoundTrip(req)
}

// TestGCLeaseWithoutConditionalWrites: on a server that refuses
// conditional writes the lease is still taken (write, then read back),
// and a second store asking afterwards is told who holds it.
func TestGCLeaseWithoutConditionalWrites(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	ctx := context.Background()
	plain := func(o *Options) { o.Transport = noConditions{http.DefaultTransport} }
	a := newStore(t, gw, "site.test", plain)
	b := newStore(t, gw, "site.test", plain)
	_, rel, err := a.LockGC(ctx, "a")
	if err != nil {
		t.Fatalf("lease without conditional writes: %v", err)
	}
	if _, _, err := b.LockGC(ctx, "b"); !errors.Is(err, storage.ErrGCRunning) || !strings.Contains(err.Error(), "held by a until") {
		t.Fatalf("second store: %v", err)
	}
	rel()
	_, rel, err = b.LockGC(ctx, "b")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	rel()
}

// TestKilledGCIsSettled: a gc killed right after it moved an object aside
// leaves the object missing, even when a push touched it (and was told
// it is there) just before. The next holder of the gc lease, a gc or any
// instance's janitor, puts back what was touched and finishes the delete
// of what was not.
func TestKilledGCIsSettled(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	ctx := context.Background()
	serving := newStore(t, gw, "site", nil)
	for _, tc := range []struct {
		name  string
		touch bool
		by    string
	}{
		{"touched, next gc", true, "gc"},
		{"untouched, next gc", false, "gc"},
		{"touched, janitor", true, "janitor"},
		{"untouched, janitor", false, "janitor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := randomBytes(t, 4096)
			d := digest.FromBytes(data)
			if err := serving.PutBlob(ctx, d, data); err != nil {
				t.Fatal(err)
			}
			killed := newStore(t, gw, "site", nil)
			killed.hook = func(step string) {
				switch step {
				case "decided":
					if tc.touch {
						if err := serving.TouchBlob(ctx, d); err != nil {
							t.Errorf("touch before the move: %v", err)
						}
					}
				case "moved aside":
					runtime.Goexit() // the process dies here
				}
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = killed.DeleteBlobIfOlder(ctx, d, time.Now().Add(time.Hour))
				t.Error("the delete was not stopped at the hook")
			}()
			<-done
			if _, err := serving.StatBlob(ctx, d); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("blob after the kill: %v, want it aside", err)
			}
			switch tc.by {
			case "gc":
				_, release, err := serving.LockGC(ctx, "next gc")
				if err != nil {
					t.Fatal(err)
				}
				release()
			case "janitor":
				serving.settleKilledGC(ctx)
			}
			got, err := storage.ReadBlob(ctx, serving, d, 1<<20)
			switch {
			case tc.touch && (err != nil || !bytes.Equal(got, data)):
				t.Fatalf("touched blob not back: %v", err)
			case !tc.touch && !errors.Is(err, storage.ErrNotFound):
				t.Fatalf("untouched blob: %v, want it deleted", err)
			}
			if _, err := serving.stat(ctx, serving.markerKey(serving.blobKey(d))); tc.touch == errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("marker after settling (touched %v): %v", tc.touch, err)
			}
			n := 0
			if err := serving.list(ctx, serving.prefix+"trash/", true, func(minio.ObjectInfo) error { n++; return nil }); err != nil || n != 0 {
				t.Fatalf("%d objects left in trash/ (%v)", n, err)
			}
		})
	}
}
