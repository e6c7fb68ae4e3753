package cleanup

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/localfs"
	"github.com/wharf-dev/wharf/backend/storage/s3store"
	"github.com/wharf-dev/wharf/e2e/harness"
)

// TestScheduledRunsShareTheBucketLease: two instances (two data
// directories, so two different flocks) run the scheduled clean-up on
// the same S3 site. While one holds the bucket's gc lease, the other's
// run skips the site, says who holds it, and counts no error; once it
// is released the next run collects.
func TestScheduledRunsShareTheBucketLease(t *testing.T) {
	gw := harness.StartVersityGW(t, "wharf")
	open := func() (storage.Store, error) {
		return s3store.New(context.Background(), s3store.Options{
			Config:    s3store.Config{Bucket: "wharf", Prefix: "registry.test", Endpoint: gw.Endpoint, PathStyle: true, Region: "us-east-1"},
			AccessKey: gw.AccessKey, SecretKey: gw.SecretKey,
		})
	}
	holder, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	_, release, err := LockStore(context.Background(), holder, "instance one")
	if err != nil {
		t.Fatal(err)
	}
	job := Job{DataDir: t.TempDir(), Sites: []Site{{Host: "registry.test", Registry: true, Root: "s3://wharf/registry.test", Remote: true, Open: open}}}
	var logBuf bytes.Buffer
	sum, err := Run(context.Background(), job, zerolog.New(&logBuf))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Skipped != 1 || sum.Errors != 0 {
		t.Fatalf("run while another holds the lease: %+v", sum)
	}
	if !strings.Contains(logBuf.String(), "gc already running on wharf/registry.test (held by ") ||
		!strings.Contains(logBuf.String(), "(instance one) until ") {
		t.Fatalf("log does not say who holds the lease:\n%s", logBuf.String())
	}
	if !strings.Contains(sum.String(), "1 sites skipped") {
		t.Errorf("summary %q does not mention the skipped site", sum)
	}
	release()
	sum, err = Run(context.Background(), job, zerolog.New(&logBuf))
	if err != nil || sum.Skipped != 0 || sum.Errors != 0 {
		t.Fatalf("run after release: %+v %v\n%s", sum, err, logBuf.String())
	}
}

// TestLockStoreLocal: a local store has no lease (the data directory's
// flock covers it): LockStore hands back the same context.
func TestLockStoreLocal(t *testing.T) {
	st, err := localfs.New(localfs.Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	got, release, err := LockStore(ctx, st, "x")
	if err != nil || got != ctx {
		t.Fatalf("LockStore on localfs: %v %v", got, err)
	}
	release()
}
