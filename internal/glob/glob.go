// Package glob matches the globs of gateway.toml's rule lists (retention
// repos and keep_tags, webhook repos and hosts) with the semantics of
// [[policy]] repos: '*' matches any run of characters, '/' included (so
// "ci/*" covers "ci/app" and "ci/x/app"; "**" means the same), '?' one
// character, every other character itself. No character classes.
package glob

// Match reports whether s matches pattern. Iterative, without recursion:
// O(len(pattern)*len(s)) at worst.
func Match(pattern, s string) bool {
	p, n := 0, 0
	starP, starN := -1, 0
	for n < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			for p < len(pattern) && pattern[p] == '*' {
				p++
			}
			starP, starN = p, n
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[n]):
			p++
			n++
		case starP >= 0:
			starN++
			p, n = starP, starN
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
