// Package gateway owns wharf's configuration (TOML load, defaults,
// validation, reload), its listeners, routing by Host, the middleware every
// request passes through, and shutdown.
package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/wharf-dev/wharf/acme"
	"github.com/wharf-dev/wharf/auth"
	"github.com/wharf-dev/wharf/backend/proxy"
	"github.com/wharf-dev/wharf/policy"
)

// Config is gateway.toml, the whole user-facing contract (see DESIGN.md).
type Config struct {
	DataDir  string              `toml:"data_dir"`
	Listen   Listen              `toml:"listen"`
	Log      Log                 `toml:"log"`
	ACME     ACME                `toml:"acme"`
	Auth     Auth                `toml:"auth"`
	Groups   map[string][]string `toml:"groups"`
	Sites    []Site              `toml:"site"`
	Policies []Policy            `toml:"policy"`

	// File is the path the config was loaded from ("" for the built-in
	// development config); relative paths are resolved against its folder.
	File string `toml:"-"`
	// lines maps a key path such as "site[1].cache.ttl" to its line.
	lines map[string]int
}

// Listen is the [listen] table: addresses and connection limits.
type Listen struct {
	HTTP  string `toml:"http"`
	HTTPS string `toml:"https"`
	Admin string `toml:"admin"`
	// ReadHeaderTimeout bounds how long a client may take to send headers.
	ReadHeaderTimeout Duration `toml:"read_header_timeout"`
	// IdleTimeout closes keep-alive connections that carry no request.
	IdleTimeout Duration `toml:"idle_timeout"`
	// ProgressTimeout cuts a transfer whose body moves no byte for this long;
	// a slow but moving upload is never cut.
	ProgressTimeout Duration `toml:"progress_timeout"`
	// MaxHeaderBytes bounds request headers; larger gets 431.
	MaxHeaderBytes int `toml:"max_header_bytes"`
	// MaxConns bounds open client connections per listener; further
	// connections wait in the kernel's accept queue.
	MaxConns int `toml:"max_conns"`
	// StockTLS leaves every TLS connection to crypto/tls as it is, without
	// wharf's batched record writes (internal/tlsout): a fallback should a
	// client ever disagree with them; slower.
	StockTLS bool `toml:"stock_tls"`
}

// Log is the [log] table.
type Log struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// ACME is the [acme] table.
type ACME struct {
	Email  string `toml:"email"`
	CA     string `toml:"ca"`
	CARoot string `toml:"ca_root"`
	// Challenges are the ACME challenge types wharf answers: "http-01" on
	// [listen] http, "tls-alpn-01" on [listen] https. Default: both.
	Challenges []string `toml:"challenges"`
}

// Auth is the [auth] table.
type Auth struct {
	Htpasswd string `toml:"htpasswd"`
	Realm    string `toml:"realm"`
	// TokenTTL is how long a token from the built-in token service lives.
	TokenTTL Duration `toml:"token_ttl"`
}

// Site is one [[site]]: a host name and the backend that serves it.
type Site struct {
	Host      string `toml:"host"`
	Backend   string `toml:"backend"`
	TLS       string `toml:"tls"`
	Cert      string `toml:"cert"`
	Key       string `toml:"key"`
	Anonymous string `toml:"anonymous"`
	// AuthScheme chooses the challenge: "token" (default; Bearer from
	// wharf's own token service) or "basic".
	AuthScheme string `toml:"auth"`
	// UI turns the web UI at https://<host>/ on or off; unset = on for
	// registry and cache sites (see UIEnabled in ui.go).
	UI *bool `toml:"ui"`

	Registry *RegistrySite `toml:"registry"`
	Cache    *CacheSite    `toml:"cache"`
	Proxy    *ProxySite    `toml:"proxy"`
}

// RegistrySite is [site.registry]: the embedded registry.
type RegistrySite struct {
	Root   string `toml:"root"`
	Delete bool   `toml:"delete"`
}

// CacheSite is [site.cache]: a pull-through cache of an upstream registry.
type CacheSite struct {
	Upstream string   `toml:"upstream"`
	TTL      Duration `toml:"ttl"`
	Username string   `toml:"username"`
	Password string   `toml:"password"`
	Root     string   `toml:"root"`
	// MaxAge: `wharf gc` evicts cached tags, manifests and blobs not used
	// for this long. Zero (the default) never evicts anything.
	MaxAge Duration `toml:"max_age"`
}

// ProxySite is [site.proxy]: a streaming reverse proxy to a registry.
type ProxySite struct {
	Upstream string `toml:"upstream"`
	// PreserveHost sends the client's Host header upstream instead of the
	// upstream's own host name (X-Forwarded-Host carries it either way).
	PreserveHost bool `toml:"preserve_host"`
}

// Policy is one [[policy]] rule.
type Policy struct {
	Hosts []string `toml:"hosts"`
	Repos []string `toml:"repos"`
	Users []string `toml:"users"`
	Allow []string `toml:"allow"`
	// Line is where the rule starts in the file, for messages.
	Line int `toml:"-"`
}

// Duration is a Go duration written as a TOML string ("168h").
type Duration time.Duration

// UnmarshalText parses a Go duration string.
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

// Defaults for keys a user may leave out.
const (
	DefaultDataDir           = "/var/lib/wharf"
	DefaultACMECA            = "https://acme-v02.api.letsencrypt.org/directory"
	DefaultRealm             = "wharf"
	DefaultCacheTTL          = 168 * time.Hour
	DefaultTokenTTL          = 5 * time.Minute
	DefaultReadHeaderTimeout = 30 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultProgressTimeout   = 5 * time.Minute
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxConns          = 4096
)

// ConfigError is a list of problems found in a config file, each with the
// file and line it refers to.
type ConfigError struct{ Problems []string }

func (e *ConfigError) Error() string { return strings.Join(e.Problems, "\n") }

// LoadConfig reads, defaults and validates a gateway.toml.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig decodes a gateway.toml given as bytes; path is used for
// messages and to resolve relative paths.
func ParseConfig(path string, data []byte) (*Config, error) {
	c := &Config{File: path, lines: keyLines(data)}
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &ConfigError{[]string{fmt.Sprintf("%s:%d: %s", path, pe.Position.Line, pe.Message)}}
		}
		return nil, &ConfigError{[]string{fmt.Sprintf("%s: %v", path, err)}}
	}
	var probs []string
	for _, k := range md.Undecoded() {
		probs = append(probs, fmt.Sprintf("%s:%d: unknown key %q", path, c.lineOf(k...), k.String()))
	}
	if len(probs) > 0 {
		return nil, &ConfigError{probs}
	}
	c.policyLines()
	c.setDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// DevConfig is what `wharf serve` runs with no -config: a registry for any
// Host on http://127.0.0.1:5000, data in ./wharf-data, no auth.
func DevConfig() *Config {
	c := &Config{
		DataDir: "wharf-data",
		Listen:  Listen{HTTP: "127.0.0.1:5000"},
		Log:     Log{Level: "info", Format: "console"},
		Sites: []Site{{
			Host: "*", Backend: "registry", TLS: "off",
			Registry: &RegistrySite{Root: ".", Delete: true},
		}},
	}
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	if c.ACME.CA == "" {
		c.ACME.CA = DefaultACMECA
	}
	if c.Auth.Realm == "" {
		c.Auth.Realm = DefaultRealm
	}
	if c.Auth.TokenTTL == 0 {
		c.Auth.TokenTTL = Duration(DefaultTokenTTL)
	}
	l := &c.Listen
	if l.ReadHeaderTimeout == 0 {
		l.ReadHeaderTimeout = Duration(DefaultReadHeaderTimeout)
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = Duration(DefaultIdleTimeout)
	}
	if l.ProgressTimeout == 0 {
		l.ProgressTimeout = Duration(DefaultProgressTimeout)
	}
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxConns == 0 {
		l.MaxConns = DefaultMaxConns
	}
	if c.ACME.Challenges == nil {
		c.ACME.Challenges = []string{"http-01", "tls-alpn-01"}
	}
	for i := range c.Sites {
		s := &c.Sites[i]
		s.Host = strings.ToLower(strings.TrimSuffix(s.Host, "."))
		if s.TLS == "" {
			s.TLS = "acme"
		}
		if s.AuthScheme == "" {
			s.AuthScheme = "token"
		}
		switch s.Backend {
		case "registry":
			if s.Registry == nil {
				s.Registry = &RegistrySite{Delete: false}
			}
			if s.Registry.Root == "" {
				s.Registry.Root = filepath.Join("registry", s.Host)
			}
		case "cache":
			if s.Cache == nil {
				s.Cache = &CacheSite{}
			}
			if s.Cache.TTL == 0 {
				s.Cache.TTL = Duration(DefaultCacheTTL)
			}
			if s.Cache.Root == "" {
				s.Cache.Root = filepath.Join("cache", s.Host)
			}
		}
	}
}

// Validate checks values and their combinations; every problem is reported
// with file:line.
func (c *Config) Validate() error {
	var probs []string
	add := func(key string, format string, args ...any) {
		probs = append(probs, fmt.Sprintf("%s:%d: %s", c.File, c.lineOf(strings.Split(key, ".")...), fmt.Sprintf(format, args...)))
	}
	for _, k := range []struct{ key, addr string }{{"listen.http", c.Listen.HTTP}, {"listen.https", c.Listen.HTTPS}, {"listen.admin", c.Listen.Admin}} {
		if k.addr == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(k.addr); err != nil || port == "" {
			add(k.key, "invalid listen address %q: want host:port or :port", k.addr)
		}
	}
	if c.Listen.MaxHeaderBytes < 0 {
		add("listen.max_header_bytes", "must be positive")
	}
	if c.Listen.MaxConns < 0 {
		add("listen.max_conns", "must be positive")
	}
	if c.Listen.HTTP != "" && c.Listen.HTTP == c.Listen.HTTPS && !strings.HasSuffix(c.Listen.HTTP, ":0") {
		add("listen.https", "http and https listen on the same address %q", c.Listen.HTTP)
	}
	if len(c.ACME.Challenges) == 0 {
		add("acme.challenges", "no ACME challenge left: want \"http-01\", \"tls-alpn-01\" or both")
	}
	for _, ch := range c.ACME.Challenges {
		switch ch {
		case "http-01":
			if c.Listen.HTTP == "" && c.hasACMESite() {
				add("acme.challenges", "http-01 needs [listen] http")
			}
		case "tls-alpn-01":
		default:
			add("acme.challenges", "unknown ACME challenge %q: want \"http-01\" or \"tls-alpn-01\"", ch)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "invalid log level %q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		add("log.format", "invalid log format %q: want json or console", c.Log.Format)
	}
	if u, err := url.Parse(c.ACME.CA); err != nil || u.Scheme != "https" || u.Host == "" {
		add("acme.ca", "invalid ACME directory URL %q: want https://...", c.ACME.CA)
	}
	if c.ACME.CARoot != "" {
		if _, err := os.Stat(c.Path(c.ACME.CARoot)); err != nil {
			add("acme.ca_root", "cannot read ACME CA root: %v", err)
		}
	}
	if len(c.Sites) == 0 {
		probs = append(probs, fmt.Sprintf("%s:1: no [[site]]: add at least one site (host + backend)", c.File))
	}
	if c.Auth.Htpasswd != "" {
		// The whole file is parsed, so a bad line is found by wharf check
		// and not at the first login.
		if _, err := os.Stat(c.Path(c.Auth.Htpasswd)); err != nil {
			add("auth.htpasswd", "cannot read htpasswd file: %v (create it with `wharf passwd USER >> FILE`)", err)
		} else if _, _, err := auth.LoadHtpasswd(c.Path(c.Auth.Htpasswd)); err != nil {
			probs = append(probs, err.Error())
		}
	}
	if _, err := c.BuildPolicy(); err != nil {
		var pes policy.Errors
		if errors.As(err, &pes) {
			for _, pe := range pes {
				line := pe.Line
				if line == 0 {
					line = c.lineOf("groups")
				}
				probs = append(probs, fmt.Sprintf("%s:%d: %s", c.File, line, pe.Msg))
			}
		} else {
			add("policy", "%v", err)
		}
	}
	if c.Auth.Htpasswd == "" {
		if len(c.Policies) > 0 {
			add("policy", "[[policy]] needs users: set [auth] htpasswd")
		}
	}
	hosts := map[string]bool{}
	for _, s := range c.Sites {
		hosts[strings.ToLower(s.Host)] = true
	}
	for i, p := range c.Policies {
		for _, h := range p.Hosts {
			if !hosts[strings.ToLower(h)] {
				add(fmt.Sprintf("policy[%d].hosts", i), "policy host %q is not the host of any [[site]], so this rule can never match", h)
			}
		}
	}
	seen := map[string]int{}
	for i := range c.Sites {
		s := &c.Sites[i]
		key := func(k string) string { return fmt.Sprintf("site[%d].%s", i, k) }
		if s.Host == "" {
			add(key("host"), "site has no host")
		} else if s.Host != "*" && !validHost(s.Host) {
			add(key("host"), "invalid host %q: want a DNS name or IP address without port", s.Host)
		}
		if j, dup := seen[s.Host]; dup {
			add(key("host"), "host %q is already served by the site on line %d", s.Host, c.lineOf("site", fmt.Sprint(j), "host"))
		}
		seen[s.Host] = i
		switch s.TLS {
		case "acme":
			if s.Host == "*" || net.ParseIP(s.Host) != nil || !strings.Contains(s.Host, ".") {
				add(key("tls"), "tls = \"acme\" needs a public DNS name, not %q: use tls = \"manual\" or \"off\"", s.Host)
			}
			if c.Listen.HTTPS == "" {
				add(key("tls"), "tls = %q needs [listen] https", s.TLS)
			}
		case "manual":
			if c.Listen.HTTPS == "" {
				add(key("tls"), "tls = %q needs [listen] https", s.TLS)
			}
			if s.Cert == "" || s.Key == "" {
				add(key("tls"), "tls = \"manual\" needs cert and key")
			}
			bad := false
			for _, f := range []struct{ k, p string }{{"cert", s.Cert}, {"key", s.Key}} {
				if f.p == "" {
					continue
				}
				if _, err := os.ReadFile(c.Path(f.p)); err != nil {
					add(key(f.k), "cannot read %s: %v", f.k, err)
					bad = true
				}
			}
			if !bad && s.Cert != "" && s.Key != "" {
				// parses both files and checks that they belong together
				if err := acme.CheckSite(c.acmeSite(*s)); err != nil {
					add(key("cert"), "%v", err)
				}
			}
		case "off":
			if c.Listen.HTTP == "" {
				add(key("tls"), "tls = \"off\" serves on [listen] http, which is empty")
			}
		default:
			add(key("tls"), "invalid tls %q: want acme, manual or off", s.TLS)
		}
		if s.Anonymous != "" && c.Auth.Htpasswd == "" {
			add(key("anonymous"), "anonymous only means something with logins: set [auth] htpasswd (without it every caller may pull and push)")
		}
		if s.TLS != "manual" && (s.Cert != "" || s.Key != "") {
			add(key("cert"), "cert and key are only used with tls = \"manual\"")
		}
		switch s.Anonymous {
		case "", "pull":
		default:
			add(key("anonymous"), "invalid anonymous %q: want \"pull\" or \"\"", s.Anonymous)
		}
		switch s.AuthScheme {
		case "token", "basic":
		default:
			add(key("auth"), "invalid auth %q: want \"token\" or \"basic\"", s.AuthScheme)
		}
		other := func(name string, set bool) {
			if set {
				add(key(name), "[site.%s] given for a site with backend = %q", name, s.Backend)
			}
		}
		switch s.Backend {
		case "registry":
			other("cache", s.Cache != nil)
			other("proxy", s.Proxy != nil)
		case "cache":
			other("registry", s.Registry != nil)
			other("proxy", s.Proxy != nil)
			if err := checkUpstream(s.Cache.Upstream); err != nil {
				add(key("cache.upstream"), "%v", err)
			}
			if s.Cache.MaxAge < 0 {
				add(key("cache.max_age"), "negative max_age %v: want a duration such as \"720h\", or 0 to never evict", s.Cache.MaxAge.Std())
			}
		case "proxy":
			other("registry", s.Registry != nil)
			other("cache", s.Cache != nil)
			if s.UI != nil && *s.UI {
				add(key("ui"), "ui = true: a proxy site has no web UI (its registry serves every path)")
			}
			if s.Proxy == nil {
				add(key("backend"), "backend = \"proxy\" needs [site.proxy] upstream")
			} else if _, err := proxy.ParseUpstream(s.Proxy.Upstream); err != nil {
				add(key("proxy.upstream"), "%v", err)
			}
		case "":
			add(key("backend"), "site has no backend: want registry, cache or proxy")
		default:
			add(key("backend"), "invalid backend %q: want registry, cache or proxy", s.Backend)
		}
	}
	if len(probs) > 0 {
		return &ConfigError{probs}
	}
	return nil
}

func checkUpstream(s string) error {
	if s == "" {
		return errors.New("missing upstream URL")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("invalid upstream %q: want http(s)://host[:port]", s)
	}
	return nil
}

// validHost accepts DNS names (letters, digits, '-', dots) and IP addresses.
func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Path resolves a path from the config: absolute as is, relative to the
// config file's folder otherwise.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) || c.File == "" {
		return p
	}
	return filepath.Join(filepath.Dir(c.File), p)
}

// DataPath resolves a path below data_dir (registry roots, caches, certs).
func (c *Config) DataPath(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.Path(c.DataDir), p)
}

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
		if s.TLS == "acme" {
			return true
		}
	}
	return false
}

// acmeSite is the acme package's view of a site (paths resolved).
func (c *Config) acmeSite(s Site) acme.Site {
	return acme.Site{Host: s.Host, TLS: s.TLS, CertFile: c.Path(s.Cert), KeyFile: c.Path(s.Key)}
}

// acmeConfig is the acme package's view of the config; httpAddr and
// httpsAddr are the addresses actually bound (ports chosen by the kernel
// for ":0" are known there).
func (c *Config) acmeConfig(httpAddr, httpsAddr string) acme.Config {
	ac := acme.Config{
		DataDir:          c.Path(c.DataDir),
		CA:               c.ACME.CA,
		Email:            c.ACME.Email,
		CARoot:           c.Path(c.ACME.CARoot),
		HTTPAddr:         httpAddr,
		HTTPSAddr:        httpsAddr,
		DisableHTTP01:    true,
		DisableTLSALPN01: true,
	}
	for _, ch := range c.ACME.Challenges {
		switch ch {
		case "http-01":
			ac.DisableHTTP01 = false
		case "tls-alpn-01":
			ac.DisableTLSALPN01 = false
		}
	}
	for _, s := range c.Sites {
		if s.TLS != "off" {
			ac.Sites = append(ac.Sites, c.acmeSite(s))
		}
	}
	return ac
}
