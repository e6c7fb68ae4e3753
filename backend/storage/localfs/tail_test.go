package localfs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/storage"
)

// TestOpenTail: a tail opened on an upload sees what each Append wrote,
// reads to the end after the commit renamed the data, and a tail asked
// for after the commit is ErrNotFound.
func TestOpenTail(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, t.TempDir())
	u, err := s.NewUpload(ctx, "team/app")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	tu, ok := u.(storage.TailUpload)
	if !ok {
		t.Fatal("localfs uploads have no tail")
	}
	tail, err := tu.OpenTail(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tail.Close()
	data := bytes.Repeat([]byte("wharf"), 100<<10)
	half := len(data) / 2
	for i, part := range [][]byte{data[:half], data[half:]} {
		if _, err := u.Append(ctx, bytes.NewReader(part)); err != nil {
			t.Fatal(err)
		}
		want := int64(half)
		if i == 1 {
			want = int64(len(data))
		}
		if n, err := tail.Written(); err != nil || n != want {
			t.Fatalf("after append %d: Written %d, %v; want %d", i, n, err, want)
		}
	}
	head := make([]byte, half)
	if _, err := io.ReadFull(tail, head); err != nil || !bytes.Equal(head, data[:half]) {
		t.Fatalf("reading the first half: %v", err)
	}
	if err := u.Commit(ctx, digest.FromBytes(data)); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(tail)
	if err != nil || !bytes.Equal(rest, data[half:]) {
		t.Fatalf("reading the rest after the commit: %d bytes, %v", len(rest), err)
	}
	if _, err := tu.OpenTail(ctx); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("OpenTail after the commit: %v, want ErrNotFound", err)
	}
}
