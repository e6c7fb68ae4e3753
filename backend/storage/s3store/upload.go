package s3store

import (
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/minio/minio-go/v7"
	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/storage"
)

// state is an upload session as stored in uploads/<id>/state: every
// acknowledged chunk and the sha256 state after the last one, so any
// process can continue the session without rehashing.
type state struct {
	Repo    string    `json:"repo"`
	Size    int64     `json:"size"`
	Chunks  []int64   `json:"chunks"` // size of uploads/<id>/chunk-<i>
	Hash    []byte    `json:"sha256"` // encoding.BinaryMarshaler of the hash
	Started time.Time `json:"started"`
}

type upload struct {
	s      *Store
	id     string
	st     state
	h      hash.Hash
	closed bool
	unlock func()
}

// lock holds id within this process until the returned func is called;
// it waits for another request holding it, or for ctx.
func (s *Store) lock(ctx context.Context, id string) (func(), error) {
	for {
		s.mu.Lock()
		ch, held := s.locks[id]
		if !held {
			ch = make(chan struct{})
			s.locks[id] = ch
			s.mu.Unlock()
			return func() {
				s.mu.Lock()
				delete(s.locks, id)
				s.mu.Unlock()
				close(ch)
			}, nil
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// NewUpload starts a session for repo.
func (s *Store) NewUpload(ctx context.Context, repo string) (storage.Upload, error) {
	if !validRepo(repo) {
		return nil, fmt.Errorf("invalid repository %q", repo)
	}
	id := storage.NewID()
	unlock, err := s.lock(ctx, id)
	if err != nil {
		return nil, err
	}
	u := &upload{s: s, id: id, st: state{Repo: repo, Started: time.Now().UTC()}, h: sha256.New(), unlock: unlock}
	if err := u.save(ctx); err != nil {
		unlock()
		return nil, err
	}
	return u, nil
}

// OpenUpload resumes session id of repo, started by any process.
func (s *Store) OpenUpload(ctx context.Context, repo, id string) (storage.Upload, error) {
	if !storage.ValidID(id) {
		return nil, storage.ErrNotFound
	}
	unlock, err := s.lock(ctx, id)
	if err != nil {
		return nil, err
	}
	u := &upload{s: s, id: id, unlock: unlock}
	if err := u.load(ctx); err != nil {
		unlock()
		return nil, err
	}
	if u.st.Repo != repo {
		unlock()
		return nil, storage.ErrNotFound
	}
	return u, nil
}

func (u *upload) load(ctx context.Context) error {
	data, err := u.s.getSmall(ctx, u.s.uploadKey(u.id, "state"), maxRecord)
	if err != nil {
		return err
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("upload %s: bad state: %w", u.id, err)
	}
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(st.Hash); err != nil {
		return fmt.Errorf("upload %s: bad hash state: %w", u.id, err)
	}
	u.st, u.h = st, h
	return nil
}

func (u *upload) save(ctx context.Context) error {
	hs, err := u.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return err
	}
	u.st.Hash = hs
	data, err := json.Marshal(u.st)
	if err != nil {
		return err
	}
	return u.s.putSmall(ctx, u.s.uploadKey(u.id, "state"), data)
}

func (u *upload) chunkKey(i int) string { return u.s.uploadKey(u.id, fmt.Sprintf("chunk-%06d", i)) }

func (u *upload) ID() string  { return u.id }
func (u *upload) Size() int64 { return u.st.Size }

// readErr remembers the error of the client's body, to tell a client that
// went away from an S3 failure.
type readErr struct {
	r   io.Reader
	h   hash.Hash
	n   int64
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.h.Write(p[:n])
	r.n += int64(n)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// Append streams r into a new chunk object (a multipart upload with one
// bounded part buffer) and then records it in the session state. A chunk
// that fails is not recorded: the session keeps what it had
// acknowledged, and Append reports 0 bytes.
func (u *upload) Append(ctx context.Context, r io.Reader) (int64, error) {
	if u.closed {
		return 0, storage.ErrNotFound
	}
	rr := &readErr{r: r, h: sha256.New()}
	// Hash into a copy: the session's hash only advances when the chunk
	// is safely stored.
	hs, _ := u.h.(encoding.BinaryMarshaler).MarshalBinary()
	_ = rr.h.(encoding.BinaryUnmarshaler).UnmarshalBinary(hs)
	key := u.chunkKey(len(u.st.Chunks))
	uctx, cancel := uploading(ctx)
	_, err := u.s.c.PutObject(uctx, u.s.bucket, key, rr, -1,
		minio.PutObjectOptions{PartSize: u.s.partSize, ServerSideEncryption: u.s.sse})
	cancel(nil)
	if err != nil {
		if cause := context.Cause(uctx); errors.Is(cause, errTimedOut) {
			return 0, fmt.Errorf("store upload chunk: %w", cause)
		}
		if rr.err != nil || ctx.Err() != nil {
			return 0, fmt.Errorf("%w: %v", storage.ErrInterrupted, err)
		}
		return 0, fmt.Errorf("store upload chunk: %w", mapErr(err))
	}
	if rr.n == 0 {
		_ = u.s.remove(ctx, key)
		return 0, nil
	}
	prev := u.h
	u.h = rr.h
	u.st.Chunks = append(u.st.Chunks, rr.n)
	u.st.Size += rr.n
	if err := u.save(ctx); err != nil {
		u.h = prev
		u.st.Chunks = u.st.Chunks[:len(u.st.Chunks)-1]
		u.st.Size -= rr.n
		return 0, fmt.Errorf("save upload state: %w", err)
	}
	return rr.n, nil
}

// Commit checks the content against d and assembles the chunks into the
// blob object on the server (copy or compose when the chunks allow it,
// else one streaming pass through wharf).
func (u *upload) Commit(ctx context.Context, d digest.Digest) error {
	if u.closed {
		return storage.ErrNotFound
	}
	if err := d.Validate(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	var got digest.Digest
	if d.Algorithm() == digest.SHA256 {
		got = digest.NewDigest(digest.SHA256, u.h)
	} else {
		rd := u.reader(ctx)
		var err error
		got, err = d.Algorithm().FromReader(rd)
		rd.Close()
		if err != nil {
			return fmt.Errorf("hash upload %s: %w", u.id, err)
		}
	}
	if got != d {
		u.s.removeSession(ctx, u.id)
		u.release()
		return fmt.Errorf("%w: got %s", storage.ErrDigestMismatch, got)
	}
	key := u.s.blobKey(d)
	if err := u.s.touch(ctx, key); err == nil {
		u.s.removeSession(ctx, u.id)
		u.release()
		return nil
	}
	if err := u.assemble(ctx, key); err != nil {
		return fmt.Errorf("commit %s: %w", d, err)
	}
	u.s.removeSession(ctx, u.id)
	u.release()
	return nil
}

func (u *upload) assemble(ctx context.Context, key string) error {
	cs := u.st.Chunks
	dst := minio.CopyDestOptions{Bucket: u.s.bucket, Object: key, Encryption: u.s.sse}
	switch {
	case len(cs) == 0:
		return u.s.putSmall(ctx, key, nil)
	case len(cs) == 1:
		return u.s.copyObject(ctx, u.chunkKey(0), key, cs[0])
	case composable(cs):
		srcs := make([]minio.CopySrcOptions, len(cs))
		for i := range cs {
			srcs[i] = minio.CopySrcOptions{Bucket: u.s.bucket, Object: u.chunkKey(i)}
		}
		_, err := u.s.c.ComposeObject(ctx, dst, srcs...)
		return mapErr(err)
	}
	uctx, cancel := uploading(ctx)
	defer cancel(nil)
	rd := u.reader(uctx)
	defer rd.Close()
	_, err := u.s.c.PutObject(uctx, u.s.bucket, key, rd, u.st.Size,
		minio.PutObjectOptions{PartSize: u.s.partSize, ServerSideEncryption: u.s.sse})
	if cause := context.Cause(uctx); err != nil && errors.Is(cause, errTimedOut) {
		return cause
	}
	return mapErr(err)
}

// composable: S3 composes parts of at least 5 MiB (but the last), at most
// 10000 of them.
func composable(cs []int64) bool {
	if len(cs) > 10000 {
		return false
	}
	for _, n := range cs[:len(cs)-1] {
		if n < minPart {
			return false
		}
	}
	return true
}

// reader streams the session's chunks in order.
func (u *upload) reader(ctx context.Context) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		for i := range u.st.Chunks {
			o, err := u.s.c.GetObject(ctx, u.s.bucket, u.chunkKey(i), minio.GetObjectOptions{})
			if err != nil {
				pw.CloseWithError(mapErr(err))
				return
			}
			n, err := io.Copy(pw, o)
			o.Close()
			if err == nil && n != u.st.Chunks[i] {
				err = fmt.Errorf("chunk %d of upload %s has %d bytes, want %d", i, u.id, n, u.st.Chunks[i])
			}
			if err != nil {
				pw.CloseWithError(mapErr(err))
				return
			}
		}
		pw.Close()
	}()
	return pr
}

// Cancel discards the session.
func (u *upload) Cancel(ctx context.Context) error {
	if u.closed {
		return storage.ErrNotFound
	}
	u.s.removeSession(ctx, u.id)
	u.release()
	return nil
}

// Close releases the session for other requests of this process.
func (u *upload) Close() error {
	u.release()
	return nil
}

func (u *upload) release() {
	if !u.closed {
		u.closed = true
		u.unlock()
	}
}
