package servers

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wharf-dev/wharf/bench/internal/procstat"
	"github.com/wharf-dev/wharf/bench/templates"
)

// startTimeout bounds how long a server may take to answer after start.
const startTimeout = 20 * time.Second

// Stack is a running set of processes serving one setup (for example
// nginx in front of docker-registry).
type Stack struct {
	Name  string
	Procs []*Proc
	Dir   string // temporary folder of the stack, removed by Stop
	// Admin is wharf's admin address ("" for other servers), for /metrics.
	Admin string
	// Upstream is the base URL of the docker-registry behind a proxy or
	// mirror ("" for other setups); its process is the stack's last.
	Upstream string
	// Borrowed: a view of processes another stack owns; Stop leaves
	// them and the folder alone.
	Borrowed bool
}

// Registry3Mirror starts docker-registry (access log on) and registry:3
// in proxy mode in front of it, both plain HTTP; base is registry:3's URL.
func (e *Env) Registry3Mirror(ctx context.Context) (s *Stack, base string, err error) {
	if e.Registry3Bin == "" {
		return nil, "", fmt.Errorf("registry:3 binary not built")
	}
	s, err = e.newStack("registry3-proxy")
	if err != nil {
		return nil, "", err
	}
	up, err := FreeAddr()
	if err != nil {
		return nil, "", s.fail(err)
	}
	if err := e.startDockerRegistryLog(ctx, s, up, true); err != nil {
		return nil, "", s.fail(err)
	}
	s.Upstream = "http://" + up
	addr, err := FreeAddr()
	if err != nil {
		return nil, "", s.fail(err)
	}
	cfg := filepath.Join(s.Dir, "registry3-proxy.yml")
	data := templates.Registry3Proxy{Root: filepath.Join(s.Dir, "data"), Addr: addr, Remote: s.Upstream}
	if err := templates.Write(cfg, "registry3-proxy.yml.tmpl", data); err != nil {
		return nil, "", s.fail(err)
	}
	p, err := Start("registry3", s.Dir, e.Registry3Bin, "serve", cfg)
	if err != nil {
		return nil, "", s.fail(err)
	}
	s.Procs = append([]*Proc{p}, s.Procs...)
	base = "http://" + addr
	if err := p.WaitHTTP(ctx, e.Poll, base+"/v2/", startTimeout); err != nil {
		return nil, "", s.fail(err)
	}
	return s, base, nil
}

// Group returns every process of the stack, nginx workers included.
func (s *Stack) Group() procstat.Group {
	var g procstat.Group
	for _, p := range s.Procs {
		g = append(g, p.Group()...)
	}
	return g
}

// Exited describes processes of the stack that have ended on their own,
// with the end of their logs ("" when all still run).
func (s *Stack) Exited() string {
	var out []string
	for _, p := range s.Procs {
		if p.Exited() {
			out = append(out, fmt.Sprintf("%s exited: %s", p.Name, oneLine(p.LogTail(3))))
		}
	}
	return strings.Join(out, "; ")
}

// Stop stops every process (front first) and removes the stack's folder
// unless keep is set.
func (s *Stack) Stop(keep bool) {
	if s.Borrowed {
		return
	}
	for _, p := range s.Procs {
		p.Stop()
	}
	if !keep && s.Dir != "" {
		_ = os.RemoveAll(s.Dir)
	}
}

// Env is what every starter needs: binaries and a client to poll with.
type Env struct {
	TempRoot          string // parent of each stack's folder
	WharfBin          string // wharf binary ("" = not built)
	DockerRegistryBin string // registry 2.8 binary
	Registry3Bin      string // registry:3 binary ("" = not built)
	ZotBin            string // zot binary ("" = not given; section B skips zot)
	NginxBin          string // nginx binary
	VersityGWBin      string // versitygw binary ("" = not installed; section D)
	Poll              *http.Client
}

func (e *Env) newStack(name string) (*Stack, error) {
	dir, err := os.MkdirTemp(e.TempRoot, name+"-")
	if err != nil {
		return nil, fmt.Errorf("%s: temp dir: %w", name, err)
	}
	return &Stack{Name: name, Dir: dir}, nil
}

// fail stops what was started and returns err.
func (s *Stack) fail(err error) error {
	s.Stop(false)
	return err
}

// StartDockerRegistry starts registry 2.8 on addr (plain HTTP, no auth),
// adding it to s.
func (e *Env) startDockerRegistry(ctx context.Context, s *Stack, addr string) error {
	return e.startDockerRegistryLog(ctx, s, addr, false)
}

func (e *Env) startDockerRegistryLog(ctx context.Context, s *Stack, addr string, accessLog bool) error {
	root := filepath.Join(s.Dir, "docker-registry-data")
	cfg := filepath.Join(s.Dir, "docker-registry.yml")
	if err := templates.Write(cfg, "docker-registry.yml.tmpl", templates.DockerRegistry{Root: root, Addr: addr, AccessLog: accessLog}); err != nil {
		return err
	}
	p, err := Start("docker-registry", s.Dir, e.DockerRegistryBin, "serve", cfg)
	if err != nil {
		return err
	}
	s.Procs = append(s.Procs, p)
	return p.WaitHTTP(ctx, e.Poll, "http://"+addr+"/v2/", startTimeout)
}

// DockerRegistry starts registry 2.8 alone; it answers on base.
func (e *Env) DockerRegistry(ctx context.Context) (s *Stack, base string, err error) {
	s, err = e.newStack("docker-registry")
	if err != nil {
		return nil, "", err
	}
	addr, err := FreeAddr()
	if err != nil {
		return nil, "", s.fail(err)
	}
	if err := e.startDockerRegistry(ctx, s, addr); err != nil {
		return nil, "", s.fail(err)
	}
	return s, "http://" + addr, nil
}

// Zot starts zot (built from its source by whoever runs the suite) with
// its own TLS and htpasswd on host's name; it answers on base.
func (e *Env) Zot(ctx context.Context, host, cert, key, htpasswd string) (s *Stack, base string, err error) {
	if e.ZotBin == "" {
		return nil, "", fmt.Errorf("no zot binary given: %w", ErrUnavailable)
	}
	s, err = e.newStack("zot")
	if err != nil {
		return nil, "", err
	}
	port, err := FreePort()
	if err != nil {
		return nil, "", s.fail(err)
	}
	cfg := filepath.Join(s.Dir, "zot.json")
	data := templates.Zot{Root: filepath.Join(s.Dir, "data"), Port: port, Cert: cert, Key: key, Htpasswd: htpasswd}
	if err := templates.Write(cfg, "zot.json.tmpl", data); err != nil {
		return nil, "", s.fail(err)
	}
	p, err := Start("zot", s.Dir, e.ZotBin, "serve", cfg)
	if err != nil {
		return nil, "", s.fail(err)
	}
	s.Procs = append(s.Procs, p)
	base = fmt.Sprintf("https://%s:%d", host, port)
	if err := p.WaitHTTP(ctx, e.Poll, base+"/v2/", startTimeout); err != nil {
		return nil, "", s.fail(err)
	}
	return s, base, nil
}

// Registry3 starts registry:3 with its own TLS and htpasswd on host's
// name; it answers on base.
func (e *Env) Registry3(ctx context.Context, host, cert, key, htpasswd string) (s *Stack, base string, err error) {
	if e.Registry3Bin == "" {
		return nil, "", fmt.Errorf("registry:3 binary not built")
	}
	s, err = e.newStack("registry3")
	if err != nil {
		return nil, "", err
	}
	port, err := FreePort()
	if err != nil {
		return nil, "", s.fail(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := filepath.Join(s.Dir, "registry3.yml")
	data := templates.Registry3{Root: filepath.Join(s.Dir, "data"), Addr: addr, Cert: cert, Key: key, Htpasswd: htpasswd}
	if err := templates.Write(cfg, "registry3.yml.tmpl", data); err != nil {
		return nil, "", s.fail(err)
	}
	p, err := Start("registry3", s.Dir, e.Registry3Bin, "serve", cfg)
	if err != nil {
		return nil, "", s.fail(err)
	}
	s.Procs = append(s.Procs, p)
	base = fmt.Sprintf("https://%s:%d", host, port)
	if err := p.WaitHTTP(ctx, e.Poll, base+"/v2/", startTimeout); err != nil {
		return nil, "", s.fail(err)
	}
	return s, base, nil
}

// startNginx writes conf from tmpl and starts nginx in the foreground.
func (e *Env) startNginx(ctx context.Context, s *Stack, tmpl string, data templates.Nginx, probe string) error {
	for _, d := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, d), 0o700); err != nil {
			return fmt.Errorf("nginx temp dir: %w", err)
		}
	}
	conf := filepath.Join(s.Dir, "nginx.conf")
	if err := templates.Write(conf, tmpl, data); err != nil {
		return err
	}
	p, err := Start("nginx", s.Dir, e.NginxBin, "-p", s.Dir, "-c", conf, "-g", "daemon off;")
	if err != nil {
		return err
	}
	// Front first: Stop walks Procs in order.
	s.Procs = append([]*Proc{p}, s.Procs...)
	if err := p.WaitHTTP(ctx, e.Poll, probe, startTimeout); err != nil {
		return err
	}
	// Workers fork after the master listens; give them a moment so that
	// Group() sees them.
	for i := 0; i < 250 && len(p.Group()) < 2; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// NginxStatic starts nginx serving the files of root (sendfile on), over
// TLS when cert is set; base is its URL.
func (e *Env) NginxStatic(ctx context.Context, root, host, cert, key string) (s *Stack, base string, err error) {
	name := "nginx-static"
	if cert != "" {
		name += "-tls"
	}
	s, err = e.newStack(name)
	if err != nil {
		return nil, "", err
	}
	port, err := FreePort()
	if err != nil {
		return nil, "", s.fail(err)
	}
	data := templates.Nginx{Dir: s.Dir, Listen: fmt.Sprintf("127.0.0.1:%d", port), TLS: cert != "", Cert: cert, Key: key, Root: root}
	base = fmt.Sprintf("http://%s:%d", host, port)
	if cert != "" {
		base = fmt.Sprintf("https://%s:%d", host, port)
	}
	if err := e.startNginx(ctx, s, "nginx-static.conf.tmpl", data, base+"/"); err != nil {
		return nil, "", s.fail(err)
	}
	return s, base, nil
}

// NginxRegistry starts docker-registry behind nginx in the classic setup
// (TLS, auth_basic); base is nginx's URL.
func (e *Env) NginxRegistry(ctx context.Context, host, cert, key, htpasswd string) (s *Stack, base string, err error) {
	s, err = e.newStack("nginx-registry")
	if err != nil {
		return nil, "", err
	}
	up, err := FreeAddr()
	if err != nil {
		return nil, "", s.fail(err)
	}
	if err := e.startDockerRegistry(ctx, s, up); err != nil {
		return nil, "", s.fail(err)
	}
	port, err := FreePort()
	if err != nil {
		return nil, "", s.fail(err)
	}
	data := templates.Nginx{Dir: s.Dir, Listen: fmt.Sprintf("127.0.0.1:%d", port), TLS: true, Cert: cert, Key: key, Htpasswd: htpasswd, Upstream: up}
	base = fmt.Sprintf("https://%s:%d", host, port)
	if err := e.startNginx(ctx, s, "nginx-registry.conf.tmpl", data, base+"/v2/"); err != nil {
		return nil, "", s.fail(err)
	}
	return s, base, nil
}

// WharfSpec says which wharf setup to start.
type WharfSpec struct {
	Backend   string // registry | proxy
	TLS       bool   // tls = "manual" on the https listener, else tls = "off" on http
	Host      string // site host name
	Cert, Key string
	Htpasswd  string // "" = no [auth]
	S3        *S3    // registry site on this S3 server; nil = local root
}

// Wharf starts wharf with one site (and docker-registry behind it for the
// proxy backend); base is the site's URL. An error wraps ErrUnavailable
// when wharf itself refused the config or did not come up, which is what
// happens while a feature has not landed.
func (e *Env) Wharf(ctx context.Context, spec WharfSpec) (s *Stack, base string, err error) {
	if e.WharfBin == "" {
		return nil, "", fmt.Errorf("wharf binary not built: %w", ErrUnavailable)
	}
	s, err = e.newStack("wharf-" + spec.Backend)
	if err != nil {
		return nil, "", err
	}
	site := templates.WharfSite{Host: spec.Host, Backend: spec.Backend, TLS: "off"}
	if spec.S3 != nil {
		site.S3 = &templates.S3{Endpoint: spec.S3.Endpoint, Bucket: spec.S3.Bucket, AccessKeyFile: spec.S3.AccessKeyFile, SecretKeyFile: spec.S3.SecretKeyFile}
	}
	if spec.TLS {
		site.TLS, site.Cert, site.Key = "manual", spec.Cert, spec.Key
	}
	if spec.Backend == "proxy" || spec.Backend == "cache" {
		up, err := FreeAddr()
		if err != nil {
			return nil, "", s.fail(err)
		}
		// a mirror's upstream logs its requests: the suite counts its GETs
		if err := e.startDockerRegistryLog(ctx, s, up, spec.Backend == "cache"); err != nil {
			return nil, "", s.fail(err)
		}
		site.Upstream = "http://" + up
		s.Upstream = site.Upstream
	}
	var addrs [3]string
	for i := range addrs {
		if addrs[i], err = FreeAddr(); err != nil {
			return nil, "", s.fail(err)
		}
	}
	data := templates.Wharf{DataDir: filepath.Join(s.Dir, "data"), HTTP: addrs[0], HTTPS: addrs[1], Admin: addrs[2], Htpasswd: spec.Htpasswd, Sites: []templates.WharfSite{site}}
	conf := filepath.Join(s.Dir, "gateway.toml")
	if err := templates.Write(conf, "wharf.toml.tmpl", data); err != nil {
		return nil, "", s.fail(err)
	}
	p, err := Start("wharf", s.Dir, e.WharfBin, "serve", "-config", conf)
	if err != nil {
		return nil, "", s.fail(err)
	}
	s.Procs = append([]*Proc{p}, s.Procs...)
	s.Admin = addrs[2]
	_, port, _ := net.SplitHostPort(addrs[0])
	base = "http://" + spec.Host + ":" + port
	if spec.TLS {
		_, port, _ = net.SplitHostPort(addrs[1])
		base = "https://" + spec.Host + ":" + port
	}
	if err := p.WaitHTTP(ctx, e.Poll, base+"/v2/", startTimeout); err != nil {
		return nil, "", s.fail(fmt.Errorf("%w: %w", ErrUnavailable, err))
	}
	return s, base, nil
}
