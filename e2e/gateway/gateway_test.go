// Package gateway_test runs real clients against wharf as a TLS gateway
// with certificates from a real ACME server (Pebble): Docker logs in,
// pushes and pulls by host name; skopeo and go-containerregistry verify the
// certificate against Pebble's root and nothing else.
package gateway_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/wharf-dev/wharf/acme/acmetest"
	"github.com/wharf-dev/wharf/e2e/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

const gatewayConfig = `data_dir = "{{.DataDir}}"

[listen]
http  = "{{.HTTP}}"
https = "{{.HTTPS}}"
admin = ""

[acme]
email   = "ops@registry.test"
ca      = "{{.Vars.ca}}"
ca_root = "{{.Vars.caRoot}}"

[auth]
htpasswd = "{{.Vars.htpasswd}}"

[[site]]
host      = "registry.test"
backend   = "registry"
anonymous = "pull"
[site.registry]
root = "registry"
`

func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDockerThroughTLSGateway: wharf gets a certificate for registry.test
// from Pebble; docker logs in, pushes and pulls registry.test:PORT; an
// anonymous client pulls; skopeo verifies the certificate with Pebble's
// root only, and refuses it without.
func TestDockerThroughTLSGateway(t *testing.T) {
	if addrs, err := net.LookupHost("registry.test"); err != nil || len(addrs) == 0 || addrs[0] != "127.0.0.1" {
		harness.MissingPeer(t, "registry.test does not resolve to 127.0.0.1 (%v %v): .ci/install adds it to /etc/hosts", addrs, err)
	}
	harness.Require(t, "pebble")
	docker := harness.Docker(t)
	skopeo := harness.Skopeo(t)
	httpAddr, httpsAddr := harness.FreeAddr(t), harness.FreeAddr(t)
	pebble := acmetest.StartPebble(t, port(t, httpAddr), port(t, httpsAddr))

	dir := t.TempDir()
	htpasswd := filepath.Join(dir, "htpasswd")
	line, err := exec.Command(harness.Require(t, "htpasswd"), "-nbB", "alice", "alice-secret-1").Output()
	if err != nil {
		t.Fatalf("htpasswd: %v", err)
	}
	if err := os.WriteFile(htpasswd, line, 0o600); err != nil {
		t.Fatal(err)
	}
	w := harness.StartWharf(t, gatewayConfig,
		harness.WithAddrs(httpAddr, httpsAddr, ""),
		harness.WithVars(map[string]any{"ca": pebble.DirURL, "caRoot": pebble.CAFile, "htpasswd": htpasswd}))
	roots := pebble.Roots(t)
	leaf := harness.WaitCertificate(t, httpsAddr, "registry.test", roots)
	t.Logf("certificate for %v issued by %s", leaf.DNSNames, leaf.Issuer)

	host := "registry.test:" + strconv.Itoa(port(t, httpsAddr))
	img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 3, 512<<10)
	src := "wharf-e2e.test/gateway/app:v1"
	docker.Must(t, "load", "-i", harness.WriteDockerArchive(t, img, src))
	ref := host + "/team/app:v1"
	docker.Must(t, "tag", src, ref)

	// Not logged in: the push is refused.
	if out, err := docker.Run(t, "push", ref); err == nil {
		t.Fatalf("push without login succeeded:\n%s", out)
	}
	if out, err := harness.Login(t, docker, host, "alice", "alice-secret-1"); err != nil || !strings.Contains(out, "Login Succeeded") {
		t.Fatalf("docker login %s: %v\n%s", host, err, out)
	}
	docker.Must(t, "push", ref)

	// Verified TLS: go-containerregistry and skopeo with Pebble's root only.
	tlsOpt := remote.WithTransport(harness.TLSTransport(roots))
	pushed := harness.VerifyRemoteImage(t, ref, img, harness.Same{Config: true}, tlsOpt)
	certDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(certDir, "ca.crt"), pebble.RootPEM(t), 0o644); err != nil {
		t.Fatal(err)
	}
	want := harness.MustDigestOf(t, img.ConfigName)
	if got := strings.TrimSpace(skopeo.Must(t, "inspect", "--cert-dir", certDir, "--format", "{{.Digest}}", "docker://"+ref)); got != pushed.String() {
		t.Errorf("skopeo (verifying with Pebble's root) sees %s, pushed %s", got, pushed)
	}
	if out, err := skopeo.Run(t, "inspect", "docker://"+ref); err == nil {
		t.Errorf("skopeo accepted the certificate without Pebble's root:\n%s", out)
	}

	// Pull back by name: a fresh docker client without login (anonymous
	// pull) after the image was removed locally.
	docker.Must(t, "rmi", "-f", want.String())
	anon := harness.Docker(t)
	anon.Must(t, "pull", ref)
	if id := strings.TrimSpace(anon.Must(t, "image", "inspect", "--format", "{{.Id}}", ref)); id != want.String() {
		t.Errorf("pulled image ID %s, pushed %s", id, want)
	}

	// A restart keeps the certificate (no new order at Pebble).
	orders := pebble.Orders()
	w.Restart(t)
	harness.WaitCertificate(t, httpsAddr, "registry.test", roots)
	anon.Must(t, "pull", ref)
	if n := pebble.Orders(); n != orders {
		t.Errorf("Pebble saw %d new orders after a restart, want 0 (stored certificates reused)", n-orders)
	}
}
