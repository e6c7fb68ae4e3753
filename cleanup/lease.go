package cleanup

import (
	"context"

	"github.com/wharf-dev/wharf/backend/storage"
)

// LockStore takes st's gc lease when st is shared by several processes
// (a storage.GCLocker: an S3 bucket behind several instances, where the
// data directory's flock cannot reach); other stores need none and get
// ctx back unchanged. what names the caller in the lease ("wharf gc",
// "scheduled gc"), for the message another run prints. The returned
// context ends if the lease is lost: delete only under it. An error
// wrapping storage.ErrGCRunning means another collection holds the
// lease: skip the site.
func LockStore(ctx context.Context, st storage.Store, what string) (context.Context, func(), error) {
	l, ok := st.(storage.GCLocker)
	if !ok {
		return ctx, func() {}, nil
	}
	return l.LockGC(ctx, storage.GCOwner(what))
}
