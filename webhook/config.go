package webhook

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/wharf-dev/wharf/internal/conf"
	"github.com/wharf-dev/wharf/internal/glob"
)

// Actions an endpoint can ask for.
const (
	ActionPush   = "push"   // manifest PUT
	ActionDelete = "delete" // manifest or tag DELETE
	ActionPull   = "pull"   // manifest GET
)

// Defaults for keys a user may leave out.
const (
	DefaultTimeout = 5 * time.Second
	DefaultQueue   = 1000
)

// Config is one [[webhook]] table of gateway.toml.
type Config struct {
	// URL receives the events (POST, http or https).
	URL string `toml:"url"`
	// SecretFile holds the HMAC-SHA256 key (trailing white space
	// ignored); with it every POST carries X-Wharf-Signature:
	// sha256=<hex of HMAC(body)>. Without it, no signature.
	SecretFile string `toml:"secret_file"`
	// Actions to send: push, delete, pull. Default: push and delete.
	Actions []string `toml:"actions"`
	// Repos are globs over repository names ('*' crosses '/'); empty:
	// every repository.
	Repos []string `toml:"repos"`
	// Hosts are globs over site host names; empty: every site.
	Hosts []string `toml:"hosts"`
	// Timeout bounds one POST attempt. Default 5s.
	Timeout conf.Duration `toml:"timeout"`
	// Queue is how many events wait for this endpoint at most; past it
	// new events are dropped (counted and logged), never blocking a
	// request. Default 1000.
	Queue int `toml:"queue"`
}

// SetDefaults fills in what the user left out.
func (c *Config) SetDefaults() {
	if c.Actions == nil {
		c.Actions = []string{ActionPush, ActionDelete}
	}
	if c.Timeout == 0 {
		c.Timeout = conf.Duration(DefaultTimeout)
	}
	if c.Queue == 0 {
		c.Queue = DefaultQueue
	}
}

// Validate checks one endpoint (secret_file is read, relative to the
// config file).
func (c *Config) Validate(env conf.Env) conf.Problems {
	var ps conf.Problems
	add := ps.Add
	if u, err := url.Parse(c.URL); c.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("url", "invalid webhook url %q: want http(s)://host/path", c.URL)
	}
	if c.SecretFile != "" {
		if _, err := readSecret(env.Path(c.SecretFile)); err != nil {
			add("secret_file", "%v", err)
		}
	}
	if len(c.Actions) == 0 {
		add("actions", "no actions: want some of push, delete, pull")
	}
	for _, a := range c.Actions {
		switch a {
		case ActionPush, ActionDelete, ActionPull:
		default:
			add("actions", "unknown action %q: want push, delete or pull", a)
		}
	}
	for _, g := range c.Repos {
		if g == "" || strings.ContainsAny(g, " \t") {
			add("repos", "invalid repository glob %q", g)
		}
	}
	if c.Queue < 0 {
		add("queue", "queue must be positive")
	}
	return ps
}

func readSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read webhook secret: %w", err)
	}
	b = []byte(strings.TrimSpace(string(b)))
	if len(b) == 0 {
		return nil, fmt.Errorf("webhook secret file %s is empty", path)
	}
	return b, nil
}

// wants reports whether the endpoint takes action on repo of site host.
func (c *Config) wants(host, action, repo string) bool {
	ok := false
	for _, a := range c.Actions {
		ok = ok || a == action
	}
	if !ok {
		return false
	}
	if len(c.Hosts) > 0 && !anyGlob(c.Hosts, strings.ToLower(host)) {
		return false
	}
	return len(c.Repos) == 0 || anyGlob(c.Repos, repo)
}

func anyGlob(globs []string, s string) bool {
	for _, g := range globs {
		if glob.Match(strings.ToLower(g), s) {
			return true
		}
	}
	return false
}
