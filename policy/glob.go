package policy

import (
	"fmt"
	"strings"

	"github.com/wharf-dev/wharf/internal/glob"
)

// Globs over repository and host names: '*' matches any run of characters,
// '/' included (so "team-a/*" covers "team-a/app" and "team-a/x/app"; "**"
// means the same), '?' matches one character. Every other character
// matches itself. There are no character classes.

// globMatch reports whether name matches pattern (internal/glob, shared
// with the retention and webhook rules so every list in gateway.toml
// matches alike).
func globMatch(pattern, name string) bool { return glob.Match(pattern, name) }

// neverMatches explains why no valid repository name (lower-case letters,
// digits, '.', '_', '-', '/' between components) can match glob g, or
// returns "" when some name can.
func neverMatches(g string) string {
	if g == "" {
		return "empty glob"
	}
	for i := 0; i < len(g); i++ {
		c := g[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '_', c == '-', c == '/', c == '*', c == '?':
		case c >= 'A' && c <= 'Z':
			return fmt.Sprintf("repository names are lower case (%q)", strings.ToLower(g))
		default:
			return fmt.Sprintf("character %q never appears in a repository name", c)
		}
	}
	lit := func(i int) bool { return i >= 0 && i < len(g) && g[i] != '*' && g[i] != '?' }
	if g[0] == '/' {
		return "repository names do not start with '/'"
	}
	if g[len(g)-1] == '/' {
		return "repository names do not end with '/' (write \"" + g + "*\" for everything below)"
	}
	if strings.Contains(g, "//") {
		return "repository names have no empty path components"
	}
	for i := 0; i+1 < len(g); i++ {
		// a separator right next to '/' makes an empty-ish component: "a/.b", "a-/b"
		if g[i] == '/' && lit(i+1) && isSep(g[i+1]) || isSep(g[i]) && lit(i) && g[i+1] == '/' {
			return "path components start and end with a letter or digit"
		}
	}
	if lit(0) && isSep(g[0]) || lit(len(g)-1) && isSep(g[len(g)-1]) {
		return "repository names start and end with a letter or digit"
	}
	if len(g) > 255 && !strings.ContainsRune(g, '*') {
		return "repository names are at most 255 characters"
	}
	return ""
}

func isSep(c byte) bool { return c == '.' || c == '_' || c == '-' }
