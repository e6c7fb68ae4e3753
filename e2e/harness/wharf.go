package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// WharfBinary returns the path of a wharf binary built once per test binary
// from the module's ./cmd/wharf (or $WHARF_BIN if set). WHARF_E2E_RACE=1
// builds it with the race detector.
func WharfBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("WHARF_BIN"); p != "" {
		return p
	}
	requireMain(t)
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wharf-e2e-bin-")
		if err != nil {
			buildErr = fmt.Errorf("temp dir: %w", err)
			return
		}
		atExit(func() { _ = os.RemoveAll(dir) })
		buildPath, buildErr = buildWharf(dir)
	})
	if buildErr != nil {
		t.Fatalf("build wharf: %v", buildErr)
	}
	return buildPath
}

func buildWharf(dir string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "wharf")
	args := []string{"build", "-o", out}
	if os.Getenv("WHARF_E2E_RACE") != "" {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/wharf")
	cmd := exec.Command(goTool(), args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return out, nil
}

// ModuleRoot returns the folder holding wharf's go.mod.
func ModuleRoot() (string, error) {
	b, err := exec.Command(goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(b))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// WharfConfig is what a StartWharf config template is rendered with. The
// listen addresses are free loopback ports picked by the harness; the ones
// the template uses are waited on before StartWharf returns.
type WharfConfig struct {
	// Dir is the folder holding the config file (relative paths in the
	// config are relative to it).
	Dir string
	// DataDir is an empty folder meant for data_dir.
	DataDir string
	// Vars holds extra values given with WithVars.
	Vars map[string]any

	http, https, admin string
	used               map[string]bool
}

// HTTP is the address for [listen] http.
func (c *WharfConfig) HTTP() string { c.used["http"] = true; return c.http }

// HTTPS is the address for [listen] https.
func (c *WharfConfig) HTTPS() string { c.used["https"] = true; return c.https }

// Admin is the address for [listen] admin.
func (c *WharfConfig) Admin() string { c.used["admin"] = true; return c.admin }

// WharfOption changes how StartWharf runs wharf.
type WharfOption func(*wharfOptions)

type wharfOptions struct {
	vars               map[string]any
	env                []string
	ready              []string
	http, https, admin string
}

// WithAddrs makes .HTTP, .HTTPS and .Admin these addresses instead of
// harness-picked ones ("" keeps the picked one), for peers that must know
// the ports first (Pebble validates challenges on fixed ports).
func WithAddrs(http, https, admin string) WharfOption {
	return func(o *wharfOptions) { o.http, o.https, o.admin = http, https, admin }
}

// WithVars makes extra values available to the config template as .Vars.
func WithVars(vars map[string]any) WharfOption {
	return func(o *wharfOptions) { o.vars = vars }
}

// WithEnv adds environment variables to wharf's environment.
func WithEnv(env ...string) WharfOption {
	return func(o *wharfOptions) { o.env = append(o.env, env...) }
}

// WithReadyAddrs replaces the addresses waited on before StartWharf returns.
func WithReadyAddrs(addrs ...string) WharfOption {
	return func(o *wharfOptions) { o.ready = addrs }
}

// Wharf is a running `wharf serve`.
type Wharf struct {
	*Process
	// ConfigPath is the rendered config file ("" without a config).
	ConfigPath string
	// Config holds the values the config was rendered with.
	Config *WharfConfig
	// HTTPAddr, HTTPSAddr and AdminAddr are the listen addresses picked by
	// the harness (empty if the config does not use them).
	HTTPAddr, HTTPSAddr, AdminAddr string
}

// RegistryConfig is a minimal wharf config: one plain-HTTP registry site for
// host 127.0.0.1 with deletes allowed.
const RegistryConfig = `data_dir = "{{.DataDir}}"

[listen]
http  = "{{.HTTP}}"
https = ""
admin = ""

[[site]]
host    = "127.0.0.1"
backend = "registry"
tls     = "off"
[site.registry]
root   = "registry"
delete = true
`

// StartWharf renders tmpl (a text/template over *WharfConfig) into a config
// file in a temp folder, starts `wharf serve -config FILE`, waits until
// every listen address the template used accepts connections, and stops
// wharf when t ends (printing its log if t failed).
func StartWharf(t testing.TB, tmpl string, opts ...WharfOption) *Wharf {
	t.Helper()
	var o wharfOptions
	for _, opt := range opts {
		opt(&o)
	}
	bin := WharfBinary(t)
	dir := t.TempDir()
	cfg := &WharfConfig{
		Dir:     dir,
		DataDir: filepath.Join(dir, "data"),
		Vars:    o.vars,
		http:    FreeAddr(t),
		https:   FreeAddr(t),
		admin:   FreeAddr(t),
		used:    map[string]bool{},
	}
	for _, fixed := range []struct {
		dst *string
		v   string
	}{{&cfg.http, o.http}, {&cfg.https, o.https}, {&cfg.admin, o.admin}} {
		if fixed.v != "" {
			*fixed.dst = fixed.v
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		t.Fatalf("data dir: %v", err)
	}
	tp, err := template.New("config").Option("missingkey=error").Parse(tmpl)
	if err != nil {
		t.Fatalf("parse config template: %v", err)
	}
	var buf bytes.Buffer
	if err := tp.Execute(&buf, cfg); err != nil {
		t.Fatalf("render config template: %v", err)
	}
	path := filepath.Join(dir, "gateway.toml")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatalf("write config: %v", err)
	}
	w := &Wharf{ConfigPath: path, Config: cfg}
	var ready []string
	if cfg.used["http"] {
		w.HTTPAddr = cfg.http
		ready = append(ready, cfg.http)
	}
	if cfg.used["https"] {
		w.HTTPSAddr = cfg.https
		ready = append(ready, cfg.https)
	}
	if cfg.used["admin"] {
		w.AdminAddr = cfg.admin
		ready = append(ready, cfg.admin)
	}
	if o.ready != nil {
		ready = o.ready
	}
	t.Logf("wharf config %s:\n%s", path, buf.String())
	w.Process = &Process{
		Name:       "wharf",
		Path:       bin,
		Args:       []string{"serve", "-config", path},
		Dir:        dir,
		Env:        o.env,
		ReadyAddrs: ready,
		LogPath:    filepath.Join(dir, "wharf.log"),
	}
	StartProcess(t, w.Process)
	return w
}

// DefaultAddr is where `wharf serve` without a config listens.
const DefaultAddr = "127.0.0.1:5000"

// StartWharfNoConfig runs plain `wharf serve` in dir (an empty temp folder
// if dir is ""), waits for DefaultAddr and stops wharf when t ends. It ends
// the test through MissingPeer if the port is taken.
func StartWharfNoConfig(t testing.TB, dir string) *Wharf {
	t.Helper()
	if !PortFree(DefaultAddr) {
		MissingPeer(t, "%s is taken by another process; cannot test the no-config default", DefaultAddr)
	}
	bin := WharfBinary(t)
	if dir == "" {
		dir = t.TempDir()
	}
	w := &Wharf{HTTPAddr: DefaultAddr}
	w.Process = &Process{
		Name:       "wharf",
		Path:       bin,
		Args:       []string{"serve"},
		Dir:        dir,
		ReadyAddrs: []string{DefaultAddr},
		LogPath:    filepath.Join(t.TempDir(), "wharf.log"),
	}
	StartProcess(t, w.Process)
	return w
}

// Addr is the plain-HTTP address as a registry host ("127.0.0.1:port").
func (w *Wharf) Addr() string { return w.HTTPAddr }

// URL is the base URL of the plain-HTTP listener.
func (w *Wharf) URL() string { return "http://" + w.HTTPAddr }

// Reload sends SIGHUP. Callers wait for the effect they expect.
func (w *Wharf) Reload(t testing.TB) {
	t.Helper()
	w.Signal(t, syscall.SIGHUP)
}

// Name identifies the server in test names.
func (w *Wharf) Name() string { return "wharf" }
