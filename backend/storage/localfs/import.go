package localfs

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/storage"
)

// ImportBlob makes the file src the blob d: it hard-links src under tmp/
// when link is true and both are on one file system (no copy), and copies
// it there otherwise; then it hashes what is under tmp/ (one streaming
// pass, buf as the read buffer) and renames it into blobs/ only if it
// hashes to d. On a mismatch nothing becomes visible and the error wraps
// storage.ErrDigestMismatch. A process killed at any point leaves at most
// a file in tmp/, which the next start of a Store removes.
//
// A linked blob shares its inode with src: its modification time is set
// to now (for garbage collection's grace period, see TouchBlob), which src
// sees too. With trust, a linked blob is not hashed (a copy always is:
// it is read anyway). Used by `wharf import` (package importer).
func (s *Store) ImportBlob(ctx context.Context, d digest.Digest, src string, link, trust bool, buf []byte) (linked bool, size int64, err error) {
	if err := d.Validate(); err != nil {
		return false, 0, fmt.Errorf("import blob: %w", err)
	}
	tmpDir := filepath.Join(s.root, dirTmp)
	tmp := filepath.Join(tmpDir, "import-"+storage.NewID())
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	var h digest.Digester
	if link {
		if lerr := os.Link(src, tmp); lerr == nil {
			linked = true
			now := time.Now()
			if err := os.Chtimes(tmp, now, now); err != nil {
				return false, 0, fmt.Errorf("import blob %s: %w", d, err)
			}
		}
	}
	if linked && trust {
		fi, err := os.Stat(tmp)
		if err != nil {
			return false, 0, mapErr(err)
		}
		size = fi.Size()
	} else if linked {
		f, err := os.Open(tmp)
		if err != nil {
			return false, 0, mapErr(err)
		}
		h = d.Algorithm().Digester()
		size, err = copyCtx(ctx, h.Hash(), f, buf)
		f.Close()
		if err != nil {
			return false, 0, fmt.Errorf("read %s: %w", src, err)
		}
	} else {
		in, err := os.Open(src)
		if err != nil {
			return false, 0, err
		}
		defer in.Close()
		out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return false, 0, mapErr(err)
		}
		h = d.Algorithm().Digester()
		size, err = copyCtx(ctx, io.MultiWriter(out, h.Hash()), in, buf)
		if err == nil && s.syncBlobs {
			err = out.Sync()
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return false, 0, mapErr(fmt.Errorf("copy %s: %w", src, err))
		}
	}
	if h != nil {
		if got := h.Digest(); got != d {
			return false, size, fmt.Errorf("%s hashes to %s: %w", src, got, storage.ErrDigestMismatch)
		}
	}
	p := s.blobPath(d)
	if err := s.mkdirAll(filepath.Dir(p)); err != nil {
		return false, size, err
	}
	if err := os.Rename(tmp, p); err != nil {
		return false, size, mapErr(fmt.Errorf("rename into %s: %w", p, err))
	}
	syncDir(filepath.Dir(p))
	return linked, size, nil
}

// copyCtx copies src to dst through buf, stopping when ctx ends.
func copyCtx(ctx context.Context, dst io.Writer, src io.Reader, buf []byte) (int64, error) {
	if len(buf) == 0 {
		buf = make([]byte, 1<<20)
	}
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		r, rerr := src.Read(buf)
		if r > 0 {
			w, werr := dst.Write(buf[:r])
			n += int64(w)
			if werr != nil {
				return n, werr
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}
