package cleanup

import (
	"time"

	"github.com/wharf-dev/wharf/internal/conf"
)

// Config is the [gc] table of gateway.toml.
type Config struct {
	// Every runs the clean-up inside `wharf serve` this often; zero (the
	// default) never runs it there (`wharf gc` from cron still works).
	Every conf.Duration `toml:"every"`
	// Jitter adds a random delay of up to this much before each run, so
	// that instances started together do not all collect at once.
	// Default: a tenth of Every, at most an hour.
	Jitter *conf.Duration `toml:"jitter"`
}

// MinEvery is the shortest interval accepted for [gc] every.
const MinEvery = time.Second

// Validate checks the [gc] table.
func (c *Config) Validate() conf.Problems {
	var ps conf.Problems
	if c.Every != 0 && c.Every.Std() < MinEvery {
		ps.Add("every", "every = %q is too short: want at least %s, or \"0s\" / no key to run gc only from `wharf gc`", c.Every.Std(), MinEvery)
	}
	if c.Jitter != nil && c.Every != 0 && c.Jitter.Std() > c.Every.Std() {
		ps.Add("jitter", "jitter %s is longer than every %s", c.Jitter.Std(), c.Every.Std())
	}
	return ps
}

// JitterOrDefault is the jitter to use.
func (c *Config) JitterOrDefault() time.Duration {
	if c.Jitter != nil {
		return c.Jitter.Std()
	}
	return min(c.Every.Std()/10, time.Hour)
}
