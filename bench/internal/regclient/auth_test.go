package regclient

import (
	"reflect"
	"testing"
)

func TestParseChallenge(t *testing.T) {
	tests := []struct {
		in     string
		scheme string
		params map[string]string
	}{
		{`Bearer realm="https://r.test/token",service="r.test",scope="repository:a/b:pull,push"`, "Bearer",
			map[string]string{"realm": "https://r.test/token", "service": "r.test", "scope": "repository:a/b:pull,push"}},
		{`Basic realm="Registry realm"`, "Basic", map[string]string{"realm": "Registry realm"}},
		{`basic realm=plain, charset="UTF-8"`, "basic", map[string]string{"realm": "plain", "charset": "UTF-8"}},
		{`Bearer realm="a\"b"`, "Bearer", map[string]string{"realm": `a"b`}},
		{`Basic`, "Basic", map[string]string{}},
		{``, "", map[string]string{}},
		{`Bearer realm="unterminated`, "Bearer", map[string]string{"realm": "unterminated"}},
	}
	for _, tt := range tests {
		s, p := ParseChallenge(tt.in)
		if s != tt.scheme || !reflect.DeepEqual(p, tt.params) {
			t.Errorf("ParseChallenge(%q) = %q %v, want %q %v", tt.in, s, p, tt.scheme, tt.params)
		}
	}
}
