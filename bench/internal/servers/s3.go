package servers

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/wharf-dev/wharf/bench/templates"
)

// S3 is a running versitygw (section D): the S3 server both wharf's S3
// site and registry:3's S3 driver use, started once for the section so
// neither setup's figures include it.
type S3 struct {
	*Stack
	Endpoint, Bucket     string
	AccessKey, SecretKey string
	// AccessKeyFile and SecretKeyFile hold the keys (for wharf).
	AccessKeyFile, SecretKeyFile string
}

// VersityGW starts versitygw over a temp folder with one bucket.
func (e *Env) VersityGW(ctx context.Context) (*S3, error) {
	if e.VersityGWBin == "" {
		return nil, fmt.Errorf("versitygw not installed (.ci/install)")
	}
	s, err := e.newStack("versitygw")
	if err != nil {
		return nil, err
	}
	g := &S3{Stack: s, Bucket: "bench", AccessKey: "bench-access", SecretKey: "bench-secret-0123456789"}
	root := filepath.Join(s.Dir, "s3")
	if err := os.MkdirAll(filepath.Join(root, g.Bucket), 0o755); err != nil {
		return nil, s.fail(err)
	}
	g.AccessKeyFile, g.SecretKeyFile = filepath.Join(s.Dir, "access"), filepath.Join(s.Dir, "secret")
	for f, v := range map[string]string{g.AccessKeyFile: g.AccessKey, g.SecretKeyFile: g.SecretKey} {
		if err := os.WriteFile(f, []byte(v+"\n"), 0o600); err != nil {
			return nil, s.fail(err)
		}
	}
	addr, err := FreeAddr()
	if err != nil {
		return nil, s.fail(err)
	}
	p, err := Start("versitygw", s.Dir, e.VersityGWBin, "--access", g.AccessKey, "--secret", g.SecretKey, "--port", addr, "posix", root)
	if err != nil {
		return nil, s.fail(err)
	}
	s.Procs = append(s.Procs, p)
	g.Endpoint = "http://" + addr
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return g, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, s.fail(fmt.Errorf("versitygw did not listen on %s: %w", addr, err))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Registry3S3 starts registry:3 with its S3 driver on g's bucket, plain
// HTTP, no auth.
func (e *Env) Registry3S3(ctx context.Context, g *S3) (s *Stack, base string, err error) {
	if e.Registry3Bin == "" {
		return nil, "", fmt.Errorf("registry:3 binary not built")
	}
	s, err = e.newStack("registry3-s3")
	if err != nil {
		return nil, "", err
	}
	addr, err := FreeAddr()
	if err != nil {
		return nil, "", s.fail(err)
	}
	cfg := filepath.Join(s.Dir, "registry3.yml")
	data := templates.Registry3S3{Addr: addr, Endpoint: g.Endpoint, Bucket: g.Bucket, AccessKey: g.AccessKey, SecretKey: g.SecretKey}
	if err := templates.Write(cfg, "registry3-s3.yml.tmpl", data); err != nil {
		return nil, "", s.fail(err)
	}
	p, err := Start("registry3", s.Dir, e.Registry3Bin, "serve", cfg)
	if err != nil {
		return nil, "", s.fail(err)
	}
	s.Procs = append(s.Procs, p)
	base = "http://" + addr
	if err := p.WaitHTTP(ctx, e.Poll, base+"/v2/", startTimeout); err != nil {
		return nil, "", s.fail(err)
	}
	return s, base, nil
}
