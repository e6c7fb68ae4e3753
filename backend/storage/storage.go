// Package storage defines what the registry backend needs from a place to
// keep its data: content-addressed blobs, resumable upload sessions and small
// per-repository records (links, tags, referrers). The interface is small on
// purpose so that an S3-compatible implementation can sit next to the local
// file system one (package localfs) later.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// Errors returned by every Store implementation; test with errors.Is.
var (
	// ErrNotFound: the blob, upload, record or repository does not exist.
	ErrNotFound = errors.New("not found")
	// ErrDigestMismatch: the committed upload's content does not hash to
	// the digest the client named. The upload has been discarded.
	ErrDigestMismatch = errors.New("content does not match digest")
	// ErrNoSpace: the storage is full. Nothing half-written became
	// visible; an upload session keeps what it had acknowledged.
	ErrNoSpace = errors.New("storage is full")
	// ErrInterrupted: reading the data to store failed (the client went
	// away); what was received before stays in the upload session.
	ErrInterrupted = errors.New("upload interrupted")
	// ErrTooLarge: ReadBlob's blob is larger than the caller allows.
	ErrTooLarge = errors.New("larger than allowed")
	// ErrUnavailable: the storage service refused or could not be
	// reached, still after the store's own retries (S3 503 SlowDown); a
	// later try may work.
	ErrUnavailable = errors.New("storage temporarily unavailable")
)

// ReadBlob reads the whole of a small blob (a manifest) of at most max
// bytes: ErrNotFound if it does not exist, ErrTooLarge if it is bigger.
func ReadBlob(ctx context.Context, st Store, d digest.Digest, max int64) ([]byte, error) {
	b, err := st.OpenBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	if b.Size() > max {
		return nil, fmt.Errorf("blob %s has %d bytes: %w (%d)", d, b.Size(), ErrTooLarge, max)
	}
	data := make([]byte, b.Size())
	if _, err := io.ReadFull(b, data); err != nil {
		return nil, fmt.Errorf("read blob %s: %w", d, err)
	}
	return data, nil
}

// Store is the registry's storage: global content-addressed blobs, upload
// sessions that end in a blob, and per-repository records.
//
// Records are small values stored under a repository and a slash-separated
// key such as "tags/latest" or "blobs/sha256/<hex>". Writing a record is
// atomic: readers see the old value or the new one, never a part.
type Store interface {
	// StatBlob returns the size of a blob, or ErrNotFound.
	StatBlob(ctx context.Context, d digest.Digest) (int64, error)
	// OpenBlob opens a blob for reading. The local implementation returns
	// an *os.File inside the Blob so net/http can use sendfile.
	OpenBlob(ctx context.Context, d digest.Digest) (Blob, error)
	// PutBlob stores small content (manifests) whose digest the caller has
	// computed; storing an existing blob again only refreshes its
	// modification time (as TouchBlob does).
	PutBlob(ctx context.Context, d digest.Digest, data []byte) error
	// DeleteBlob removes a blob from the global store (garbage collection).
	DeleteBlob(ctx context.Context, d digest.Digest) error
	// StatBlobInfo returns a blob's size and modification time, or
	// ErrNotFound.
	StatBlobInfo(ctx context.Context, d digest.Digest) (BlobInfo, error)
	// TouchBlob sets a blob's modification time to now, or returns
	// ErrNotFound. The registry touches every blob a new manifest or a
	// mount starts to use, so that garbage collection, which only deletes
	// blobs older than its grace period, leaves them alone.
	TouchBlob(ctx context.Context, d digest.Digest) error
	// DeleteBlobIfOlder removes a blob unless it was modified (stored,
	// touched) at or after cutoff, and reports whether it did; ErrNotFound
	// if it does not exist. Against TouchBlob it is atomic: a touch that
	// comes first keeps the blob, one that comes later gets ErrNotFound.
	DeleteBlobIfOlder(ctx context.Context, d digest.Digest, cutoff time.Time) (bool, error)
	// ListBlobs calls fn for every blob in the store, in no particular
	// order, stopping at fn's first error. Blobs added or removed while it
	// runs may or may not be seen. Upload sessions are not blobs.
	ListBlobs(ctx context.Context, fn func(BlobInfo) error) error

	// NewUpload starts an upload session for repo.
	NewUpload(ctx context.Context, repo string) (Upload, error)
	// OpenUpload resumes the session id of repo, also after a restart. It
	// waits while another request holds the same session; Close releases
	// it. ErrNotFound if the session does not exist or belongs elsewhere.
	OpenUpload(ctx context.Context, repo, id string) (Upload, error)

	// GetRecord reads a record; ErrNotFound if it does not exist.
	GetRecord(ctx context.Context, repo, key string) ([]byte, error)
	// PutRecord writes a record atomically and durably.
	PutRecord(ctx context.Context, repo, key string, value []byte) error
	// StatRecord returns when a record was last written or touched;
	// ErrNotFound if it does not exist.
	StatRecord(ctx context.Context, repo, key string) (time.Time, error)
	// TouchRecord sets a record's modification time to now, or returns
	// ErrNotFound (see TouchBlob).
	TouchRecord(ctx context.Context, repo, key string) error
	// DeleteRecordIfOlder removes a record unless it was written or
	// touched at or after cutoff (see DeleteBlobIfOlder).
	DeleteRecordIfOlder(ctx context.Context, repo, key string, cutoff time.Time) (bool, error)
	// DeleteRecord removes a record; ErrNotFound if it did not exist.
	DeleteRecord(ctx context.Context, repo, key string) error
	// ListRecords lists the names directly under the key prefix dir
	// (e.g. "tags"), sorted; an absent dir gives an empty list.
	ListRecords(ctx context.Context, repo, dir string) ([]string, error)
	// ListRepos lists every repository that holds any record, sorted.
	ListRepos(ctx context.Context) ([]string, error)

	// Close stops background work (expiry of abandoned uploads).
	Close() error
}

// BlobInfo describes a stored blob.
type BlobInfo struct {
	Digest  digest.Digest
	Size    int64
	ModTime time.Time
}

// Blob is an open blob.
type Blob interface {
	io.ReadSeekCloser
	// Size is the blob's length in bytes.
	Size() int64
}

// Upload is one upload session, held exclusively until Close.
type Upload interface {
	// ID is the session's opaque identifier.
	ID() string
	// Size is how many bytes the session holds (all acknowledged).
	Size() int64
	// Append streams r to the end of the upload while hashing it. On a
	// read error (client gone) the bytes already received stay and the
	// session remains resumable; the returned count says how many.
	Append(ctx context.Context, r io.Reader) (int64, error)
	// Commit checks the content against d and moves it into the blob
	// store; on ErrDigestMismatch the session is discarded. The session
	// is gone after a successful Commit.
	Commit(ctx context.Context, d digest.Digest) error
	// Cancel discards the session.
	Cancel(ctx context.Context) error
	// Close releases the session for other requests.
	Close() error
}
