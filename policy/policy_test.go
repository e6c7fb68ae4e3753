package policy

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/wharf-dev/wharf/backend"
)

func acts(s string) []backend.Action {
	out := []backend.Action{}
	for _, f := range strings.Fields(s) {
		out = append(out, backend.Action(f))
	}
	return out
}

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"team-a/*", "team-a/app", true},
		{"team-a/*", "team-a/x/app", true},
		{"team-a/*", "team-a", false},
		{"team-a/*", "team-b/app", false},
		{"team-a/**", "team-a/x/y", true},
		{"*", "anything/at/all", true},
		{"*/app", "a/b/app", true},
		{"*/app", "app", false},
		{"lib?", "lib1", true},
		{"lib?", "lib", false},
		{"lib?", "lib12", false},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "aXbY", false},
		{"exact", "exact", true},
		{"exact", "exactly", false},
		{"", "", true},
		{"*.example.com", "registry.example.com", true},
		{"*.example.com", "example.com", false},
		{"**a**a**a**a**b", strings.Repeat("a", 200), false}, // no exponential blow-up
	}
	for _, tt := range tests {
		if got := globMatch(tt.pattern, tt.name); got != tt.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestNeverMatches(t *testing.T) {
	tests := []struct {
		glob string
		bad  bool
	}{
		{"team-a/*", false},
		{"*", false},
		{"a/b/c", false},
		{"lib?", false},
		{"*-cache", false},
		{"Team-A/*", true},
		{"team a/*", true},
		{"team-a/", true},
		{"/team-a", true},
		{"a//b", true},
		{"a/-b", true},
		{"a./b", true},
		{"-a", true},
		{"a[0-9]", true},
		{"", true},
	}
	for _, tt := range tests {
		why := neverMatches(tt.glob)
		if (why != "") != tt.bad {
			t.Errorf("neverMatches(%q) = %q, want bad=%v", tt.glob, why, tt.bad)
		}
	}
}

func TestAllowed(t *testing.T) {
	groups := map[string][]string{"ci": {"woodpecker", "jenkins"}, "admins": {"root", "jenkins"}}
	rules := []Rule{
		{Hosts: []string{"registry.example.com"}, Repos: []string{"team-a/*"}, Users: []string{"alice", "@ci"}, Allow: []string{"pull", "push"}, Line: 10},
		{Repos: []string{"*"}, Users: []string{"@admins"}, Allow: []string{"pull", "push", "delete"}, Line: 16},
		{Repos: []string{"public/*"}, Users: []string{"anonymous"}, Allow: []string{"pull"}, Line: 20},
		{Users: []string{"mallory"}, Allow: []string{}, Line: 25}, // deny everything
		{Repos: []string{"team-a/*"}, Users: []string{"*"}, Allow: []string{"pull"}, Line: 30},
		{Hosts: []string{"*.example.org"}, Users: []string{"bob"}, Allow: []string{"PUSH", "pull"}, Line: 35},
		{Hosts: []string{"127.0.0.1:5000"}, Users: []string{"carol"}, Allow: []string{"pull"}, Line: 40},
	}
	p, err := New(rules, groups)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host, repo, user string
		want             string
	}{
		{"registry.example.com", "team-a/app", "alice", "pull push"},
		{"REGISTRY.example.com:443", "team-a/app", "alice", "pull push"},
		{"registry.example.com", "team-a/app", "jenkins", "pull push"},
		{"registry.example.com", "team-a/app", "bob", "pull"}, // falls through to the "*" rule
		{"other.example.com", "team-a/app", "alice", "pull"},  // host rule does not match
		{"registry.example.com", "team-b/app", "alice", ""},   // nothing matches: deny
		{"registry.example.com", "team-b/app", "root", "pull push delete"},
		{"registry.example.com", "team-a/app", "jenkins", "pull push"}, // first match wins, not the best
		{"other.example.com", "team-a/app", "jenkins", "pull push delete"},
		{"registry.example.com", "public/x", "", "pull"},
		{"registry.example.com", "team-a/app", "", ""},          // "*" is logged-in users only
		{"registry.example.com", "public/x", "mallory", "pull"}, // anonymous rights are a floor
		{"registry.example.com", "team-a/app", "mallory", ""},
		{"a.example.org", "x", "bob", "pull push"},
		{"example.org", "x", "bob", ""},
		{"127.0.0.1", "x", "carol", "pull"}, // a port in hosts is ignored, as for sites
		{"127.0.0.1:5000", "x", "carol", "pull"},
	}
	for _, tt := range tests {
		got := p.Allowed(tt.host, tt.repo, tt.user)
		if !slices.Equal(got, acts(tt.want)) {
			t.Errorf("Allowed(%q, %q, %q) = %v, want %v", tt.host, tt.repo, tt.user, got, acts(tt.want))
		}
	}
	if !p.Can("registry.example.com", "team-a/app", "alice", backend.ActionPush) || p.Can("registry.example.com", "team-a/app", "alice", backend.ActionDelete) {
		t.Error("Can disagrees with Allowed")
	}
}

func TestNoRules(t *testing.T) {
	p, err := New(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Allowed("h", "any/repo", "alice"); !slices.Equal(got, AllActions) {
		t.Errorf("logged-in user without rules: %v, want all", got)
	}
	if got := p.Allowed("h", "any/repo", ""); len(got) != 0 {
		t.Errorf("anonymous without rules: %v, want nothing", got)
	}
	var nilp *Policy
	if got := nilp.Allowed("h", "r", "alice"); got != nil {
		t.Errorf("nil policy grants %v", got)
	}
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name   string
		rules  []Rule
		groups map[string][]string
		want   []string // substrings, one per expected problem, in order
	}{
		{"unknown action", []Rule{{Users: []string{"a"}, Allow: []string{"pull", "pul"}, Line: 7}}, nil,
			[]string{`line 7: [[policy]] #1: allow: unknown action "pul"`}},
		{"unknown group", []Rule{{Users: []string{"@ops"}, Allow: []string{"pull"}, Line: 3}}, map[string][]string{"ci": {"x"}},
			[]string{`line 3: [[policy]] #1: users: unknown group "@ops"`}},
		{"bad glob", []Rule{{Repos: []string{"Team/*", "ok/*"}, Allow: []string{"pull"}, Line: 12}}, nil,
			[]string{`line 12: [[policy]] #1: repos: glob "Team/*" can never match`}},
		{"bad host", []Rule{{Hosts: []string{"https://r.example.com"}, Allow: []string{"pull"}, Line: 4}}, nil,
			[]string{`line 4: [[policy]] #1: hosts: "https://r.example.com" can never match`}},
		{"missing allow", []Rule{{Users: []string{"a"}, Line: 9}}, nil,
			[]string{`line 9: [[policy]] #1: allow is missing`}},
		{"group of groups", []Rule{{Users: []string{"@a"}, Allow: []string{}, Line: 2}}, map[string][]string{"a": {"@b"}, "b": {"x"}},
			[]string{`[groups] a: "@b": groups cannot contain groups`}},
		{"several", []Rule{
			{Users: []string{"a"}, Allow: []string{"pull"}, Line: 1},
			{Users: []string{"@nope", ""}, Allow: []string{"write"}, Line: 5},
		}, nil, []string{`line 5: [[policy]] #2: users: unknown group`, `line 5: [[policy]] #2: users: invalid user name ""`, `line 5: [[policy]] #2: allow: unknown action "write"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.rules, tt.groups)
			if err == nil {
				t.Fatalf("New accepted it: %+v", p)
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error is %T, want Errors", err)
			}
			if len(es) != len(tt.want) {
				t.Fatalf("got %d problems (%v), want %d", len(es), err, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(es[i].Error(), w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, es[i].Error(), w)
				}
			}
			for _, line := range es.Format("gateway.toml") {
				if !strings.HasPrefix(line, "gateway.toml:") {
					t.Errorf("Format: %q has no file prefix", line)
				}
			}
		})
	}
}

func TestBadGlobMatchesNothing(t *testing.T) {
	// If validation is bypassed (New refuses it, but belt and braces), a
	// rule whose only glob is bad must not turn into "every repository".
	var fails int
	repos, bad := compileRepos([]string{"BAD"}, func(string, ...any) { fails++ })
	if !bad || repos != nil || fails != 1 {
		t.Fatalf("compileRepos = %v, %v, %d fails", repos, bad, fails)
	}
}

func TestCheckHosts(t *testing.T) {
	rules := []Rule{
		{Hosts: []string{"registry.example.com"}, Allow: []string{"pull"}, Line: 3},
		{Hosts: []string{"typo.example.com", "*.example.com"}, Allow: []string{"pull"}, Line: 8},
	}
	p, err := New(rules, nil)
	if err != nil {
		t.Fatal(err)
	}
	es := p.CheckHosts([]string{"registry.example.com", "mirror.example.com"})
	if len(es) != 1 || es[0].Line != 8 || !strings.Contains(es[0].Msg, "typo.example.com") {
		t.Fatalf("CheckHosts = %v", es)
	}
}
