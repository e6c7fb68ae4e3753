// Package policy decides who may do which action (pull, push, delete) on
// which host and repository, from the [[policy]] and [groups] tables of
// gateway.toml.
//
// Rules are tried in order and the first one whose hosts, repos and users
// all match the request decides: its allow list is what the caller may do.
// Without any rule, a logged-in user may pull, push and delete everywhere
// (registry:2's behaviour; the backend's own delete switch still applies)
// and an anonymous caller may do nothing.
//
// Whatever the rules grant an anonymous caller is granted to every logged-in
// caller too: logging in never takes rights away (a client could always
// drop its credentials and get them anyway).
package policy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/wharf-dev/wharf/backend"
)

// Special entries of a rule's users list.
const (
	// Anyone matches every logged-in user.
	Anyone = "*"
	// Anonymous matches callers that did not log in.
	Anonymous = "anonymous"
)

// Rule is one [[policy]] table. Empty Hosts means every site, empty Repos
// every repository, empty Users every logged-in user ("*"). A nil Allow is
// an error (say allow = [] for a rule that denies); Line is the rule's line
// in the config file, used in error messages.
type Rule struct {
	Hosts []string `toml:"hosts"`
	Repos []string `toml:"repos"`
	Users []string `toml:"users"`
	Allow []string `toml:"allow"`
	Line  int      `toml:"-"`
}

// Policy is a validated, immutable set of rules. It is safe for concurrent
// use; a reload builds a new one.
type Policy struct {
	rules []rule
	empty bool // no rules at all: registry:2 behaviour
}

type rule struct {
	hosts     []string // lower case globs; nil = any
	repos     []string // globs; nil = any
	users     map[string]bool
	anyone    bool // "*"
	anonymous bool // "anonymous"
	allow     []backend.Action
	line      int
}

// Error is one problem in the policy, at a line of the config file.
type Error struct {
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return e.Msg
}

// Errors is every problem New found, in rule order. `wharf check` prints
// each as file:line: message (see Format).
type Errors []*Error

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Format returns one "file:line: message" string per problem.
func (es Errors) Format(file string) []string {
	s := make([]string, len(es))
	for i, e := range es {
		if e.Line > 0 {
			s[i] = fmt.Sprintf("%s:%d: %s", file, e.Line, e.Msg)
		} else {
			s[i] = fmt.Sprintf("%s: %s", file, e.Msg)
		}
	}
	return s
}

// AllActions are the actions a policy can grant, in their usual order.
var AllActions = []backend.Action{backend.ActionPull, backend.ActionPush, backend.ActionDelete}

// New validates rules and groups and builds a Policy. Group members are user
// names (no "@", "*" or "anonymous"). The error, if any, is of type Errors
// and lists every problem found: unknown actions, unknown or malformed
// groups, globs that can never match a repository name, empty entries.
func New(rules []Rule, groups map[string][]string) (*Policy, error) {
	var errs Errors
	add := func(line int, format string, args ...any) {
		errs = append(errs, &Error{Line: line, Msg: fmt.Sprintf(format, args...)})
	}
	groupNames := make([]string, 0, len(groups))
	for g := range groups {
		groupNames = append(groupNames, g)
	}
	slices.Sort(groupNames)
	for _, g := range groupNames {
		if g == "" || strings.ContainsAny(g, "@*: \t") {
			add(0, "[groups]: invalid group name %q", g)
		}
		for _, m := range groups[g] {
			switch {
			case m == "":
				add(0, "[groups] %s: empty user name", g)
			case strings.HasPrefix(m, "@"):
				add(0, "[groups] %s: %q: groups cannot contain groups, list the users", g, m)
			case m == Anyone || m == Anonymous:
				add(0, "[groups] %s: %q is not a user name; use it in a [[policy]] users list instead", g, m)
			case strings.ContainsAny(m, ": \t\r\n"):
				add(0, "[groups] %s: invalid user name %q", g, m)
			}
		}
	}

	p := &Policy{empty: len(rules) == 0}
	for i, r := range rules {
		line := r.Line
		where := fmt.Sprintf("[[policy]] #%d", i+1)
		c := rule{line: line}
		var bad bool
		c.hosts, bad = compileHosts(r.Hosts, func(format string, args ...any) { add(line, where+": hosts: "+format, args...) })
		if bad && c.hosts == nil {
			c.hosts = []string{"\x00"} // every entry was bad: match nothing, not everything
		}
		c.repos, bad = compileRepos(r.Repos, func(format string, args ...any) { add(line, where+": repos: "+format, args...) })
		if bad && c.repos == nil {
			c.repos = []string{"\x00"}
		}
		c.users = map[string]bool{}
		if len(r.Users) == 0 {
			c.anyone = true
		}
		for _, u := range r.Users {
			switch {
			case u == Anyone:
				c.anyone = true
			case u == Anonymous:
				c.anonymous = true
			case strings.HasPrefix(u, "@"):
				members, ok := groups[u[1:]]
				if !ok {
					add(line, "%s: users: unknown group %q (define it under [groups])", where, u)
					continue
				}
				for _, m := range members {
					c.users[m] = true
				}
			case u == "" || strings.ContainsAny(u, ": \t\r\n"):
				add(line, "%s: users: invalid user name %q", where, u)
			default:
				c.users[u] = true
			}
		}
		if r.Allow == nil {
			add(line, "%s: allow is missing: say which of pull, push, delete the users get (allow = [] denies)", where)
		}
		for _, a := range r.Allow {
			act := backend.Action(strings.ToLower(strings.TrimSpace(a)))
			if !slices.Contains(AllActions, act) {
				add(line, "%s: allow: unknown action %q (want pull, push or delete)", where, a)
				continue
			}
			if !slices.Contains(c.allow, act) {
				c.allow = append(c.allow, act)
			}
		}
		p.rules = append(p.rules, c)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return p, nil
}

// compileHosts lower-cases host globs; nil means any host. bad reports
// whether some entry was refused.
func compileHosts(in []string, fail func(string, ...any)) (out []string, bad bool) {
	for _, h := range in {
		h = strings.ToLower(strings.TrimSpace(h))
		switch {
		case h == "":
			fail("empty host name")
			bad = true
		case h == "*":
			return nil, false
		case strings.ContainsAny(h, "/ \t") || strings.Count(h, ":") > 1 && !strings.HasPrefix(h, "["):
			fail("%q can never match: give host names without scheme or path", h)
			bad = true
		case strings.Contains(h, ":"):
			// a port: sites are matched without one, so drop it
			if i := strings.LastIndexByte(h, ':'); i > 0 && isDigits(h[i+1:]) {
				out = append(out, strings.Trim(h[:i], "[]"))
			} else {
				fail("%q can never match: give host names without scheme or path", h)
				bad = true
			}
		default:
			out = append(out, h)
		}
	}
	return out, bad
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

// compileRepos checks repository globs; nil means any repository.
func compileRepos(in []string, fail func(string, ...any)) (out []string, bad bool) {
	for _, g := range in {
		if g == "*" || g == "**" {
			return nil, false
		}
		if why := neverMatches(g); why != "" {
			fail("glob %q can never match a repository name: %s", g, why)
			bad = true
			continue
		}
		out = append(out, g)
	}
	return out, bad
}

// CheckHosts reports rule hosts that match none of the configured sites,
// so those entries can never match. `wharf check` calls it with every
// site's host.
func (p *Policy) CheckHosts(known []string) Errors {
	var errs Errors
	for i, r := range p.rules {
		for _, h := range r.hosts {
			if !slices.ContainsFunc(known, func(k string) bool { return globMatch(h, strings.ToLower(k)) }) {
				errs = append(errs, &Error{Line: r.line, Msg: fmt.Sprintf("[[policy]] #%d: hosts: %q is not the host of any [[site]], so this entry never matches", i+1, h)})
			}
		}
	}
	return errs
}

// Allowed returns the actions user may perform on repo at host; user ""
// means anonymous. The result is sorted as AllActions and may be empty.
func (p *Policy) Allowed(host, repo, user string) []backend.Action {
	if p == nil {
		return nil
	}
	host = strings.ToLower(host)
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i] // tolerate host:port
	}
	if p.empty {
		if user == "" {
			return nil
		}
		return slices.Clone(AllActions)
	}
	anon := p.first(host, repo, "")
	if user == "" {
		return order(anon)
	}
	return order(union(p.first(host, repo, user), anon))
}

// Can reports whether user may perform act on repo at host.
func (p *Policy) Can(host, repo, user string, act backend.Action) bool {
	return slices.Contains(p.Allowed(host, repo, user), act)
}

func (p *Policy) first(host, repo, user string) []backend.Action {
	for i := range p.rules {
		r := &p.rules[i]
		if r.matches(host, repo, user) {
			return r.allow
		}
	}
	return nil
}

func (r *rule) matches(host, repo, user string) bool {
	if user == "" {
		if !r.anonymous {
			return false
		}
	} else if !r.anyone && !r.users[user] {
		return false
	}
	if r.hosts != nil && !slices.ContainsFunc(r.hosts, func(h string) bool { return globMatch(h, host) }) {
		return false
	}
	if r.repos != nil && !slices.ContainsFunc(r.repos, func(g string) bool { return globMatch(g, repo) }) {
		return false
	}
	return true
}

func union(a, b []backend.Action) []backend.Action {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

func order(acts []backend.Action) []backend.Action {
	out := make([]backend.Action, 0, len(acts))
	for _, a := range AllActions {
		if slices.Contains(acts, a) {
			out = append(out, a)
		}
	}
	return out
}
