package storage

import (
	"context"
	"io"
)

// TailUpload is an optional interface of an Upload whose bytes can be
// read while Append is still writing them. The pull-through cache uses
// it to let every client that wants a blob being downloaded read it as
// it arrives. Stores that only make data visible at the end (S3: an
// object appears when its upload completes) do not implement it; their
// readers wait for the committed blob.
type TailUpload interface {
	// OpenTail opens the bytes the upload holds, for reading while
	// Append goes on; it may be called from any goroutine. A tail opened
	// before Commit or Cancel stays readable after them; once the upload
	// was committed or cancelled, OpenTail returns ErrNotFound.
	OpenTail(ctx context.Context) (Tail, error)
}

// Tail reads an upload that may still grow.
type Tail interface {
	io.ReadSeekCloser
	// Written is how many bytes can be read now; it grows while the
	// upload's Append runs.
	Written() (int64, error)
}
