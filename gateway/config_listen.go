package gateway

import (
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/wharf-dev/wharf/internal/conf"
)

// Listen is the [listen] table: addresses and connection limits. It is the
// only place its keys, defaults and rules live.
type Listen struct {
	HTTP  string `toml:"http"`
	HTTPS string `toml:"https"`
	Admin string `toml:"admin"`
	// ReadHeaderTimeout bounds how long a client may take to send headers.
	ReadHeaderTimeout conf.Duration `toml:"read_header_timeout"`
	// IdleTimeout closes keep-alive connections that carry no request.
	IdleTimeout conf.Duration `toml:"idle_timeout"`
	// ProgressTimeout cuts a transfer whose body moves no byte for this long;
	// a slow but moving upload is never cut.
	ProgressTimeout conf.Duration `toml:"progress_timeout"`
	// MaxHeaderBytes bounds request headers; larger gets 431.
	MaxHeaderBytes int `toml:"max_header_bytes"`
	// MaxConns bounds open client connections per listener; further
	// connections wait in the kernel's accept queue.
	MaxConns int `toml:"max_conns"`
}

// Defaults of the [listen] table.
const (
	DefaultReadHeaderTimeout = 30 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultProgressTimeout   = 5 * time.Minute
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxConns          = 4096
)

// SetDefaults fills in what the user left out.
func (l *Listen) SetDefaults() {
	if l.ReadHeaderTimeout == 0 {
		l.ReadHeaderTimeout = conf.Duration(DefaultReadHeaderTimeout)
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = conf.Duration(DefaultIdleTimeout)
	}
	if l.ProgressTimeout == 0 {
		l.ProgressTimeout = conf.Duration(DefaultProgressTimeout)
	}
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxConns == 0 {
		l.MaxConns = DefaultMaxConns
	}
}

// Validate reports every problem of the section (keys relative to it).
func (l *Listen) Validate(env conf.Env) conf.Problems {
	var ps conf.Problems
	for _, k := range []struct{ key, addr string }{{"http", l.HTTP}, {"https", l.HTTPS}, {"admin", l.Admin}} {
		if k.addr == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(k.addr); err != nil || port == "" {
			ps.Add(k.key, "invalid listen address %q: want host:port or :port", k.addr)
		}
	}
	if l.MaxHeaderBytes < 0 {
		ps.Add("max_header_bytes", "must be positive")
	}
	if l.MaxConns < 0 {
		ps.Add("max_conns", "must be positive")
	}
	if l.HTTP != "" && l.HTTP == l.HTTPS && !strings.HasSuffix(l.HTTP, ":0") {
		ps.Add("https", "http and https listen on the same address %q", l.HTTP)
	}
	return ps
}

// LogLevel is the [log] level key.
type LogLevel string

// UnmarshalText makes an unknown level fail while decoding.
func (v *LogLevel) UnmarshalText(b []byte) error {
	x, err := conf.ParseEnum("log level", b, "debug", "info", "warn", "error")
	*v = LogLevel(x)
	return err
}

// LogFormat is the [log] format key.
type LogFormat string

// UnmarshalText makes an unknown format fail while decoding.
func (v *LogFormat) UnmarshalText(b []byte) error {
	x, err := conf.ParseEnum("log format", b, "json", "console")
	*v = LogFormat(x)
	return err
}

// Log is the [log] table.
type Log struct {
	Level  LogLevel  `toml:"level"`  // default "info"
	Format LogFormat `toml:"format"` // default "json"
}

// SetDefaults fills in what the user left out.
func (l *Log) SetDefaults() {
	if l.Level == "" {
		l.Level = "info"
	}
	if l.Format == "" {
		l.Format = "json"
	}
}

// Validate reports every problem of the section; the enums have done
// their checks while decoding.
func (l *Log) Validate(env conf.Env) conf.Problems { return nil }

func dirOf(file string) string { return filepath.Dir(file) }
