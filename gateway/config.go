// Package gateway owns wharf's configuration (TOML load, defaults,
// validation, reload), its listeners, routing by Host, what every request
// passes through (the request contract: route.go), and shutdown.
package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/wharf-dev/wharf/acme"
	"github.com/wharf-dev/wharf/auth"
	"github.com/wharf-dev/wharf/backend/cache"
	"github.com/wharf-dev/wharf/backend/proxy"
	"github.com/wharf-dev/wharf/backend/registry"
	"github.com/wharf-dev/wharf/backend/registry/retention"
	"github.com/wharf-dev/wharf/cleanup"
	"github.com/wharf-dev/wharf/internal/conf"
	"github.com/wharf-dev/wharf/policy"
	"github.com/wharf-dev/wharf/webhook"
)

// Config is gateway.toml, the whole user-facing contract (see DESIGN.md).
// It only composes the sections; each section's struct, defaults and rules
// live with the part that uses it (README.md, "Configuration: who owns
// which section, and adding a key"):
//
//	[listen], [log]       gateway (config_listen.go)
//	[acme]                acme.Section
//	[auth]                auth.Section
//	[[policy]], [groups]  policy.Rule, policy.New
//	[[site]]              gateway.Site (config_site.go), with
//	  [site.registry]     registry.Config
//	  [site.cache]        cache.Config
//	  [site.proxy]        proxy.Config
//	[gc]                  cleanup.Config
//	[[retention]]         retention.Rule
//	[[webhook]]           webhook.Config
type Config struct {
	DataDir  string              `toml:"data_dir"`
	Listen   Listen              `toml:"listen"`
	Log      Log                 `toml:"log"`
	ACME     acme.Section        `toml:"acme"`
	Auth     auth.Section        `toml:"auth"`
	Groups   map[string][]string `toml:"groups"`
	Sites    []Site              `toml:"site"`
	Policies []policy.Rule       `toml:"policy"`
	Cluster  Cluster             `toml:"cluster"`
	// [gc], [[retention]] and [[webhook]] (gateway/cleanup.go checks
	// what spans sections).
	GC        cleanup.Config   `toml:"gc"`
	Retention []retention.Rule `toml:"retention"`
	Webhooks  []webhook.Config `toml:"webhook"`

	// File is the path the config was loaded from ("" for the built-in
	// development config); relative paths are resolved against its folder.
	File string `toml:"-"`
	// lines maps a key path such as "site[1].cache.ttl" to its line.
	lines map[string]int
}

// Names kept for code written against the sections' old home in this
// package; new code uses the owning package's type.
type (
	ACME         = acme.Section
	Auth         = auth.Section
	Policy       = policy.Rule
	RegistrySite = registry.Config
	CacheSite    = cache.Config
	ProxySite    = proxy.Config
	Duration     = conf.Duration
)

// DefaultDataDir is data_dir when the file does not set it.
const DefaultDataDir = "/var/lib/wharf"

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
// messages and to resolve relative paths. It runs every section's
// SetDefaults and Validate: the config it returns is what `wharf serve`
// builds its sites from, and the error lists every problem.
func ParseConfig(path string, data []byte) (*Config, error) {
	c := &Config{File: path, lines: keyLines(data)}
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(c)
	if err != nil {
		return nil, &ConfigError{[]string{decodeProblem(path, err)}}
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

// tomlLine finds the line and key in the decoder's errors that are not a
// toml.ParseError ("toml: line 3 (last key "site.n"): incompatible types").
var tomlLine = regexp.MustCompile(`^toml: line (\d+)(?: \(last key "([^"]*)"\))?: `)

// decodeProblem turns a decoding error (syntax, wrong type, a value an
// enum or Duration refuses) into "file:line: message (key K)".
func decodeProblem(path string, err error) string {
	withKey := func(msg, key string) string {
		if key == "" {
			return msg
		}
		return fmt.Sprintf("%s (key %s)", msg, key)
	}
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return fmt.Sprintf("%s:%d: %s", path, pe.Position.Line, withKey(pe.Message, pe.LastKey))
	}
	s := err.Error()
	if m := tomlLine.FindStringSubmatchIndex(s); m != nil {
		line, _ := strconv.Atoi(s[m[2]:m[3]])
		key := ""
		if m[4] >= 0 {
			key = s[m[4]:m[5]]
		}
		return fmt.Sprintf("%s:%d: %s", path, line, withKey(s[m[1]:], key))
	}
	return fmt.Sprintf("%s: %v", path, err)
}

// DevConfig is what `wharf serve` runs with no -config: a registry for any
// Host on http://127.0.0.1:5000, data in ./wharf-data, no auth.
func DevConfig() *Config {
	c := &Config{
		DataDir: "wharf-data",
		Listen:  Listen{HTTP: "127.0.0.1:5000"},
		Log:     Log{Level: "info", Format: "console"},
		Sites: []Site{{
			Host: "*", Backend: KindRegistry, TLS: acme.ModeOff,
			Registry: &registry.Config{Root: ".", Delete: true},
		}},
	}
	c.setDefaults()
	return c
}

// setDefaults runs every section's SetDefaults.
func (c *Config) setDefaults() {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	c.Listen.SetDefaults()
	c.Log.SetDefaults()
	c.ACME.SetDefaults()
	c.Auth.SetDefaults()
	for i := range c.Sites {
		c.Sites[i].SetDefaults()
	}
	for i := range c.Webhooks {
		c.Webhooks[i].SetDefaults()
	}
}

// Env is what the sections' Validate need to resolve paths.
func (c *Config) Env() conf.Env {
	env := conf.Env{DataDir: c.DataDir}
	if c.File != "" {
		env.Dir = dirOf(c.File)
	}
	return env
}

// Validate runs every section's Validate and the rules that span
// sections, and reports every problem as "file:line: message".
func (c *Config) Validate() error {
	v := &validation{c: c, env: c.Env()}
	v.section("listen", c.Listen.Validate(v.env))
	v.section("log", c.Log.Validate(v.env))
	v.section("acme", c.ACME.Validate(v.env))
	v.section("auth", c.Auth.Validate(v.env))
	v.section("cluster", c.Cluster.Validate(v.env))
	c.validateACME(v)
	c.validatePolicy(v)
	c.validateSites(v)
	c.validateRoots(v)
	c.validateCleanup(v)
	if len(v.probs) > 0 {
		return &ConfigError{v.probs}
	}
	return nil
}

// validation collects problems as "file:line: message".
type validation struct {
	c     *Config
	env   conf.Env
	probs []string
}

// add records a problem about a key path ("site[1].cache.upstream").
func (v *validation) add(key, format string, args ...any) {
	v.probs = append(v.probs, fmt.Sprintf("%s:%d: %s", v.c.File, v.c.lineOf(key), fmt.Sprintf(format, args...)))
}

// section records a section's problems, their keys below prefix.
func (v *validation) section(prefix string, ps conf.Problems) {
	var all conf.Problems
	all.Merge(prefix, ps)
	for _, p := range all {
		v.add(p.Key, "%s", p.Msg)
	}
}

// validateACME checks what [acme] needs from [listen] and the sites.
func (c *Config) validateACME(v *validation) {
	if c.ACME.Has(acme.HTTP01) && c.Listen.HTTP == "" && c.hasACMESite() {
		v.add("acme.challenges", "http-01 needs [listen] http")
	}
}

// validatePolicy compiles [[policy]] and [groups] as serve does and
// checks the rules' hosts against the sites (globs included).
func (c *Config) validatePolicy(v *validation) {
	pol, err := c.BuildPolicy()
	var pes policy.Errors
	switch {
	case errors.As(err, &pes):
		v.policyErrors(pes)
	case err != nil:
		v.add("policy", "%v", err)
	default:
		v.policyErrors(pol.CheckHosts(c.SortedHosts()))
	}
	if c.Auth.Htpasswd == "" && len(c.Policies) > 0 {
		v.add("policy", "[[policy]] needs users: set [auth] htpasswd")
	}
}

func (v *validation) policyErrors(pes policy.Errors) {
	for _, pe := range pes {
		line := pe.Line
		if line == 0 {
			line = v.c.lineOf("groups")
		}
		v.probs = append(v.probs, fmt.Sprintf("%s:%d: %s", v.c.File, line, pe.Msg))
	}
}

// validateSites runs each site's Validate and checks that hosts are
// unique.
func (c *Config) validateSites(v *validation) {
	if len(c.Sites) == 0 {
		v.probs = append(v.probs, fmt.Sprintf("%s:1: no [[site]]: add at least one site (host + backend)", c.File))
	}
	seen := map[string]int{}
	for i := range c.Sites {
		s := &c.Sites[i]
		key := fmt.Sprintf("site[%d]", i)
		v.section(key, s.Validate(v.env, c))
		if j, dup := seen[s.Host]; dup && s.Host != "" {
			v.add(key+".host", "host %q is already served by the site on line %d", s.Host, c.lineOf(fmt.Sprintf("site[%d].host", j)))
		}
		seen[s.Host] = i
	}
}
