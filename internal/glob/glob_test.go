package glob

import "testing"

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		want bool
	}{
		{"ci/*", "ci/app", true},
		{"ci/*", "ci/x/app", true},
		{"ci/*", "ci", false},
		{"ci/*", "cix/app", false},
		{"*", "", true},
		{"", "", true},
		{"", "a", false},
		{"v*", "v1.2", true},
		{"v*", "latest", false},
		{"v?", "v1", true},
		{"v?", "v10", false},
		{"a**b", "axxb", true},
		{"*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
	} {
		if got := Match(tc.p, tc.s); got != tc.want {
			t.Errorf("Match(%q, %q) = %v", tc.p, tc.s, got)
		}
	}
}
