package cluster_test

import (
	"net"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/wharf-dev/wharf/acme/acmetest"
	"github.com/wharf-dev/wharf/e2e/harness"
)

// acmeConfig: one TLS site whose certificate comes from Pebble, with the
// ACME account and certificates in [cluster] shared_dir.
const acmeConfig = `data_dir = "{{.DataDir}}"

[listen]
http  = "{{.HTTP}}"
https = "{{.HTTPS}}"
admin = ""

[acme]
email   = "ops@registry.test"
ca      = "{{.Vars.CA}}"
ca_root = "{{.Vars.CARoot}}"

[cluster]
shared_dir = "{{.Vars.Shared}}"

[[site]]
host    = "registry.test"
backend = "registry"
[site.registry]
root = "registry"
`

func portOf(t *testing.T, addr string) int {
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

// TestOneCertificateOrder: two instances sharing shared_dir start one
// right after the other (both order in the background) against Pebble;
// Pebble validates on the first instance's ports only. Both end up
// serving the certificate and Pebble saw exactly one order: certmagic's
// lock in the shared directory let one instance order, and the other
// took the certificate from the shared storage.
func TestOneCertificateOrder(t *testing.T) {
	if addrs, err := net.LookupHost("registry.test"); err != nil || len(addrs) == 0 || addrs[0] != "127.0.0.1" {
		harness.MissingPeer(t, "registry.test does not resolve to 127.0.0.1 (%v %v): .ci/install adds it to /etc/hosts", addrs, err)
	}
	harness.Require(t, "pebble")
	httpA, httpsA := harness.FreeAddr(t), harness.FreeAddr(t)
	pebble := acmetest.StartPebble(t, portOf(t, httpA), portOf(t, httpsA))
	vars := map[string]any{"CA": pebble.DirURL, "CARoot": pebble.CAFile, "Shared": filepath.Join(t.TempDir(), "shared")}
	a := harness.StartWharf(t, acmeConfig, harness.WithAddrs(httpA, httpsA, ""), harness.WithVars(vars))
	b := harness.StartWharf(t, acmeConfig, harness.WithVars(vars))
	roots := pebble.Roots(t)
	ca := harness.WaitCertificate(t, a.HTTPSAddr, "registry.test", roots)
	cb := harness.WaitCertificate(t, b.HTTPSAddr, "registry.test", roots)
	if !ca.Equal(cb) {
		t.Errorf("the instances serve different certificates (serials %s and %s)", ca.SerialNumber, cb.SerialNumber)
	}
	if n := pebble.Orders(); n != 1 {
		t.Errorf("Pebble saw %d orders, want exactly 1", n)
	}
}
