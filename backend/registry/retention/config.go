package retention

import (
	"strings"

	"github.com/wharf-dev/wharf/internal/conf"
	"github.com/wharf-dev/wharf/internal/glob"
)

// Rule is one [[retention]] table of gateway.toml. The first rule whose
// Hosts and Repos match a repository decides what happens to it; a
// repository no rule matches keeps everything.
type Rule struct {
	// Hosts are the registry sites the rule applies to (globs over host
	// names); empty means every registry site.
	Hosts []string `toml:"hosts"`
	// Repos are globs over repository names; empty means every repository.
	Repos []string `toml:"repos"`
	// KeepLast keeps the newest N tags by push time.
	KeepLast int `toml:"keep_last"`
	// KeepWithin keeps every tag pushed within this long.
	KeepWithin conf.Duration `toml:"keep_within"`
	// KeepTags keeps tags matching these globs, always.
	KeepTags []string `toml:"keep_tags"`
	// UntaggedAfter removes manifests that no kept tag reaches (directly,
	// through an index, or as a referrer of a kept manifest) once they
	// were last pushed longer ago than this. Unset (nil): retention
	// removes tags only; `wharf gc -delete-untagged` can remove the rest.
	UntaggedAfter *conf.Duration `toml:"untagged_after"`
	// AllowEmpty lets the rule remove every tag of a repository. Without
	// it a repository whose tags would all go is left untouched and the
	// run reports it as refused.
	AllowEmpty bool `toml:"allow_empty"`
}

// Validate checks one rule. A rule that can keep no tag at all is refused
// unless it says allow_empty = true.
func (r *Rule) Validate() conf.Problems {
	var ps conf.Problems
	add := ps.Add
	if r.KeepLast < 0 {
		add("keep_last", "keep_last must not be negative (got %d)", r.KeepLast)
	}
	for _, h := range r.Hosts {
		if h == "" || strings.TrimSpace(h) != h {
			add("hosts", "invalid host glob %q", h)
		}
	}
	for _, g := range r.Repos {
		if msg := badGlob(g, true); msg != "" {
			add("repos", "repository glob %q: %s", g, msg)
		}
	}
	for _, g := range r.KeepTags {
		if msg := badGlob(g, false); msg != "" {
			add("keep_tags", "tag glob %q: %s", g, msg)
		}
	}
	if r.KeepLast == 0 && r.KeepWithin == 0 && len(r.KeepTags) == 0 && !r.AllowEmpty {
		add("keep_last", "this rule keeps no tag at all (no keep_last, keep_within or keep_tags) and would empty every repository it matches; set allow_empty = true if that is what you want")
	}
	return ps
}

// Describe is how reports name a rule: its repos (or hosts) globs.
func (r *Rule) Describe() string {
	var parts []string
	if len(r.Hosts) > 0 {
		parts = append(parts, "hosts "+strings.Join(r.Hosts, ","))
	}
	if len(r.Repos) > 0 {
		parts = append(parts, "repos "+strings.Join(r.Repos, ","))
	}
	if len(parts) == 0 {
		return "every repository"
	}
	return strings.Join(parts, " ")
}

// Matches reports whether the rule applies to repository repo of the site
// host.
func (r *Rule) Matches(host, repo string) bool {
	if len(r.Hosts) > 0 && !anyGlob(r.Hosts, strings.ToLower(host)) {
		return false
	}
	return len(r.Repos) == 0 || anyGlob(r.Repos, repo)
}

// ForHost returns the rules (with their 1-based numbers in the config)
// that can apply on site host.
func ForHost(rules []Rule, host string) []Numbered {
	var out []Numbered
	for i := range rules {
		r := rules[i]
		if len(r.Hosts) == 0 || anyGlob(r.Hosts, strings.ToLower(host)) {
			out = append(out, Numbered{N: i + 1, Rule: r})
		}
	}
	return out
}

// Numbered is a rule with its position in the config (1-based), so that
// reports say "rule 2" about the second [[retention]] table.
type Numbered struct {
	N int
	Rule
}

func anyGlob(globs []string, s string) bool {
	for _, g := range globs {
		if glob.Match(strings.ToLower(g), s) {
			return true
		}
	}
	return false
}

func badGlob(g string, repo bool) string {
	if g == "" {
		return "empty"
	}
	if strings.ContainsAny(g, " \t\r\n") {
		return "contains white space"
	}
	if repo && strings.HasPrefix(g, "/") {
		return "repository names do not start with '/'"
	}
	return ""
}
