// Package duration is a Go duration written as a TOML string ("24h"), for
// the config sections that packages below the gateway own (retention,
// cleanup, webhook) and so cannot use gateway.Duration.
package duration

import (
	"fmt"
	"time"
)

// Duration is a non-negative Go duration written as a string ("168h").
type Duration time.Duration

// UnmarshalText parses a Go duration string; negative values are refused.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (use Go durations such as \"90s\", \"15m\", \"168h\")", b)
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration back as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Std returns the duration as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }
