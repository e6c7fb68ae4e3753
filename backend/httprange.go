package backend

import (
	"net/http"
	"strconv"
	"strings"
)

// ParseRange parses a single-range "Range: bytes=..." request header for
// content of the given size and returns the first byte and the length.
// ok is false when the header should be ignored (absent, not bytes, or
// several ranges: the full content is then served). An unsatisfiable range
// is a 416 RANGE_INVALID error.
func ParseRange(h string, size int64) (start, length int64, ok bool, e *Error) {
	const unit = "bytes="
	if h == "" || !strings.HasPrefix(h, unit) || strings.Contains(h, ",") {
		return 0, 0, false, nil
	}
	spec := strings.TrimSpace(h[len(unit):])
	bad := Errorf(http.StatusRequestedRangeNotSatisfiable, CodeRangeInvalid, "range %q not satisfiable for %d bytes", clip(h), size)
	i := strings.IndexByte(spec, '-')
	if i < 0 {
		return 0, 0, false, bad
	}
	a, b := strings.TrimSpace(spec[:i]), strings.TrimSpace(spec[i+1:])
	if a == "" { // suffix: last b bytes
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 || size == 0 {
			return 0, 0, false, bad
		}
		if n > size {
			n = size
		}
		return size - n, n, true, nil
	}
	s, err := strconv.ParseInt(a, 10, 64)
	if err != nil || s < 0 || s >= size {
		return 0, 0, false, bad
	}
	end := size - 1
	if b != "" {
		e, err := strconv.ParseInt(b, 10, 64)
		if err != nil || e < s {
			return 0, 0, false, bad
		}
		if e < end {
			end = e
		}
	}
	return s, end - s + 1, true, nil
}

// ParseContentRange parses the Content-Range of a chunked upload PATCH:
// "<start>-<end>" (inclusive), also accepting the RFC 9110 form
// "bytes <start>-<end>/<total>". ok is false when h is empty.
func ParseContentRange(h string) (start, end int64, ok bool, e *Error) {
	if h == "" {
		return 0, 0, false, nil
	}
	s := strings.TrimSpace(h)
	s = strings.TrimPrefix(s, "bytes ")
	s = strings.TrimPrefix(s, "bytes=")
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	bad := Errorf(http.StatusRequestedRangeNotSatisfiable, CodeBlobUploadInvalid, "invalid Content-Range %q", clip(h))
	i := strings.IndexByte(s, '-')
	if i <= 0 {
		return 0, 0, false, bad
	}
	a, err1 := strconv.ParseInt(s[:i], 10, 64)
	b, err2 := strconv.ParseInt(s[i+1:], 10, 64)
	if err1 != nil || err2 != nil || a < 0 || b < a {
		return 0, 0, false, bad
	}
	return a, b, true, nil
}
