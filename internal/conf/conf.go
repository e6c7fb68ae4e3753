// Package conf holds the small vocabulary every configuration section of
// wharf shares: the Duration type written as "168h", the Problems a
// section's Validate returns (key relative to the section, message), and
// the enum helper that makes an unknown value fail while the TOML is
// decoded, naming the allowed values.
//
// Each part owns its section (struct with toml tags, SetDefaults,
// Validate); the gateway composes the sections and turns each Problem
// into "file:line: message" by the key's position in the file.
package conf

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Duration is a Go duration written as a TOML string ("168h"). Negative
// values are refused while decoding.
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (use Go durations such as \"90s\", \"15m\", \"168h\")", b)
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration back as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Std returns the duration as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Problem is one thing wrong in a section. Key is the key it is about,
// relative to the section ("upstream", "tls"); "" means the section itself.
type Problem struct {
	Key string
	Msg string
}

// Problems is everything a Validate found, in order; nil means valid.
type Problems []Problem

// Add appends a problem about key.
func (ps *Problems) Add(key, format string, args ...any) {
	*ps = append(*ps, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// Merge appends another section's problems with their keys below prefix
// ("cache" + "upstream" = "cache.upstream").
func (ps *Problems) Merge(prefix string, more Problems) {
	for _, p := range more {
		k := prefix
		switch {
		case prefix == "":
			k = p.Key
		case p.Key != "":
			k = prefix + "." + p.Key
		}
		*ps = append(*ps, Problem{Key: k, Msg: p.Msg})
	}
}

// Error joins the messages (for callers without a file to point into).
func (ps Problems) Error() string {
	s := make([]string, len(ps))
	for i, p := range ps {
		if p.Key != "" {
			s[i] = p.Key + ": " + p.Msg
		} else {
			s[i] = p.Msg
		}
	}
	return strings.Join(s, "\n")
}

// Err returns ps as an error, or nil when there is no problem.
func (ps Problems) Err() error {
	if len(ps) == 0 {
		return nil
	}
	return ps
}

// ParseEnum is the UnmarshalText of a string enum: b must be one of
// allowed, or the error names them all ("invalid backend "x": want
// registry, cache or proxy").
func ParseEnum[T ~string](what string, b []byte, allowed ...T) (T, error) {
	v := T(b)
	if slices.Contains(allowed, v) {
		return v, nil
	}
	return "", fmt.Errorf("invalid %s %q: want %s", what, b, OneOf(allowed...))
}

// OneOf lists values for a message: "a, b or c".
func OneOf[T ~string](vs ...T) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = fmt.Sprintf("%q", string(v))
	}
	if len(q) < 2 {
		return strings.Join(q, "")
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

// Env is what a Validate needs to know about where the config lives:
// paths in a config are relative to its file's folder (Dir) unless
// absolute; storage roots are relative to data_dir (DataDir, itself
// resolved against Dir).
type Env struct {
	Dir     string // folder of the config file; "" = the working directory
	DataDir string // data_dir as written
}

// Path resolves a path written in the config file.
func (e Env) Path(p string) string {
	if p == "" || filepath.IsAbs(p) || e.Dir == "" {
		return p
	}
	return filepath.Join(e.Dir, p)
}

// DataPath resolves a path below data_dir (storage roots, keys, certs).
func (e Env) DataPath(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(e.Path(e.DataDir), p)
}
