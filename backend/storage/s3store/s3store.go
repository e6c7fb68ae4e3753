// Package s3store is an S3-compatible implementation of storage.Store
// (AWS S3, MinIO, versitygw, Ceph RGW, Garage, SeaweedFS). Several wharf
// processes may use one bucket and prefix at once: nothing mutable is kept
// in memory, upload sessions live in the bucket, and garbage collection
// decides against touches from any process (see README.md).
//
// It uses minio-go: a small client that streams uploads of unknown length
// as multipart uploads with one bounded part buffer, retries 503/SlowDown
// with back-off, and has the server-side copy and compose calls a commit
// needs.
package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/encrypt"
	digest "github.com/opencontainers/go-digest"
	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend/storage"
)

// Options configures a Store.
type Options struct {
	Config
	// AccessKey and SecretKey are static credentials; empty means the
	// AWS environment, shared credentials file or instance role.
	AccessKey, SecretKey string
	// UploadTTL is how long an upload session may stay idle (and an
	// abandoned multipart upload stay in the bucket); default 24h.
	UploadTTL time.Duration
	// PartSize is the multipart part size and so the memory one
	// streaming write holds; default 8 MiB, at least 5 MiB.
	PartSize uint64
	// Transport replaces the HTTP transport (tests: fault injection);
	// blob reads then go through it too, not the direct path.
	Transport http.RoundTripper
	// Waits bound the waits on a server that stops answering.
	Waits Waits
	// MaxRetries bounds minio-go's tries of one request (with back-off);
	// 0 = minio-go's default (10). Tests lower it.
	MaxRetries int
	// Logger receives background-work messages; zero value = quiet.
	Logger zerolog.Logger
}

// Store keeps registry data in one bucket below one prefix.
type Store struct {
	c        *minio.Client
	bucket   string
	prefix   string // "" or ending in "/"
	ttl      time.Duration
	partSize uint64
	sse      encrypt.ServerSide
	log      zerolog.Logger
	waits    Waits
	direct   *direct // blob reads on a plain-HTTP endpoint; nil: through minio-go
	// redirectExpiry is the validity of pre-signed blob URLs (presign.go).
	redirectExpiry time.Duration
	// leaseTTL replaces the gc lease's TTL (lease.go; tests).
	leaseTTL time.Duration

	mu    sync.Mutex
	locks map[string]chan struct{} // upload sessions held in this process

	stop chan struct{}
	done chan struct{}

	// hook runs at the named steps of a conditional delete ("decided",
	// "moved aside"): tests put a touch from another process there, or
	// end the goroutine as a kill would.
	hook func(step string)
}

var _ storage.Store = (*Store)(nil)

const (
	minPart     = 5 << 20
	maxCopySize = 5 << 30 // largest single CopyObject
)

// New connects to the bucket and checks that it exists and the
// credentials are accepted, saying which one is wrong; then it starts
// expiring abandoned uploads.
func New(ctx context.Context, o Options) (*Store, error) {
	if o.Region == "" || o.Endpoint == "" {
		o.SetDefaults("")
	}
	host, secure, err := parseEndpoint(o.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	var creds *credentials.Credentials
	if o.AccessKey != "" || o.SecretKey != "" {
		creds = credentials.NewStaticV4(o.AccessKey, o.SecretKey, "")
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{}, &credentials.FileAWSCredentials{}, &credentials.IAM{},
		})
	}
	lookup := minio.BucketLookupDNS
	if h, _, err := net.SplitHostPort(host); err == nil && net.ParseIP(h) != nil || net.ParseIP(host) != nil || o.PathStyle {
		// An IP address cannot carry the bucket as a subdomain.
		lookup = minio.BucketLookupPath
	}
	o.Waits.setDefaults()
	var dr *direct
	if o.Transport == nil {
		if !secure {
			dr = newDirect(host, o.Waits)
		}
		tr, err := newTransport(secure, o.Waits)
		if err != nil {
			return nil, fmt.Errorf("s3: %w", err)
		}
		o.Transport = tr
	}
	c, err := minio.New(host, &minio.Options{Creds: creds, Secure: secure, Region: o.Region, BucketLookup: lookup, Transport: o.Transport, MaxRetries: o.MaxRetries})
	if err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	if o.UploadTTL <= 0 {
		o.UploadTTL = 24 * time.Hour
	}
	if o.PartSize == 0 {
		o.PartSize = 8 << 20
	}
	if o.PartSize < minPart {
		o.PartSize = minPart
	}
	s := &Store{
		c: c, bucket: o.Bucket, ttl: o.UploadTTL, partSize: o.PartSize, log: o.Logger, waits: o.Waits, direct: dr,
		locks: map[string]chan struct{}{}, stop: make(chan struct{}), done: make(chan struct{}),
	}
	if p := strings.Trim(o.Prefix, "/"); p != "" {
		s.prefix = p + "/"
	}
	if s.sse, err = serverSide(o.Config); err != nil {
		return nil, err
	}
	s.redirectExpiry = o.RedirectExpiry.Std()
	if err := s.probe(ctx); err != nil {
		return nil, err
	}
	go s.janitor()
	return s, nil
}

// probe lists one key of the prefix: it fails on a missing bucket and on
// refused credentials, and says which.
func (s *Store) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix, MaxKeys: 1}) {
		if o.Err != nil {
			return Explain(s.bucket, o.Err)
		}
		return nil // one key is enough; the deferred cancel ends the listing
	}
	return nil
}

// Explain turns an S3 error at start-up into what the user must fix.
func Explain(bucket string, err error) error {
	switch minio.ToErrorResponse(err).Code {
	case "NoSuchBucket":
		return fmt.Errorf("s3: bucket %q does not exist (wharf does not create buckets): %w", bucket, err)
	case "InvalidAccessKeyId", "XAdminUserNotFound": // the latter: versitygw
		return fmt.Errorf("s3: the access key is not known to the server (check access_key_file or AWS_ACCESS_KEY_ID): %w", err)
	case "SignatureDoesNotMatch":
		return fmt.Errorf("s3: the secret key is wrong (check secret_key_file or AWS_SECRET_ACCESS_KEY): %w", err)
	case "AccessDenied":
		return fmt.Errorf("s3: the credentials may not list bucket %q: %w", bucket, err)
	}
	return fmt.Errorf("s3: bucket %q: %w", bucket, err)
}

// Close stops the background expiry.
func (s *Store) Close() error {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	if s.direct != nil {
		s.direct.close()
	}
	return nil
}

// --- keys ------------------------------------------------------------------

func (s *Store) blobKey(d digest.Digest) string {
	return s.prefix + "blobs/" + string(d.Algorithm()) + "/" + d.Encoded()
}

// markerKey is the touch marker of an object key: a small object whose
// every write has new content (so a new ETag); see README.md.
func (s *Store) markerKey(key string) string {
	return s.prefix + "touch/" + strings.TrimPrefix(key, s.prefix)
}

func validRepo(repo string) bool {
	if repo == "" || len(repo) > 255 {
		return false
	}
	for _, c := range strings.Split(repo, "/") {
		if c == "" || c[0] == '.' || c[0] == '_' || strings.ContainsAny(c, "\\\x00") {
			return false
		}
	}
	return true
}

// recordKey maps (repo, key) as localfs does: the key's first component
// gets a '_' prefix, which no repository name component can have.
func (s *Store) recordKey(repo, key string) (string, error) {
	if !validRepo(repo) {
		return "", fmt.Errorf("invalid repository %q: %w", repo, storage.ErrNotFound)
	}
	if key == "" || strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") {
		return "", fmt.Errorf("invalid record key %q: %w", key, storage.ErrNotFound)
	}
	for _, c := range strings.Split(key, "/") {
		if c == "" || c == "." || c == ".." {
			return "", fmt.Errorf("invalid record key %q: %w", key, storage.ErrNotFound)
		}
	}
	return s.prefix + "repositories/" + repo + "/_" + key, nil
}

func (s *Store) uploadKey(id, name string) string { return s.prefix + "uploads/" + id + "/" + name }

// mapErr turns S3's "no such key" into storage.ErrNotFound, and a
// refusal to serve (503 SlowDown, still after minio-go's retries) or an
// unreachable server into storage.ErrUnavailable.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	er := minio.ToErrorResponse(err)
	switch er.Code {
	case "NoSuchKey", "NotFound", "NoSuchUpload":
		return fmt.Errorf("%w: %v", storage.ErrNotFound, err)
	case "SlowDown", "SlowDownRead", "SlowDownWrite", "ServiceUnavailable", "RequestTimeout":
		return fmt.Errorf("%w: %v", storage.ErrUnavailable, err)
	}
	var ne net.Error // *url.Error is one too: a request that never got an answer
	if er.StatusCode == http.StatusServiceUnavailable || errors.As(err, &ne) && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w: %v", storage.ErrUnavailable, err)
	}
	return err
}

// --- small objects ---------------------------------------------------------

func (s *Store) putSmall(ctx context.Context, key string, data []byte) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	_, err := s.c.PutObject(ctx, s.bucket, key, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{ServerSideEncryption: s.sse, DisableMultipart: true})
	return mapErr(err)
}

func (s *Store) getSmall(ctx context.Context, key string, max int64) ([]byte, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	o, err := s.c.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, mapErr(err)
	}
	defer o.Close()
	data, err := io.ReadAll(io.LimitReader(o, max+1))
	if err != nil {
		return nil, mapErr(err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("object %s: %w (%d)", key, storage.ErrTooLarge, max)
	}
	return data, nil
}

func (s *Store) stat(ctx context.Context, key string) (minio.ObjectInfo, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	oi, err := s.c.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	return oi, mapErr(err)
}

func (s *Store) remove(ctx context.Context, key string) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	return mapErr(s.c.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{}))
}

// copyObject copies src to dst inside the bucket (server side), in parts
// when it is larger than one copy may be.
func (s *Store) copyObject(ctx context.Context, src, dst string, size int64) error {
	d := minio.CopyDestOptions{Bucket: s.bucket, Object: dst, Encryption: s.sse}
	sc := minio.CopySrcOptions{Bucket: s.bucket, Object: src}
	var err error
	if size > maxCopySize {
		_, err = s.c.ComposeObject(ctx, d, sc) // part by part: each try bounded by the Copy wait
	} else {
		ctx, cancel := context.WithTimeout(ctx, s.waits.Copy)
		defer cancel()
		_, err = s.c.CopyObject(ctx, d, sc)
	}
	return mapErr(err)
}

// --- times -----------------------------------------------------------------

// touch writes key's marker (new content each time) and then checks that
// key exists: a touch that comes after a conditional delete removed key
// gets ErrNotFound.
func (s *Store) touch(ctx context.Context, key string) error {
	if err := s.putSmall(ctx, s.markerKey(key), []byte(storage.NewID())); err != nil {
		return err
	}
	_, err := s.stat(ctx, key)
	return err
}

// times returns key's object info and its marker's (zero if none).
func (s *Store) times(ctx context.Context, key string) (obj, marker minio.ObjectInfo, err error) {
	obj, err = s.stat(ctx, key)
	if err != nil {
		return obj, marker, err
	}
	marker, err = s.stat(ctx, s.markerKey(key))
	if errors.Is(err, storage.ErrNotFound) {
		err = nil
	}
	return obj, marker, err
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// deleteIfOlder removes key unless it or its marker was written at or
// after cutoff. The object is moved aside first and the marker looked at
// again afterwards: a touch that came in between brings the object back.
func (s *Store) deleteIfOlder(ctx context.Context, key string, cutoff time.Time) (bool, error) {
	obj, marker, err := s.times(ctx, key)
	if err != nil {
		return false, err
	}
	if !later(obj.LastModified, marker.LastModified).Before(cutoff) {
		return false, nil
	}
	if s.hook != nil {
		s.hook("decided")
	}
	aside := s.trashKey(key, marker.ETag)
	if err := s.copyObject(ctx, key, aside, obj.Size); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return false, err
		}
		return false, fmt.Errorf("move %s aside: %w", key, err)
	}
	if err := s.remove(ctx, key); err != nil {
		_ = s.remove(ctx, aside)
		return false, err
	}
	if s.hook != nil {
		s.hook("moved aside")
	}
	// From here the object is missing: settle it even if the caller's
	// context ends now (a lost lease, a signal); each step has its own
	// wait.
	return s.settle(context.WithoutCancel(ctx), aside, key, marker.ETag, obj.Size)
}

// settle decides an object moved aside to aside: if key's marker no
// longer has the ETag was it had when gc decided, someone touched it in
// between and it goes back (unless a new copy is in place already);
// otherwise the delete is final. When in doubt it keeps the aside copy
// and reports the error.
func (s *Store) settle(ctx context.Context, aside, key, was string, size int64) (bool, error) {
	now, err := s.stat(ctx, s.markerKey(key))
	switch {
	case errors.Is(err, storage.ErrNotFound):
		now.ETag = ""
	case err != nil:
		return false, fmt.Errorf("look at %s's marker again (kept as %s): %w", key, aside, err)
	}
	if now.ETag != was {
		// Someone uses it again: put it back unless a new copy is there.
		switch _, err := s.stat(ctx, key); {
		case errors.Is(err, storage.ErrNotFound):
			if err := s.copyObject(ctx, aside, key, size); err != nil {
				return false, fmt.Errorf("restore %s (kept as %s): %w", key, aside, err)
			}
		case err != nil:
			return false, fmt.Errorf("restore %s (kept as %s): %w", key, aside, err)
		}
		return false, s.remove(ctx, aside)
	}
	_ = s.remove(ctx, s.markerKey(key))
	return true, s.remove(ctx, aside)
}

// trashKey is where key is moved aside to. The name carries key and the
// ETag its marker had when gc decided ("-": none), so that whoever next
// holds the gc lease can settle it if this gc is killed first.
func (s *Store) trashKey(key, markerETag string) string {
	if markerETag == "" {
		markerETag = "-"
	}
	return s.prefix + "trash/" + storage.NewID() + "/" + url.PathEscape(markerETag) + "/" + strings.TrimPrefix(key, s.prefix)
}

// parseTrash reads a trashKey; ok is false for other names (objects an
// older wharf moved aside, removed by the janitor after the upload TTL).
func (s *Store) parseTrash(tk string) (key, markerETag string, ok bool) {
	rest, found := strings.CutPrefix(tk, s.prefix+"trash/")
	if !found {
		return "", "", false
	}
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) != 3 || !storage.ValidID(parts[0]) || parts[2] == "" {
		return "", "", false
	}
	markerETag, err := url.PathUnescape(parts[1])
	if err != nil {
		return "", "", false
	}
	if markerETag == "-" {
		markerETag = ""
	}
	return s.prefix + parts[2], markerETag, true
}

// finishTrash settles what a killed gc left between moving objects aside
// and looking at their markers again (a touch in that window must not
// lose the object). It runs under the gc lease, when no live gc is in
// that window.
func (s *Store) finishTrash(ctx context.Context) error {
	var left []minio.ObjectInfo
	err := s.list(ctx, s.prefix+"trash/", true, func(o minio.ObjectInfo) error {
		left = append(left, o)
		return nil
	})
	if err != nil {
		return err
	}
	for _, o := range left {
		key, was, ok := s.parseTrash(o.Key)
		if !ok {
			continue
		}
		gone, err := s.settle(ctx, o.Key, key, was, o.Size)
		if err != nil {
			return err
		}
		s.log.Info().Str("key", key).Bool("deleted", gone).Msg("s3: settled an object a killed gc left aside")
	}
	return nil
}

// --- blobs -----------------------------------------------------------------

// StatBlob returns a blob's size.
func (s *Store) StatBlob(ctx context.Context, d digest.Digest) (int64, error) {
	oi, err := s.stat(ctx, s.blobKey(d))
	return oi.Size, err
}

// blob is an open S3 object read straight from the response body (no
// read-ahead goroutine, no copy); a Seek to another offset reopens it
// with a Range. On a plain-HTTP endpoint the body comes through the
// direct path (direct.go), whose WriteTo splices it to the client. Reads
// past a cut connection fail, they never return other bytes.
type blob struct {
	ctx  context.Context // the caller's
	s    *Store
	key  string
	size int64
	off  int64
	body io.ReadCloser // through minio-go, or
	db   *directBody   // through the direct path
	// rctx is the open body's context and cancel ends it; stall
	// cancels it when a read of a minio-go body gets nothing for the
	// Stall wait (the direct path has a read deadline instead).
	rctx   context.Context
	cancel context.CancelFunc
	stall  *time.Timer
}

func (b *blob) Size() int64 { return b.size }

// open starts reading at b.off: the direct path where there is one,
// else (or when it gets no usable answer) minio-go with its retries; all
// of it within the Op wait.
func (b *blob) open() error {
	ctx, cancel := context.WithCancel(b.ctx)
	opening := time.AfterFunc(b.s.waits.Op, cancel)
	err := b.openBody(ctx)
	if !opening.Stop() && b.ctx.Err() == nil {
		b.closeBody()
		cancel()
		return fmt.Errorf("%w: no answer from S3 within %s", storage.ErrUnavailable, b.s.waits.Op)
	}
	if err != nil {
		cancel()
		return err
	}
	b.rctx, b.cancel = ctx, cancel
	if b.body != nil {
		b.stall = time.AfterFunc(b.s.waits.Stall, cancel)
		b.stall.Stop()
	}
	return nil
}

func (b *blob) openBody(ctx context.Context) error {
	if b.s.direct != nil {
		db, size, err := b.s.openDirect(ctx, b.key, b.off)
		if err == nil {
			b.db, b.size = db, size
			return nil
		}
		b.s.log.Debug().Err(err).Str("key", b.key).Msg("s3: direct read, asking through the client")
	}
	var o minio.GetObjectOptions
	if b.off > 0 { // SetRange(0, 0) would ask for one byte
		if err := o.SetRange(b.off, 0); err != nil {
			return err
		}
	}
	body, info, _, err := minio.Core{Client: b.s.c}.GetObject(ctx, b.s.bucket, b.key, o)
	if err != nil {
		return mapErr(err)
	}
	if b.off == 0 {
		b.size = info.Size
	}
	b.body = body
	return nil
}

func (b *blob) Read(p []byte) (int, error) {
	if b.off >= b.size {
		return 0, io.EOF
	}
	if b.body == nil && b.db == nil {
		if err := b.open(); err != nil {
			return 0, err
		}
	}
	var n int
	var err error
	if b.db != nil {
		n, err = b.db.Read(b.rctx, p)
		if b.db.left == 0 {
			b.db.release(b.s.direct)
		}
	} else {
		b.stall.Reset(b.s.waits.Stall)
		n, err = b.body.Read(p)
		if !b.stall.Stop() && b.ctx.Err() == nil {
			err = fmt.Errorf("%w: S3 sent nothing for %s", storage.ErrUnavailable, b.s.waits.Stall)
		}
	}
	b.off += int64(n)
	if err == io.EOF && b.off < b.size {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// WriteTo streams the rest of the blob to w: spliced from the direct
// path's connection, else in 256 KiB writes (io.Copy would use 32 KiB
// ones, each a trip through the gateway's response writers).
func (b *blob) WriteTo(w io.Writer) (int64, error) {
	if b.off < b.size && b.body == nil && b.db == nil {
		if err := b.open(); err != nil {
			return 0, err
		}
	}
	if b.db != nil {
		n, err := b.db.WriteTo(b.rctx, w)
		b.off += n
		if b.db.left == 0 {
			b.db.release(b.s.direct)
		}
		return n, err
	}
	buf := make([]byte, 256<<10)
	var n int64
	for {
		r, err := io.ReadFull(b, buf)
		if r > 0 {
			wn, werr := w.Write(buf[:r])
			n += int64(wn)
			if werr != nil {
				return n, werr
			}
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF && b.off >= b.size:
			return n, nil
		case err != nil:
			return n, err
		}
	}
}

func (b *blob) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += b.off
	case io.SeekEnd:
		offset += b.size
	}
	if offset < 0 {
		return 0, errors.New("seek before the start of the blob")
	}
	if offset != b.off {
		b.closeBody()
	}
	b.off = offset
	return offset, nil
}

func (b *blob) closeBody() error {
	if b.stall != nil {
		b.stall.Stop()
	}
	if b.cancel != nil {
		b.cancel()
		b.cancel, b.stall, b.rctx = nil, nil, nil
	}
	var err error
	if b.body != nil {
		err = b.body.Close()
		b.body = nil
	}
	if b.db != nil {
		b.db.release(b.s.direct)
		b.db = nil
	}
	return err
}

func (b *blob) Close() error { return b.closeBody() }

// OpenBlob opens a blob: one GET whose answer gives the size and whose
// body a full read streams.
func (s *Store) OpenBlob(ctx context.Context, d digest.Digest) (storage.Blob, error) {
	b := &blob{ctx: ctx, s: s, key: s.blobKey(d)}
	if err := b.open(); err != nil {
		return nil, err
	}
	return b, nil
}

// PutBlob stores small content after checking its digest; an existing
// blob is only touched.
func (s *Store) PutBlob(ctx context.Context, d digest.Digest, data []byte) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if got := d.Algorithm().FromBytes(data); got != d {
		return fmt.Errorf("%w: got %s", storage.ErrDigestMismatch, got)
	}
	key := s.blobKey(d)
	if err := s.touch(ctx, key); err == nil {
		return nil
	}
	return s.putSmall(ctx, key, data)
}

// DeleteBlob removes a blob.
func (s *Store) DeleteBlob(ctx context.Context, d digest.Digest) error {
	key := s.blobKey(d)
	if _, err := s.stat(ctx, key); err != nil {
		return err
	}
	_ = s.remove(ctx, s.markerKey(key))
	return s.remove(ctx, key)
}

// StatBlobInfo returns size and the later of write and touch time.
func (s *Store) StatBlobInfo(ctx context.Context, d digest.Digest) (storage.BlobInfo, error) {
	obj, marker, err := s.times(ctx, s.blobKey(d))
	if err != nil {
		return storage.BlobInfo{}, err
	}
	return storage.BlobInfo{Digest: d, Size: obj.Size, ModTime: later(obj.LastModified, marker.LastModified)}, nil
}

// TouchBlob marks a blob as in use now.
func (s *Store) TouchBlob(ctx context.Context, d digest.Digest) error {
	return s.touch(ctx, s.blobKey(d))
}

// DeleteBlobIfOlder removes a blob unless written or touched at or after
// cutoff.
func (s *Store) DeleteBlobIfOlder(ctx context.Context, d digest.Digest, cutoff time.Time) (bool, error) {
	return s.deleteIfOlder(ctx, s.blobKey(d), cutoff)
}

// ListBlobs lists every blob with its later of write and touch time.
func (s *Store) ListBlobs(ctx context.Context, fn func(storage.BlobInfo) error) error {
	touched := map[string]time.Time{}
	mp := s.markerKey(s.prefix + "blobs/")
	err := s.list(ctx, mp, true, func(o minio.ObjectInfo) error {
		touched[strings.TrimPrefix(o.Key, mp)] = o.LastModified
		return nil
	})
	if err != nil {
		return err
	}
	bp := s.prefix + "blobs/"
	return s.list(ctx, bp, true, func(o minio.ObjectInfo) error {
		rel := strings.TrimPrefix(o.Key, bp)
		alg, hexpart, ok := strings.Cut(rel, "/")
		if !ok {
			return nil
		}
		d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hexpart)
		if d.Validate() != nil {
			return nil
		}
		return fn(storage.BlobInfo{Digest: d, Size: o.Size, ModTime: later(o.LastModified, touched[rel])})
	})
}

// list calls fn for each object under prefix. It fails with
// ErrUnavailable when the server delivers no key for the Op wait (the
// time in fn does not count: a whole listing of a big prefix may take
// longer), and it always ends minio-go's listing goroutine.
func (s *Store) list(ctx context.Context, prefix string, recursive bool, fn func(minio.ObjectInfo) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stalled atomic.Bool
	wait := time.AfterFunc(s.waits.Op, func() { stalled.Store(true); cancel() })
	defer wait.Stop()
	unavailable := func() error {
		return fmt.Errorf("%w: listing %s: no answer from S3 within %s", storage.ErrUnavailable, prefix, s.waits.Op)
	}
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: recursive}) {
		if !wait.Stop() {
			return unavailable()
		}
		if o.Err != nil {
			return mapErr(o.Err)
		}
		if err := fn(o); err != nil {
			return err
		}
		wait.Reset(s.waits.Op)
	}
	if stalled.Load() {
		return unavailable()
	}
	return ctx.Err()
}

// --- records ---------------------------------------------------------------

// maxRecord bounds a record read (records are links, tags, descriptors).
const maxRecord = 1 << 20

// GetRecord reads a record.
func (s *Store) GetRecord(ctx context.Context, repo, key string) ([]byte, error) {
	k, err := s.recordKey(repo, key)
	if err != nil {
		return nil, err
	}
	return s.getSmall(ctx, k, maxRecord)
}

// PutRecord writes a record; a PUT is atomic on S3.
func (s *Store) PutRecord(ctx context.Context, repo, key string, value []byte) error {
	k, err := s.recordKey(repo, key)
	if err != nil {
		return err
	}
	return s.putSmall(ctx, k, value)
}

// StatRecord returns the later of a record's write and touch time.
func (s *Store) StatRecord(ctx context.Context, repo, key string) (time.Time, error) {
	k, err := s.recordKey(repo, key)
	if err != nil {
		return time.Time{}, err
	}
	obj, marker, err := s.times(ctx, k)
	return later(obj.LastModified, marker.LastModified), err
}

// TouchRecord marks a record as in use now.
func (s *Store) TouchRecord(ctx context.Context, repo, key string) error {
	k, err := s.recordKey(repo, key)
	if err != nil {
		return err
	}
	return s.touch(ctx, k)
}

// DeleteRecordIfOlder removes a record unless written or touched at or
// after cutoff.
func (s *Store) DeleteRecordIfOlder(ctx context.Context, repo, key string, cutoff time.Time) (bool, error) {
	k, err := s.recordKey(repo, key)
	if err != nil {
		return false, err
	}
	return s.deleteIfOlder(ctx, k, cutoff)
}

// DeleteRecord removes a record.
func (s *Store) DeleteRecord(ctx context.Context, repo, key string) error {
	k, err := s.recordKey(repo, key)
	if err != nil {
		return err
	}
	if _, err := s.stat(ctx, k); err != nil {
		return err
	}
	_ = s.remove(ctx, s.markerKey(k))
	return s.remove(ctx, k)
}

// ListRecords lists the names directly under dir, sorted.
func (s *Store) ListRecords(ctx context.Context, repo, dir string) ([]string, error) {
	k, err := s.recordKey(repo, dir)
	if err != nil {
		return nil, err
	}
	var names []string
	err = s.list(ctx, k+"/", false, func(o minio.ObjectInfo) error {
		if n := path.Base(strings.TrimSuffix(o.Key, "/")); n != "" && n[0] != '.' {
			names = append(names, n)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

// ListRepos lists every repository holding a record, sorted.
func (s *Store) ListRepos(ctx context.Context) ([]string, error) {
	base := s.prefix + "repositories/"
	seen := map[string]bool{}
	err := s.list(ctx, base, true, func(o minio.ObjectInfo) error {
		parts := strings.Split(strings.TrimPrefix(o.Key, base), "/")
		for i, p := range parts {
			if strings.HasPrefix(p, "_") {
				if i > 0 {
					seen[strings.Join(parts[:i], "/")] = true
				}
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list repositories: %w", err)
	}
	repos := make([]string, 0, len(seen))
	for r := range seen {
		repos = append(repos, r)
	}
	sort.Strings(repos)
	return repos, nil
}

// --- background ------------------------------------------------------------

func (s *Store) janitor() {
	defer close(s.done)
	every := s.ttl / 4
	if every > 10*time.Minute {
		every = 10 * time.Minute
	}
	if every < time.Second {
		every = time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-s.stop; cancel() }()
	s.expire(ctx, time.Now())
	t := time.NewTicker(every)
	defer t.Stop()
	// Objects a killed gc left aside are looked for more often: one of
	// them may be in use and is missing until settled. Not at start-up:
	// `wharf gc` would find the lease taken by its own janitor (every
	// gc settles them first anyway: LockGC).
	ttl, _ := s.leaseTimes()
	trash := time.NewTicker(ttl / 2)
	defer trash.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.expire(ctx, now)
		case <-trash.C:
			s.settleKilledGC(ctx)
		}
	}
}

// expire removes upload sessions idle for longer than the TTL, objects
// a crashed garbage collection left aside, and multipart uploads a crash
// abandoned (they are invisible but cost storage).
func (s *Store) expire(ctx context.Context, now time.Time) {
	old := now.Add(-s.ttl)
	sessions := map[string]time.Time{}
	up := s.prefix + "uploads/"
	err := s.list(ctx, up, true, func(o minio.ObjectInfo) error {
		id, _, _ := strings.Cut(strings.TrimPrefix(o.Key, up), "/")
		sessions[id] = later(sessions[id], o.LastModified)
		return nil
	})
	if err != nil {
		s.log.Warn().Err(err).Msg("s3: list uploads")
		return
	}
	for id, t := range sessions {
		if t.Before(old) {
			s.removeSession(ctx, id)
		}
	}
	// Objects an older wharf's killed gc moved aside (those of this one
	// are settled under the gc lease: settleKilledGC).
	_ = s.list(ctx, s.prefix+"trash/", true, func(o minio.ObjectInfo) error {
		if _, _, ok := s.parseTrash(o.Key); !ok && o.LastModified.Before(old) {
			_ = s.remove(ctx, o.Key)
		}
		return nil
	})
	for m := range s.c.ListIncompleteUploads(ctx, s.bucket, s.prefix, true) {
		if m.Err != nil {
			s.log.Debug().Err(m.Err).Msg("s3: list multipart uploads")
			return
		}
		if m.Initiated.Before(old) {
			if err := s.c.RemoveIncompleteUpload(ctx, s.bucket, m.Key); err != nil {
				s.log.Warn().Err(err).Str("key", m.Key).Msg("s3: abort abandoned multipart upload")
			}
		}
	}
}

func (s *Store) removeSession(ctx context.Context, id string) {
	_ = s.list(ctx, s.prefix+"uploads/"+id+"/", true, func(o minio.ObjectInfo) error {
		if err := s.remove(ctx, o.Key); err != nil {
			s.log.Warn().Err(err).Str("key", o.Key).Msg("s3: remove upload")
		}
		return nil
	})
}
