package gateway

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/acme/acmetest"
	"github.com/wharf-dev/wharf/backend/proxy/proxytest"

	"github.com/wharf-dev/wharf/internal/testlog"
	"github.com/wharf-dev/wharf/internal/testpeer"
)

const pebbleTOML = `
data_dir = "%[1]s/data"
[listen]
http  = "%[2]s"
https = "%[3]s"
[acme]
email      = "ops@wharf.test"
ca         = "%[4]s"
ca_root    = "%[5]s"
challenges = ["%[6]s"]

[[site]]
host    = "registry.test"
backend = "proxy"
[site.proxy]
upstream = "%[7]s"

[[site]]
host    = "mirror.test"
backend = "proxy"
[site.proxy]
upstream = "%[7]s"
`

// pebbleGateway is an in-process gateway on fixed loopback ports, so it can
// be stopped and started again on the ports Pebble validates.
type pebbleGateway struct {
	t                   *testing.T
	g                   *Gateway
	httpAddr, httpsAddr string
	cancel              context.CancelFunc
	done                chan error
}

func servePebbleGateway(t *testing.T, cfgFile, httpAddr, httpsAddr string) *pebbleGateway {
	t.Helper()
	cfg, err := LoadConfig(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(context.Background(), cfg, testlog.New(t, zerolog.InfoLevel))
	if err != nil {
		t.Fatal(err)
	}
	var httpLn, httpsLn net.Listener
	for i := 0; ; i++ { // the ports of a stopped gateway may take a moment to free
		httpLn, err = net.Listen("tcp", httpAddr)
		if err == nil {
			httpsLn, err = net.Listen("tcp", httpsAddr)
			if err == nil {
				break
			}
			httpLn.Close()
		}
		if i > 100 {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pg := &pebbleGateway{t: t, g: g, httpAddr: httpAddr, httpsAddr: httpsAddr, cancel: cancel, done: make(chan error, 1)}
	go func() { pg.done <- g.Serve(ctx, httpLn, httpsLn, nil) }()
	for i := 0; !g.ready.Load(); i++ {
		if i > 500 {
			t.Fatal("gateway did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(pg.stop)
	return pg
}

func (pg *pebbleGateway) stop() {
	if pg.cancel == nil {
		return
	}
	pg.cancel()
	if err := <-pg.done; err != nil {
		pg.t.Errorf("serve: %v", err)
	}
	pg.cancel = nil
}

func (pg *pebbleGateway) waitCerts(hosts ...string) {
	pg.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for _, h := range hosts {
		for {
			pg.g.mu.Lock()
			m := pg.g.certs
			pg.g.mu.Unlock()
			if m != nil && m.HasCertificate(h) {
				break
			}
			if time.Now().After(deadline) {
				pg.t.Fatalf("no certificate for %s", h)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// curl runs curl against the gateway's https port with the name resolved
// to loopback and Pebble's root as the only trusted CA.
func curl(t *testing.T, rootFile, httpsAddr, host, path string, extra ...string) (string, error) {
	t.Helper()
	_, port, _ := net.SplitHostPort(httpsAddr)
	args := append([]string{"-sS", "--fail-with-body", "--cacert", rootFile,
		"--resolve", host + ":" + port + ":127.0.0.1",
		"-D", "-", "https://" + host + ":" + port + path}, extra...)
	out, err := exec.Command("curl", args...).CombinedOutput()
	return string(out), err
}

func resolvesToLoopback(host string) bool {
	addrs, err := net.LookupHost(host)
	return err == nil && len(addrs) > 0 && net.ParseIP(addrs[0]).IsLoopback()
}

// Pebble issues real certificates to the gateway for registry.test and
// mirror.test, with one challenge type at a time; curl, crane and skopeo
// verify them against Pebble's root and push/pull through them to Debian's
// docker-registry; a restart reuses the stored certificates (no new order)
// and a reload adds a site with its certificate.
func TestGatewayWithPebble(t *testing.T) {
	if testing.Short() {
		t.Skip("real ACME server test")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		testpeer.Missing(t, "curl not installed")
	}
	upstream := proxytest.StartDockerRegistry(t)
	for _, challenge := range []string{"http-01", "tls-alpn-01"} {
		t.Run(challenge, func(t *testing.T) {
			pc := startPebbleCase(t, challenge, upstream)
			pc.firstCerts(t)
			pc.realClients(t)
			pc.restartKeepsCerts(t)
			pc.reloadAddsSite(t)
		})
	}
}

// pebbleCase is one run of TestGatewayWithPebble: a Pebble answering with
// one challenge type and a gateway using it.
type pebbleCase struct {
	challenge, upstream   string
	dir, cfgFile, cfgText string
	rootFile              string
	httpAddr, httpsAddr   string
	httpsPort             int
	p                     *acmetest.Pebble
	pg                    *pebbleGateway
}

// startPebbleCase starts Pebble and a gateway with registry.test and
// mirror.test (tls = "acme") in front of upstream.
func startPebbleCase(t *testing.T, challenge, upstream string) *pebbleCase {
	pc := &pebbleCase{challenge: challenge, upstream: upstream, dir: t.TempDir()}
	httpPort := acmetest.FreePort(t)
	pc.httpsPort = acmetest.FreePort(t)
	pc.httpAddr, pc.httpsAddr = fmt.Sprintf("127.0.0.1:%d", httpPort), fmt.Sprintf("127.0.0.1:%d", pc.httpsPort)
	pc.p = acmetest.StartPebble(t, httpPort, pc.httpsPort)
	pc.cfgText = fmt.Sprintf(pebbleTOML, pc.dir, pc.httpAddr, pc.httpsAddr, pc.p.DirURL, pc.p.CAFile, challenge, upstream)
	pc.cfgFile = filepath.Join(pc.dir, "gateway.toml")
	if err := os.WriteFile(pc.cfgFile, []byte(pc.cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	pc.rootFile = filepath.Join(pc.dir, "pebble-root.pem")
	if err := os.WriteFile(pc.rootFile, pc.p.RootPEM(t), 0o644); err != nil {
		t.Fatal(err)
	}
	pc.pg = servePebbleGateway(t, pc.cfgFile, pc.httpAddr, pc.httpsAddr)
	return pc
}

// firstCerts: both sites get a certificate curl verifies, by one order
// each, validated with the configured challenge only.
func (pc *pebbleCase) firstCerts(t *testing.T) {
	pc.pg.waitCerts("registry.test", "mirror.test")
	for _, host := range []string{"registry.test", "mirror.test"} {
		out, err := curl(t, pc.rootFile, pc.httpsAddr, host, "/v2/")
		if err != nil || !strings.Contains(out, "200") || !strings.Contains(strings.ToLower(out), "docker-distribution-api-version: registry/2.0") {
			t.Fatalf("curl https://%s/v2/: %v\n%s", host, err, out)
		}
	}
	if got := pc.p.Orders(); got != 2 {
		t.Fatalf("pebble saw %d orders, want 2", got)
	}
	if httpUsed := strings.Contains(pc.p.Log(), "Attempting to validate w/ HTTP"); httpUsed != (pc.challenge == "http-01") {
		t.Fatalf("HTTP-01 validation used = %v with challenges = [%s]", httpUsed, pc.challenge)
	}
}

// realClients: crane pushes through one site and reads the digest back
// through both, skopeo verifies the chain against Pebble's root (needs the
// /etc/hosts entries).
func (pc *pebbleCase) realClients(t *testing.T) {
	if !resolvesToLoopback("registry.test") || !resolvesToLoopback("mirror.test") {
		t.Log("registry.test/mirror.test do not resolve to 127.0.0.1: crane/skopeo part skipped (add them to /etc/hosts)")
		return
	}
	dir := pc.dir
	crane := proxytest.CraneBinary(t)
	env := []string{"SSL_CERT_FILE=" + pc.rootFile, "HOME=" + dir}
	ref := fmt.Sprintf("registry.test:%d/team/app:v1", pc.httpsPort)
	layer := proxytest.RandomLayer(t, dir, 4<<20)
	proxytest.Run(t, env, crane, "append", "-f", layer, "-t", ref)
	d1 := proxytest.Run(t, env, crane, "digest", ref)
	d2 := proxytest.Run(t, env, crane, "digest", fmt.Sprintf("mirror.test:%d/team/app:v1", pc.httpsPort))
	if d1 != d2 || !strings.HasPrefix(d1, "sha256:") {
		t.Fatalf("digests through the two sites: %q %q", d1, d2)
	}
	if _, err := exec.LookPath("skopeo"); err != nil {
		return
	}
	certDir := filepath.Join(dir, "certs.d")
	_ = os.MkdirAll(certDir, 0o755)
	_ = os.WriteFile(filepath.Join(certDir, "ca.crt"), pc.p.RootPEM(t), 0o644)
	out := proxytest.Run(t, []string{"HOME=" + dir}, "skopeo", "inspect", "--cert-dir", certDir, "--format", "{{.Digest}}", "docker://"+ref)
	if out != d1 {
		t.Fatalf("skopeo digest %q, crane %q", out, d1)
	}
	// and without the root, verification fails
	if err := exec.Command("skopeo", "inspect", "docker://"+ref).Run(); err == nil {
		t.Fatal("skopeo accepted the certificate without Pebble's root")
	}
}

// restartKeepsCerts: a restart on the same data_dir places no new order.
func (pc *pebbleCase) restartKeepsCerts(t *testing.T) {
	orders := pc.p.Orders()
	pc.pg.stop()
	pc.pg = servePebbleGateway(t, pc.cfgFile, pc.httpAddr, pc.httpsAddr)
	pc.pg.waitCerts("registry.test", "mirror.test")
	if out, err := curl(t, pc.rootFile, pc.httpsAddr, "registry.test", "/v2/"); err != nil {
		t.Fatalf("after restart: %v\n%s", err, out)
	}
	if got := pc.p.Orders(); got != orders {
		t.Fatalf("restart placed %d new orders", got-orders)
	}
}

// reloadAddsSite: a reload that adds a site gets its certificate with one
// order; an unknown name never gets a certificate or an order.
func (pc *pebbleCase) reloadAddsSite(t *testing.T) {
	orders := pc.p.Orders()
	added := pc.cfgText + fmt.Sprintf("\n[[site]]\nhost = \"added.test\"\nbackend = \"proxy\"\n[site.proxy]\nupstream = %q\n", pc.upstream)
	if err := os.WriteFile(pc.cfgFile, []byte(added), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := pc.pg.g.ReloadFile(context.Background(), pc.cfgFile); err != nil {
		t.Fatal(err)
	}
	pc.pg.waitCerts("added.test")
	if out, err := curl(t, pc.rootFile, pc.httpsAddr, "added.test", "/v2/"); err != nil {
		t.Fatalf("added site: %v\n%s", err, out)
	}
	if got := pc.p.Orders(); got != orders+1 {
		t.Fatalf("reload placed %d orders, want 1", got-orders)
	}
	if out, err := curl(t, pc.rootFile, pc.httpsAddr, "stranger.test", "/v2/"); err == nil {
		t.Fatalf("stranger.test served:\n%s", out)
	}
	if got := pc.p.Orders(); got != orders+1 {
		t.Fatal("an unknown SNI caused an order")
	}
}
