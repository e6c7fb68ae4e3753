package backend

import (
	"net/http"
	"strings"

	_ "crypto/sha256" // register sha256 with go-digest
	_ "crypto/sha512" // register sha512 with go-digest
	digest "github.com/opencontainers/go-digest"
)

// MaxNameLength is the longest repository name accepted, as in registry:2.
const MaxNameLength = 255

// ValidateName checks a repository name against the distribution spec:
// path components of lower-case alphanumerics joined by '.', '_', '__' or
// runs of '-', separated by '/', at most 255 characters in all.
func ValidateName(name string) *Error {
	if name == "" {
		return Errorf(http.StatusBadRequest, CodeNameInvalid, "empty repository name")
	}
	if len(name) > MaxNameLength {
		return Errorf(http.StatusBadRequest, CodeNameInvalid, "repository name longer than %d characters", MaxNameLength)
	}
	for _, comp := range strings.Split(name, "/") {
		if !validComponent(comp) {
			return Errorf(http.StatusBadRequest, CodeNameInvalid, "invalid repository name %q: components are lower-case letters and digits, joined by '.', '_', '__' or '-'", clip(name))
		}
	}
	return nil
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// validComponent matches [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*.
func validComponent(s string) bool {
	i := 0
	for {
		// one run of alphanumerics
		start := i
		for i < len(s) && isAlnum(s[i]) {
			i++
		}
		if i == start {
			return false
		}
		if i == len(s) {
			return true
		}
		// one separator
		switch s[i] {
		case '.':
			i++
		case '_':
			i++
			if i < len(s) && s[i] == '_' {
				i++
			}
		case '-':
			for i < len(s) && s[i] == '-' {
				i++
			}
		default:
			return false
		}
	}
}

// ValidTag reports whether s is a tag: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
func ValidTag(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
		if i > 0 {
			ok = ok || c == '.' || c == '-'
		}
		if !ok {
			return false
		}
	}
	return true
}

// IsDigestShaped reports whether a manifest reference is meant as a digest
// (it has an algorithm separator) rather than a tag.
func IsDigestShaped(ref string) bool { return strings.IndexByte(ref, ':') > 0 }

// ParseDigest parses and validates a digest; only sha256 and sha512 are
// accepted. Errors are 400 DIGEST_INVALID.
func ParseDigest(s string) (digest.Digest, *Error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", Errorf(http.StatusBadRequest, CodeDigestInvalid, "invalid digest %q: %v", clip(s), err)
	}
	if a := d.Algorithm(); a != digest.SHA256 && a != digest.SHA512 {
		return "", Errorf(http.StatusBadRequest, CodeDigestInvalid, "unsupported digest algorithm %q: use sha256 or sha512", a)
	}
	return d, nil
}
