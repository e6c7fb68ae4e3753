// Package storage defines what the registry backend needs from a place to
// keep its data: content-addressed blobs, resumable upload sessions and small
// per-repository records (links, tags, referrers), split into what each
// user needs (Blobs, Uploads, Records, Clock; Store is their union). The
// local file system (package localfs) and S3 (package s3store) implement
// Store; package layout owns the record keys, package sweep the
// mark-and-sweep that garbage collection and cache eviction share.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
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
func ReadBlob(ctx context.Context, st BlobReader, d digest.Digest, max int64) ([]byte, error) {
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
// sessions that end in a blob, per-repository records, and the clock that
// garbage collection decides by. It is the union of the narrower
// interfaces below; code that needs only a part takes that part (gc takes
// blobs, records and the clock; the web UI only reads).
//
// Records are small values stored under a repository and a slash-separated
// key such as "tags/latest" or "blobs/sha256/<hex>" (package layout owns
// the keys). Writing a record is atomic: readers see the old value or the
// new one, never a part.
type Store interface {
	Blobs
	Uploads
	Records
	Clock

	// Close stops background work (expiry of abandoned uploads).
	Close() error
}

// BlobReader reads the global content-addressed blob store.
type BlobReader interface {
	// StatBlob returns the size of a blob, or ErrNotFound.
	StatBlob(ctx context.Context, d digest.Digest) (int64, error)
	// OpenBlob opens a blob for reading. A store that keeps blobs in
	// files returns a Blob that is also a FileBlob, so net/http can use
	// sendfile.
	OpenBlob(ctx context.Context, d digest.Digest) (Blob, error)
	// ListBlobs calls fn for every blob in the store, in no particular
	// order, stopping at fn's first error. Blobs added or removed while it
	// runs may or may not be seen. Upload sessions are not blobs.
	ListBlobs(ctx context.Context, fn func(BlobInfo) error) error
}

// Blobs is the global content-addressed blob store: blobs are written by
// committing an upload (Uploads) or, for small content, by PutBlob.
type Blobs interface {
	BlobReader
	// PutBlob stores small content (manifests) whose digest the caller has
	// computed; storing an existing blob again only refreshes its
	// last-modified time on the Clock (as TouchBlob does).
	PutBlob(ctx context.Context, d digest.Digest, data []byte) error
	// DeleteBlob removes a blob from the global store unconditionally.
	// Garbage collection uses Clock.DeleteBlobIfOlder instead.
	DeleteBlob(ctx context.Context, d digest.Digest) error
}

// Uploads are resumable upload sessions; a committed session becomes a
// blob.
type Uploads interface {
	// NewUpload starts an upload session for repo.
	NewUpload(ctx context.Context, repo string) (Upload, error)
	// OpenUpload resumes the session id of repo, also after a restart. It
	// waits while another request holds the same session; Close releases
	// it. ErrNotFound if the session does not exist or belongs elsewhere.
	OpenUpload(ctx context.Context, repo, id string) (Upload, error)
}

// RecordReader reads per-repository records.
type RecordReader interface {
	// GetRecord reads a record; ErrNotFound if it does not exist.
	GetRecord(ctx context.Context, repo, key string) ([]byte, error)
	// ListRecords lists the names directly under the key prefix dir
	// (e.g. "tags"), sorted; an absent dir gives an empty list.
	ListRecords(ctx context.Context, repo, dir string) ([]string, error)
	// ListRepos lists every repository that holds any record, sorted.
	ListRepos(ctx context.Context) ([]string, error)
}

// Records are the per-repository records: links to blobs, manifests,
// tags, referrers (see package layout for the keys).
type Records interface {
	RecordReader
	// PutRecord writes a record atomically and durably.
	PutRecord(ctx context.Context, repo, key string, value []byte) error
	// DeleteRecord removes a record unconditionally; ErrNotFound if it did
	// not exist. Garbage collection uses Clock.DeleteRecordIfOlder.
	DeleteRecord(ctx context.Context, repo, key string) error
}

// Times reads the Clock: when a blob or record was last written or
// touched.
type Times interface {
	// StatBlobInfo returns a blob's size and last-modified time, or
	// ErrNotFound.
	StatBlobInfo(ctx context.Context, d digest.Digest) (BlobInfo, error)
	// StatRecord returns when a record was last written or touched;
	// ErrNotFound if it does not exist.
	StatRecord(ctx context.Context, repo, key string) (time.Time, error)
}

// Clock is the garbage collector's clock: every blob and record carries a
// last-modified time, set when it is written and by a touch, and the
// collector removes only what is older than its cutoff, atomically
// against a concurrent touch. That is the whole promise the mark-and-sweep
// (package sweep) relies on to run while the registry or cache serves:
//
//   - a write or a touch that returns before a DeleteIfOlder starts makes
//     that DeleteIfOlder keep the item (it reports false);
//   - a touch after a successful DeleteIfOlder fails with ErrNotFound, so
//     the writer learns the item is gone and does not use it;
//   - times are comparable across the processes that share the store
//     (their wall clocks are assumed to be in sync within the grace).
//
// The local file system keeps the time as the file's modification time
// (a touch is a utimes; DeleteIfOlder moves the file aside, checks the
// time and puts it back if it was touched). The S3 store keeps it in
// marker objects next to the data, since S3 has no writable modification
// time (s3store's README has the protocol, and its one exception: a gc
// killed between moving an object aside and re-checking its marker).
type Clock interface {
	Times
	// TouchBlob sets a blob's time to now, or returns ErrNotFound. The
	// registry touches every blob a new manifest or a mount starts to use,
	// so that garbage collection, which only deletes blobs older than its
	// grace period, leaves them alone.
	TouchBlob(ctx context.Context, d digest.Digest) error
	// TouchRecord sets a record's time to now, or returns ErrNotFound.
	TouchRecord(ctx context.Context, repo, key string) error
	// DeleteBlobIfOlder removes a blob unless it was written or touched at
	// or after cutoff, and reports whether it did; ErrNotFound if it does
	// not exist. Against TouchBlob it is atomic (see above).
	DeleteBlobIfOlder(ctx context.Context, d digest.Digest, cutoff time.Time) (bool, error)
	// DeleteRecordIfOlder removes a record unless it was written or
	// touched at or after cutoff (see DeleteBlobIfOlder).
	DeleteRecordIfOlder(ctx context.Context, repo, key string, cutoff time.Time) (bool, error)
}

// FileBlob is an optional interface of a Blob that is an open file (the
// local file system): net/http copies from the *os.File with sendfile.
// The file belongs to the Blob; close the Blob, not the file.
type FileBlob interface {
	Blob
	OSFile() *os.File
}

// BlobImporter is an optional interface of a store that can take a blob
// from a local file without streaming it through an upload session
// (localfs: a hard link or a copy, verified, then renamed into place);
// `wharf import` uses it. src must hash to d unless trust is set and the
// file was linked; on a mismatch nothing becomes visible and the error
// wraps ErrDigestMismatch. buf is the read buffer for hashing.
type BlobImporter interface {
	ImportBlob(ctx context.Context, d digest.Digest, src string, link, trust bool, buf []byte) (linked bool, size int64, err error)
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
