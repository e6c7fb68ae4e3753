package s3store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"testing"

	"github.com/minio/minio-go/v7"
	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/e2e/harness"
)

func idleConns(s *Store) int {
	s.direct.mu.Lock()
	defer s.direct.mu.Unlock()
	return len(s.direct.idle)
}

// TestDirectRead: on a plain-HTTP endpoint (versitygw with keep-alive)
// blobs are read on the direct path, whole (Read, WriteTo into writers with and without ReadFrom) and
// from an offset; connections are reused, a pooled connection the server
// closed is replaced, an absent blob is ErrNotFound through minio-go, and
// a cancelled context ends a read.
func TestDirectRead(t *testing.T) {
	gw := harness.StartVersityGWKeepAlive(t, bucket)
	ctx := context.Background()
	s := newStore(t, gw, "", nil)
	if s.direct == nil {
		t.Fatal("no direct path for a plain-HTTP endpoint")
	}
	data := randomBytes(t, 3<<20+17)
	d := digest.FromBytes(data)
	if err := s.PutBlob(ctx, d, data); err != nil {
		t.Fatal(err)
	}
	open := func(ctx context.Context) *blob {
		t.Helper()
		sb, err := s.OpenBlob(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		b := sb.(*blob)
		if b.db == nil {
			t.Fatal("blob not opened on the direct path")
		}
		if b.Size() != int64(len(data)) {
			t.Fatalf("size %d, want %d", b.Size(), len(data))
		}
		return b
	}
	for _, tc := range []struct {
		name string
		read func(b *blob) ([]byte, error)
	}{
		{"Read", func(b *blob) ([]byte, error) { return io.ReadAll(struct{ io.Reader }{b}) }},
		{"WriteTo ReaderFrom", func(b *blob) ([]byte, error) {
			var buf bytes.Buffer // has ReadFrom
			_, err := b.WriteTo(&buf)
			return buf.Bytes(), err
		}},
		{"WriteTo plain writer", func(b *blob) ([]byte, error) {
			var buf bytes.Buffer
			_, err := b.WriteTo(struct{ io.Writer }{&buf})
			return buf.Bytes(), err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := open(ctx)
			got, err := tc.read(b)
			b.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%d bytes, %v", len(got), err)
			}
			if n := idleConns(s); n != 1 {
				t.Fatalf("%d idle connections after a complete read, want 1 (reused)", n)
			}
		})
	}

	t.Run("offset", func(t *testing.T) {
		b := open(ctx)
		defer b.Close()
		if _, err := b.Seek(2<<20, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := b.WriteTo(&buf); err != nil || !bytes.Equal(buf.Bytes(), data[2<<20:]) {
			t.Fatalf("from 2 MiB: %d bytes, %v", buf.Len(), err)
		}
	})

	t.Run("stale pooled connection", func(t *testing.T) {
		if idleConns(s) == 0 {
			t.Fatal("nothing pooled")
		}
		s.direct.mu.Lock()
		for _, dc := range s.direct.idle {
			dc.c.Close() // as if the server had timed it out
		}
		s.direct.mu.Unlock()
		b := open(ctx)
		got, err := io.ReadAll(struct{ io.Reader }{b})
		b.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes, %v", len(got), err)
		}
	})

	t.Run("partial read not pooled", func(t *testing.T) {
		before := idleConns(s)
		b := open(ctx)
		if _, err := io.ReadFull(b, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		b.Close()
		if n := idleConns(s); n != before-1 {
			t.Fatalf("idle connections %d -> %d", before, n)
		}
		s.direct.mu.Lock()
		for _, dc := range s.direct.idle {
			if dc.br.Buffered() != 0 {
				t.Error("a pooled connection holds unread bytes")
			}
		}
		s.direct.mu.Unlock()
	})

	t.Run("absent", func(t *testing.T) {
		if _, err := s.OpenBlob(ctx, digest.FromString("absent")); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("open of an absent blob: %v", err)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		b := open(cctx)
		defer b.Close()
		if _, err := io.ReadFull(b, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		cancel()
		got, err := io.ReadAll(struct{ io.Reader }{b})
		if err == nil {
			t.Fatalf("read on after cancel: %d bytes, no error", len(got))
		}
		if !bytes.Equal(got, data[1:1+len(got)]) {
			t.Fatal("wrong bytes")
		}
	})
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		h            string
		first, total int64
		ok           bool
	}{
		{"bytes 0-9/10", 0, 10, true},
		{"bytes 5-9/10", 5, 10, true},
		{"bytes 5-9/*", 0, 0, false},
		{"bytes */10", 0, 0, false},
		{"5-9/10", 0, 0, false},
		{"bytes 10-9/10", 0, 0, false},
		{"", 0, 0, false},
	} {
		first, total, ok := parseContentRange(tc.h)
		if ok != tc.ok || ok && (first != tc.first || total != tc.total) {
			t.Errorf("%q: %d %d %v", tc.h, first, total, ok)
		}
	}
}

func TestMapErr(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want error // nil: neither sentinel
	}{
		{"no such key", minio.ErrorResponse{Code: "NoSuchKey", StatusCode: 404}, storage.ErrNotFound},
		{"slow down", minio.ErrorResponse{Code: "SlowDown", StatusCode: 503}, storage.ErrUnavailable},
		{"503 without code", minio.ErrorResponse{StatusCode: 503}, storage.ErrUnavailable},
		{"unreachable", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, storage.ErrUnavailable},
		{"cancelled", &url.Error{Op: "Get", URL: "http://s3/x", Err: context.Canceled}, nil},
		{"access denied", minio.ErrorResponse{Code: "AccessDenied", StatusCode: 403}, nil},
	} {
		got := mapErr(tc.err)
		for _, sentinel := range []error{storage.ErrNotFound, storage.ErrUnavailable} {
			if errors.Is(got, sentinel) != (sentinel == tc.want) {
				t.Errorf("%s: %v; errors.Is(%v) = %v", tc.name, got, sentinel, errors.Is(got, sentinel))
			}
		}
	}
}
