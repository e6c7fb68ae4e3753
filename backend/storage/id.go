package storage

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
)

// NewID returns a random 128-bit id as 32 lower-case hex digits: upload
// session ids and temporary names, the same form in every store so an id
// one store handed out is valid for the others.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// ValidID reports whether id has NewID's form; stores check it before an id
// from a URL becomes part of a path or key.
func ValidID(id string) bool {
	if len(id) != 32 || strings.ToLower(id) != id {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}
