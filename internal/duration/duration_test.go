package duration

import (
	"testing"
	"time"
)

func TestUnmarshalText(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"24h", 24 * time.Hour, true},
		{"90s", 90 * time.Second, true},
		{"0s", 0, true},
		{"-1h", 0, false},
		{"3 days", 0, false},
		{"", 0, false},
	} {
		var d Duration
		err := d.UnmarshalText([]byte(tc.in))
		if (err == nil) != tc.ok || tc.ok && d.Std() != tc.want {
			t.Errorf("%q: got %v, %v; want %v ok=%v", tc.in, d.Std(), err, tc.want, tc.ok)
		}
		if tc.ok {
			b, _ := d.MarshalText()
			var back Duration
			if back.UnmarshalText(b) != nil || back != d {
				t.Errorf("%q: round trip gave %q", tc.in, b)
			}
		}
	}
}
