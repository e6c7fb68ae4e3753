package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

// ErrGCRunning: another garbage collection holds the store's gc lease.
// The error is a *GCHeldError that says who and until when.
var ErrGCRunning = errors.New("gc already running")

// GCLocker is implemented by stores that several processes share
// (s3store: one bucket behind many instances), where a lock file on one
// machine cannot keep two collections apart. Retention and gc take the
// lease before they delete anything; a dry run needs none.
type GCLocker interface {
	// LockGC takes the store's gc lease for owner (a name for messages,
	// such as "host pid 42 (wharf gc)") without waiting: a
	// *GCHeldError if another holds it. The returned context is ctx
	// until the lease is lost (it could not be renewed, or another took
	// it over), then it is cancelled: collect with it. release gives
	// the lease back; call it once.
	LockGC(ctx context.Context, owner string) (lctx context.Context, release func(), err error)
}

// GCHeldError says that another collection holds the gc lease.
type GCHeldError struct {
	Where string    // e.g. bucket/prefix
	Owner string    // the holder's owner string
	Until time.Time // when the lease expires unless its holder renews it
}

func (e *GCHeldError) Error() string {
	return fmt.Sprintf("gc already running on %s (held by %s until %s)", e.Where, e.Owner, e.Until.UTC().Format(time.RFC3339))
}

// Unwrap makes errors.Is(err, ErrGCRunning) true.
func (e *GCHeldError) Unwrap() error { return ErrGCRunning }

// GCOwner names this process as a lease holder for what it does ("wharf
// gc", "janitor"): "host pid 42 (wharf gc)", what other runs print.
func GCOwner(what string) string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown host"
	}
	return fmt.Sprintf("%s pid %d (%s)", host, os.Getpid(), what)
}
