package backend

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"

	digest "github.com/opencontainers/go-digest"
)

// ServeBlob answers GET or HEAD of a stored, immutable blob of the given
// size: the blob headers, a single Range (206, or 416 with the size), and
// the body. Where src is backed by an *os.File (storage.FileBlob) the file
// itself goes to net/http, so plain HTTP uses sendfile. A bad range comes
// back as an *Error before anything is written; an error while copying
// the body (a client gone) comes back as copyErr, for the log only.
func ServeBlob(w http.ResponseWriter, req *http.Request, d digest.Digest, src io.ReadSeeker, size int64) (apiErr *Error, copyErr error) {
	h := w.Header()
	BlobIdentity(h, d)
	h.Set("Cache-Control", "max-age=31536000")
	start, end, status, re := BlobRange(h, req.Header.Get("Range"), size)
	if re != nil {
		return re, nil
	}
	length := end - start
	w.WriteHeader(status)
	if req.Method == http.MethodHead || length == 0 {
		return nil, nil
	}
	if f, ok := src.(interface{ OSFile() *os.File }); ok {
		src = f.OSFile()
	}
	if start > 0 {
		if _, err := src.Seek(start, io.SeekStart); err != nil {
			return nil, fmt.Errorf("seek blob: %w", err)
		}
	}
	if end == size {
		// To the end (the whole blob, or a resumed download): src itself
		// goes to io.Copy, so that an *os.File reaches sendfile through
		// writers that add an io.LimitedReader, and a source with its
		// own WriteTo (S3: splice) is used.
		_, err := io.Copy(w, src)
		return nil, err
	}
	_, err := io.CopyN(w, src, length)
	return nil, err
}

// BlobIdentity sets the headers every answer with a blob's bytes carries:
// type, digest, ranges accepted, ETag.
func BlobIdentity(h http.Header, d digest.Digest) {
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Docker-Content-Digest", string(d))
	h.Set("Accept-Ranges", "bytes")
	h.Set("ETag", `"`+string(d)+`"`)
}

// BlobRange applies the request's Range header to a blob of size bytes:
// it sets Content-Length (and Content-Range for a single satisfiable
// range) and returns the bytes to send, [start, end), with 200 or 206. A
// range that cannot be satisfied comes back as an *Error (416) with
// Content-Range: bytes */size and no digest header.
func BlobRange(h http.Header, rangeHeader string, size int64) (start, end int64, status int, e *Error) {
	s, length, ranged, re := ParseRange(rangeHeader, size)
	if re != nil {
		h.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		h.Del("Docker-Content-Digest")
		return 0, 0, 0, re
	}
	if !ranged {
		h.Set("Content-Length", strconv.FormatInt(size, 10))
		return 0, size, http.StatusOK, nil
	}
	h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", s, s+length-1, size))
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	return s, s + length, http.StatusPartialContent, nil
}
