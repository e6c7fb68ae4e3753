package gateway

import (
	"fmt"
	"sort"
	"strings"

	"github.com/wharf-dev/wharf/acme"
	"github.com/wharf-dev/wharf/policy"
)

// Path resolves a path from the config: absolute as is, relative to the
// config file's folder otherwise.
func (c *Config) Path(p string) string { return c.Env().Path(p) }

// DataPath resolves a path below data_dir (registry roots, caches, certs).
func (c *Config) DataPath(p string) string { return c.Env().DataPath(p) }

// lineOf finds the line of a key path; array-of-table indexes may be given
// ("site", "1", "host") or left out ("site", "host": the first such key).
func (c *Config) lineOf(key ...string) int {
	if c.lines == nil {
		return 0
	}
	var b strings.Builder
	for i, k := range key {
		if i > 0 && isDigits(k) {
			b.WriteString("[" + k + "]")
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(k)
	}
	full := b.String()
	// "site[1].cache.ttl" given as site.1.cache.ttl is normalised above.
	for p := full; p != ""; {
		if l, ok := c.lines[p]; ok {
			return l
		}
		if l, ok := c.lines[stripIndexes(p)]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 1
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func (c *Config) policyLines() {
	for i := range c.Policies {
		c.Policies[i].Line = c.lineOf(fmt.Sprintf("policy[%d]", i))
	}
}

// Line returns the line of a key path such as "site[0].host" (for other
// packages' validation messages).
func (c *Config) Line(key string) int { return c.lineOf(key) }

func stripIndexes(p string) string {
	var b strings.Builder
	skip := false
	for i := 0; i < len(p); i++ {
		switch {
		case p[i] == '[':
			skip = true
		case p[i] == ']':
			skip = false
		case !skip:
			b.WriteByte(p[i])
		}
	}
	return b.String()
}

// keyLines scans TOML text for table headers and keys and records the line
// of each key path ("listen.http", "site[1]", "site[1].cache.ttl"). It is a
// light scanner, good enough for pointing at lines in messages.
func keyLines(data []byte) map[string]int {
	lines := map[string]int{}
	counts := map[string]int{}
	table := ""
	for n, raw := range strings.Split(string(data), "\n") {
		ln := n + 1
		s := strings.TrimSpace(raw)
		if s == "" || s[0] == '#' {
			continue
		}
		if strings.HasPrefix(s, "[[") {
			end := strings.Index(s, "]]")
			if end < 0 {
				continue
			}
			name := strings.TrimSpace(s[2:end])
			idx := counts[name]
			counts[name]++
			table = fmt.Sprintf("%s[%d]", name, idx)
			lines[table] = ln
			if _, ok := lines[name]; !ok {
				lines[name] = ln
			}
			continue
		}
		if s[0] == '[' {
			end := strings.IndexByte(s, ']')
			if end < 0 {
				continue
			}
			name := strings.TrimSpace(s[1:end])
			// [site.cache] belongs to the latest [[site]].
			table = name
			if dot := strings.IndexByte(name, '.'); dot > 0 {
				if c, ok := counts[name[:dot]]; ok && c > 0 {
					table = fmt.Sprintf("%s[%d]%s", name[:dot], c-1, name[dot:])
				}
			}
			lines[table] = ln
			continue
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			continue
		}
		k := strings.Trim(strings.TrimSpace(s[:eq]), `"'`)
		if strings.ContainsAny(k, " \t\",[]") {
			continue
		}
		full := k
		if table != "" {
			full = table + "." + k
		}
		if _, ok := lines[full]; !ok {
			lines[full] = ln
		}
		if plain := stripIndexes(full); plain != full {
			if _, ok := lines[plain]; !ok {
				lines[plain] = ln
			}
		}
	}
	return lines
}

// BuildPolicy turns [[policy]] and [groups] into a policy.Policy.
func (c *Config) BuildPolicy() (*policy.Policy, error) {
	rules := make([]policy.Rule, len(c.Policies))
	for i, p := range c.Policies {
		rules[i] = policy.Rule{Hosts: p.Hosts, Repos: p.Repos, Users: p.Users, Allow: p.Allow, Line: p.Line}
	}
	return policy.New(rules, c.Groups)
}

// SortedHosts lists the configured site hosts, for logs.
func (c *Config) SortedHosts() []string {
	hs := make([]string, 0, len(c.Sites))
	for _, s := range c.Sites {
		hs = append(hs, s.Host)
	}
	sort.Strings(hs)
	return hs
}

func (c *Config) hasACMESite() bool {
	for _, s := range c.Sites {
		if s.TLS == acme.ModeACME {
			return true
		}
	}
	return false
}

// acmeConfig is the acme package's view of the config; httpAddr and
// httpsAddr are the addresses actually bound (ports chosen by the kernel
// for ":0" are known there).
func (c *Config) acmeConfig(httpAddr, httpsAddr string) acme.Config {
	ac := acme.Config{
		DataDir:          c.sharedDir(),
		CA:               c.ACME.CA,
		Email:            c.ACME.Email,
		CARoot:           c.Path(c.ACME.CARoot),
		HTTPAddr:         httpAddr,
		HTTPSAddr:        httpsAddr,
		DisableHTTP01:    !c.ACME.Has(acme.HTTP01),
		DisableTLSALPN01: !c.ACME.Has(acme.TLSALPN01),
	}
	env := c.Env()
	for _, s := range c.Sites {
		if s.TLS != acme.ModeOff {
			ac.Sites = append(ac.Sites, acmeSite(env, s))
		}
	}
	return ac
}
