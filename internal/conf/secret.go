package conf

import (
	"fmt"
	"os"
	"regexp"
	"strings"
)

// Secret is a config value that is a secret (a password, a key). It is
// written either literally, or as "${NAME}" references to environment
// variables, expanded while the file is decoded (an unset variable is an
// error), so that a config can live in git and the secret elsewhere. The
// other way is a "<key>_file" key next to it, read by ReadSecretFile.
// A Secret never prints its value.
type Secret string

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// UnmarshalText expands ${NAME} references.
func (s *Secret) UnmarshalText(b []byte) error {
	v, err := ExpandEnv(string(b))
	if err != nil {
		return err
	}
	*s = Secret(v)
	return nil
}

// ExpandEnv replaces every ${NAME} in v by the environment variable NAME;
// an unset variable is an error naming it. "$$" is not special; a "${"
// that is not a well-formed reference is an error too.
func ExpandEnv(v string) (string, error) {
	var missing []string
	out := envRef.ReplaceAllStringFunc(v, func(ref string) string {
		name := ref[2 : len(ref)-1]
		val, ok := os.LookupEnv(name)
		if !ok {
			missing = append(missing, name)
		}
		return val
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("environment variable %s is not set", strings.Join(missing, ", "))
	}
	if strings.Contains(envRef.ReplaceAllString(v, ""), "${") {
		return "", fmt.Errorf("malformed ${...} reference in %q: want ${NAME}", redact(v))
	}
	return out, nil
}

// String hides the value (fmt, logs).
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString hides the value (%#v).
func (s Secret) GoString() string { return s.String() }

// Reveal returns the value, for the one place that uses it.
func (s Secret) Reveal() string { return string(s) }

// ReadSecretFile reads a "<key>_file" secret: the whole file, without
// its trailing newline; an empty file is an error.
func ReadSecretFile(env Env, file string) (string, error) {
	b, err := os.ReadFile(env.Path(file))
	if err != nil {
		return "", fmt.Errorf("cannot read secret file: %v", err)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", fmt.Errorf("secret file %s is empty", env.Path(file))
	}
	return v, nil
}

// redact keeps only the ${...} references of a value for messages.
func redact(v string) string {
	if i := strings.Index(v, "${"); i >= 0 {
		return "..." + v[i:]
	}
	return "..."
}
