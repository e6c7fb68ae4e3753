package e2e_test

// Issue #3 with real parts: Pebble issues certificates to the wharf binary
// (HTTP-01 and TLS-ALPN-01), docker, crane, skopeo and curl push and pull
// through them by host name (curl, crane and skopeo verify against Pebble's
// root), a restart places no new order, SIGHUP adds a site with its
// certificate; the proxy site in front of Debian's docker-registry carries
// a 2 GiB layer in under 64 MiB of RSS; SIGTERM drains an upload.
//
// Needs in /etc/hosts: 127.0.0.1 registry.test mirror.test proxy.test
// (.ci/install adds them).

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/wharf-dev/wharf/acme/acmetest"
	"github.com/wharf-dev/wharf/e2e/harness"
)

// requireHosts ends the test (through harness.MissingPeer) unless the test
// host names resolve to loopback.
func requireHosts(t *testing.T, hosts ...string) {
	t.Helper()
	for _, h := range hosts {
		addrs, err := net.LookupHost(h)
		if err != nil || len(addrs) == 0 || !net.ParseIP(addrs[0]).IsLoopback() {
			harness.MissingPeer(t, "%s does not resolve to 127.0.0.1 (add \"127.0.0.1 %s\" to /etc/hosts; .ci/install does)", h, strings.Join(hosts, " "))
		}
	}
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// tlsTransport trusts only roots and dials every name to addr.
func tlsTransport(roots *x509.CertPool, addr string) *http.Transport {
	return &http.Transport{
		TLSClientConfig:    &tls.Config{RootCAs: roots},
		DisableCompression: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
}

const pebbleGatewayConfig = `data_dir = "{{.DataDir}}"

[listen]
http  = "{{.Vars.http}}"
https = "{{.Vars.https}}"
admin = ""

[log]
level = "info"

[acme]
email      = "ops@wharf.test"
ca         = "{{.Vars.ca}}"
ca_root    = "{{.Vars.ca_root}}"
challenges = ["{{.Vars.challenge}}"]

[[site]]
host    = "registry.test"
backend = "registry"
[site.registry]
delete = true

[[site]]
host    = "mirror.test"
backend = "proxy"
[site.proxy]
upstream = "{{.Vars.upstream}}"
`

func TestGatewayACMEWithPebble(t *testing.T) {
	requireHosts(t, "registry.test", "mirror.test", "proxy.test")
	acmetest.PebbleBinary(t)
	upstream := harness.StartDockerRegistry(t, "")
	for _, challenge := range []string{"http-01", "tls-alpn-01"} {
		t.Run(challenge, func(t *testing.T) {
			httpAddr, httpsAddr := harness.FreeAddr(t), harness.FreeAddr(t)
			httpsPort := portOf(t, httpsAddr)
			p := acmetest.StartPebble(t, portOf(t, httpAddr), httpsPort)
			rootPEM := p.RootPEM(t)
			dir := t.TempDir()
			rootFile := filepath.Join(dir, "pebble-root.pem")
			certDir := filepath.Join(dir, "certs.d")
			_ = os.MkdirAll(certDir, 0o755)
			for _, f := range []string{rootFile, filepath.Join(certDir, "ca.crt")} {
				if err := os.WriteFile(f, rootPEM, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			vars := map[string]any{"http": httpAddr, "https": httpsAddr, "ca": p.DirURL, "ca_root": p.CAFile,
				"challenge": challenge, "upstream": upstream.URL()}
			w := harness.StartWharf(t, pebbleGatewayConfig, harness.WithVars(vars), harness.WithReadyAddrs(httpAddr, httpsAddr))

			reg := fmt.Sprintf("registry.test:%d", httpsPort)
			mirror := fmt.Sprintf("mirror.test:%d", httpsPort)
			waitCert(t, rootFile, httpsAddr, "registry.test", "mirror.test")
			if got := p.Orders(); got != 2 {
				t.Fatalf("pebble saw %d orders, want 2", got)
			}
			if httpUsed := strings.Contains(p.Log(), "Attempting to validate w/ HTTP"); httpUsed != (challenge == "http-01") {
				t.Fatalf("HTTP-01 validation seen = %v with challenges = [%s]", httpUsed, challenge)
			}

			// crane pushes to the registry site and copies to the proxy site,
			// trusting only Pebble's root.
			crane := harness.Crane(t)
			crane.Env = append(crane.Env, "SSL_CERT_FILE="+rootFile)
			img := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 2, 1<<20)
			layout := harness.WriteOCILayout(t, "app", img)
			skopeo := harness.Skopeo(t)
			skopeo.Must(t, "copy", "--preserve-digests", "--dest-cert-dir", certDir, "oci:"+layout+":app", "docker://"+reg+"/team/app:v1")
			crane.Must(t, "copy", reg+"/team/app:v1", mirror+"/team/app:v1")
			want := harness.MustDigest(t, img)
			for _, ref := range []string{reg + "/team/app:v1", mirror + "/team/app:v1"} {
				got := harness.RemoteImage(t, ref, remote.WithTransport(tlsTransport(p.Roots(t), httpsAddr)))
				if err := harness.CompareImages(got, img, harness.Exact); err != nil {
					t.Fatalf("%s: %v", ref, err)
				}
				if d := strings.TrimSpace(crane.Must(t, "digest", ref)); d != want.String() {
					t.Fatalf("crane digest %s = %s, want %s", ref, d, want)
				}
			}
			// without Pebble's root the certificate is refused
			if _, err := harness.Crane(t).Run(t, "digest", reg+"/team/app:v1"); err == nil {
				t.Fatal("crane accepted the certificate without Pebble's root")
			}
			// curl: TLS 1.2+, HTTP/2, the API header
			out, err := exec.Command("curl", "-sS", "--http2", "--cacert", rootFile, "-o", "/dev/null",
				"-w", "%{http_version} %{http_code} %{ssl_verify_result}", "https://"+reg+"/v2/").CombinedOutput()
			if err != nil || string(out) != "2 200 0" {
				t.Fatalf("curl https://%s/v2/: %q %v", reg, out, err)
			}

			// docker by host name (it treats loopback names as insecure, so
			// this proves the protocol flow, the others the certificate)
			if challenge == "http-01" {
				docker := harness.Docker(t)
				dimg := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 1<<20)
				tag := reg + "/docker/app:" + challenge
				docker.Must(t, "load", "-i", harness.WriteDockerArchive(t, dimg, tag))
				docker.Must(t, "push", tag)
				docker.Must(t, "rmi", tag)
				docker.Must(t, "pull", tag)
				mtag := mirror + "/docker/app:" + challenge
				docker.Must(t, "tag", tag, mtag)
				docker.Must(t, "push", mtag)
				for _, ref := range []string{tag, mtag} {
					got := harness.RemoteImage(t, ref, remote.WithTransport(tlsTransport(p.Roots(t), httpsAddr)))
					if err := harness.CompareImages(got, dimg, harness.Same{Config: true}); err != nil {
						t.Fatalf("docker push %s: %v", ref, err)
					}
				}
			}

			// a restart reuses the stored certificates: no new order
			orders := p.Orders()
			w.Restart(t)
			waitCert(t, rootFile, httpsAddr, "registry.test", "mirror.test")
			if got := p.Orders(); got != orders {
				t.Fatalf("restart placed %d new orders", got-orders)
			}

			// SIGHUP with a new site: it gets its certificate
			cfg, err := os.ReadFile(w.ConfigPath)
			if err != nil {
				t.Fatal(err)
			}
			cfg = append(cfg, []byte(fmt.Sprintf("\n[[site]]\nhost = \"proxy.test\"\nbackend = \"proxy\"\n[site.proxy]\nupstream = %q\n", upstream.URL()))...)
			if err := os.WriteFile(w.ConfigPath, cfg, 0o644); err != nil {
				t.Fatal(err)
			}
			w.Signal(t, syscall.SIGHUP)
			waitCert(t, rootFile, httpsAddr, "proxy.test")
			if got := p.Orders(); got != orders+1 {
				t.Fatalf("reload placed %d orders, want 1", got-orders)
			}
			crane.Must(t, "digest", fmt.Sprintf("proxy.test:%d/team/app:v1", httpsPort))
			// an unknown name: no certificate, no order
			out, err = exec.Command("curl", "-sS", "--cacert", rootFile, "--resolve", fmt.Sprintf("stranger.test:%d:127.0.0.1", httpsPort),
				fmt.Sprintf("https://stranger.test:%d/v2/", httpsPort)).CombinedOutput()
			if err == nil {
				t.Fatalf("stranger.test answered: %s", out)
			}
			if got := p.Orders(); got != orders+1 {
				t.Fatal("an unknown server name caused an order")
			}
		})
	}
}

// waitCert waits until each host answers /v2/ over TLS verified against
// rootFile (certificates are obtained in the background).
func waitCert(t *testing.T, rootFile, httpsAddr string, hosts ...string) {
	t.Helper()
	pem, err := os.ReadFile(rootFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	c := &http.Client{Transport: tlsTransport(roots, httpsAddr), Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(2 * time.Minute)
	for _, h := range hosts {
		for {
			resp, err := c.Get(fmt.Sprintf("https://%s:%d/v2/", h, portOf(t, httpsAddr)))
			if err == nil {
				resp.Body.Close()
				if resp.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
					t.Fatalf("%s: no API version header", h)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no verified certificate for %s: %v", h, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

const proxyTLSConfig = `data_dir = "{{.DataDir}}"

[listen]
http  = "{{.HTTP}}"
https = "{{.HTTPS}}"
admin = ""
progress_timeout = "30s"

[log]
level = "warn"

[[site]]
host    = "mirror.test"
backend = "proxy"
tls     = "manual"
cert    = "{{.Vars.cert}}"
key     = "{{.Vars.key}}"
[site.proxy]
upstream = "{{.Vars.upstream}}"
`

// pattern is a cheap byte stream that does not repeat per MiB.
type pattern struct {
	block []byte
	off   int
	n     int64
}

func newPattern(n int64) *pattern {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return &pattern{block: b, n: n}
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.n == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	n := copy(b, p.block[p.off:])
	p.off = (p.off + n) % len(p.block)
	p.block[p.off] ^= byte(p.n)
	p.n -= int64(n)
	return n, nil
}

// throttled hands out at most chunk bytes per read, one read every gap.
type throttled struct {
	r     io.Reader
	gap   time.Duration
	chunk int
}

func (s *throttled) Read(p []byte) (int, error) {
	time.Sleep(s.gap)
	if len(p) > s.chunk {
		p = p[:s.chunk]
	}
	return s.r.Read(p)
}

// startUpload POSTs an upload and returns its location.
func startUpload(t *testing.T, c *http.Client, base, repo string) *url.URL {
	t.Helper()
	resp, err := c.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %d", resp.StatusCode)
	}
	return location(t, base, resp)
}

// location resolves a Location header, which must point at the gateway as
// the client sees it (scheme and host) when absolute.
func location(t *testing.T, base string, resp *http.Response) *url.URL {
	t.Helper()
	b, _ := url.Parse(base)
	l, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		t.Fatalf("Location %q: %v", resp.Header.Get("Location"), err)
	}
	if l.Host != "" && (l.Host != b.Host || l.Scheme != b.Scheme) {
		t.Fatalf("Location %q does not point at the gateway %s", l, base)
	}
	return b.ResolveReference(l)
}

// A 2 GiB layer goes up (chunked PATCH, then PUT with the digest, as docker
// does) and back down through the proxy site over TLS, intact, while
// wharf's peak RSS stays under 64 MiB. WHARF_BIG_LAYER_MIB changes the size.
func TestGatewayProxyBigLayer(t *testing.T) {
	if testing.Short() {
		t.Skip("2 GiB transfer")
	}
	requireHosts(t, "mirror.test")
	size := int64(2 << 30)
	if s := os.Getenv("WHARF_BIG_LAYER_MIB"); s != "" {
		n, _ := strconv.ParseInt(s, 10, 64)
		size = n << 20
	}
	upstream := harness.StartDockerRegistry(t, "")
	dir := t.TempDir()
	cert, key, leaf := acmetest.SelfSigned(t, dir, "", "mirror.test")
	w := harness.StartWharf(t, proxyTLSConfig, harness.WithVars(map[string]any{"cert": cert, "key": key, "upstream": upstream.URL()}))
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	c := &http.Client{Transport: tlsTransport(roots, w.HTTPSAddr)}
	base := fmt.Sprintf("https://mirror.test:%d", portOf(t, w.HTTPSAddr))

	cpu0, t0 := w.CPUTime(t), time.Now()
	loc := startUpload(t, c, base, "big/layer")
	h := sha256.New()
	req, _ := http.NewRequest(http.MethodPatch, loc.String(), io.TeeReader(newPattern(size), h))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PATCH: %d", resp.StatusCode)
	}
	digest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	u := location(t, base, resp)
	q := u.Query()
	q.Set("digest", digest)
	u.RawQuery = q.Encode()
	req, _ = http.NewRequest(http.MethodPut, u.String(), nil)
	if resp, err = c.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %d", resp.StatusCode)
	}
	cpuPush, tPush := w.CPUTime(t)-cpu0, time.Since(t0)

	cpu0, t0 = w.CPUTime(t), time.Now()
	resp, err = c.Get(base + "/v2/big/layer/blobs/" + digest)
	if err != nil {
		t.Fatal(err)
	}
	h = sha256.New()
	n, err := io.CopyBuffer(h, resp.Body, make([]byte, 256<<10))
	resp.Body.Close()
	if err != nil || n != size {
		t.Fatalf("pull: %d of %d bytes, %v", n, size, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		t.Fatalf("pulled %s, pushed %s", got, digest)
	}
	cpuPull, tPull := w.CPUTime(t)-cpu0, time.Since(t0)
	rss := w.PeakRSS(t)
	gib := float64(size) / (1 << 30)
	t.Logf("%.1f GiB through the proxy site over TLS (client, wharf and docker-registry on this machine): push %.0f MB/s, %.2f wharf CPU s/GiB; pull %.0f MB/s, %.2f wharf CPU s/GiB; wharf peak RSS %.1f MiB",
		gib, float64(size)/tPush.Seconds()/1e6, cpuPush.Seconds()/gib, float64(size)/tPull.Seconds()/1e6, cpuPull.Seconds()/gib, float64(rss)/(1<<20))
	if rss >= 64<<20 {
		t.Fatalf("wharf peak RSS %.1f MiB, want < 64 MiB", float64(rss)/(1<<20))
	}
}

const edgesConfig = `data_dir = "{{.DataDir}}"

[listen]
http  = "{{.HTTP}}"
https = "{{.HTTPS}}"
admin = ""

[auth]
htpasswd = "{{.Vars.htpasswd}}"

[[site]]
host    = "registry.test"
backend = "registry"
tls     = "manual"
cert    = "{{.Vars.cert}}"
key     = "{{.Vars.key}}"
auth    = "basic"

[[site]]
host    = "mirror.test"
backend = "proxy"
tls     = "manual"
cert    = "{{.Vars.cert}}"
key     = "{{.Vars.key}}"
auth    = "basic"
[site.proxy]
upstream = "{{.Vars.dead}}"

[[policy]]
users = ["alice"]
allow = ["pull", "push"]
`

// The redirect keeps a POST a POST, the API header is on 401/404/502
// answers, an unknown or missing SNI is refused, plain HTTP on the https
// port gets a clear 400, SIGHUP with a broken file keeps serving, SIGTERM
// lets an upload in flight finish and exits 0.
func TestGatewayEdgesAndSignals(t *testing.T) {
	requireHosts(t, "registry.test", "mirror.test")
	harness.Require(t, "curl")
	dir := t.TempDir()
	cert, key, _ := acmetest.SelfSigned(t, dir, "", "registry.test", "mirror.test")
	htpasswd := filepath.Join(dir, "htpasswd")
	cmd := exec.Command(harness.WharfBinary(t), "passwd", "alice")
	cmd.Stdin = strings.NewReader("secret\n")
	line, err := cmd.Output()
	if err != nil {
		t.Fatalf("wharf passwd: %v", err)
	}
	if err := os.WriteFile(htpasswd, line, 0o600); err != nil {
		t.Fatal(err)
	}
	dead := "http://" + harness.FreeAddr(t)
	w := harness.StartWharf(t, edgesConfig, harness.WithVars(map[string]any{"cert": cert, "key": key, "htpasswd": htpasswd, "dead": dead}))
	httpsPort, httpPort := portOf(t, w.HTTPSAddr), portOf(t, w.HTTPAddr)
	reg := fmt.Sprintf("registry.test:%d", httpsPort)
	curl := func(args ...string) (string, error) {
		out, err := exec.Command("curl", append([]string{"-sS", "--cacert", cert}, args...)...).CombinedOutput()
		return string(out), err
	}

	// 308 from http, and the POST stays a POST (202 from the registry)
	out, err := curl("-L", "--location-trusted", "-u", "alice:secret", "-X", "POST", "-o", "/dev/null", "-w", "%{http_code} %{num_redirects} %{url_effective}",
		fmt.Sprintf("http://registry.test:%d/v2/edge/blobs/uploads/", httpPort))
	if err != nil || !strings.HasPrefix(out, "202 1 https://registry.test:") {
		t.Fatalf("POST through the redirect: %q %v", out, err)
	}
	out, _ = curl("-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", fmt.Sprintf("http://Registry.TEST:%d/v2/x?a=b", httpPort))
	if want := fmt.Sprintf("308 https://registry.test:%d/v2/x?a=b", httpsPort); out != want {
		t.Fatalf("redirect %q, want %q", out, want)
	}

	// the API header on error answers
	for _, tc := range []struct {
		url, user string
		status    string
	}{
		{"https://" + reg + "/v2/", "alice:wrong", "401"},
		{"https://" + reg + "/v2/edge/manifests/missing", "alice:secret", "404"},
		{fmt.Sprintf("https://mirror.test:%d/v2/", httpsPort), "alice:secret", "502"},
	} {
		args := []string{"-D", "-", "-o", "/dev/null", tc.url}
		if tc.user != "" {
			args = append([]string{"-u", tc.user}, args...)
		}
		out, _ := curl(args...)
		if !strings.Contains(out, " "+tc.status+" ") && !strings.Contains(out, " "+tc.status+"\r") {
			t.Fatalf("%s: want %s, got\n%s", tc.url, tc.status, out)
		}
		if !strings.Contains(strings.ToLower(out), "docker-distribution-api-version: registry/2.0") {
			t.Fatalf("%s (%s): no API version header\n%s", tc.url, tc.status, out)
		}
	}

	// unknown SNI and no SNI: the handshake fails
	if out, err := curl("--resolve", fmt.Sprintf("stranger.test:%d:127.0.0.1", httpsPort), fmt.Sprintf("https://stranger.test:%d/v2/", httpsPort)); err == nil {
		t.Fatalf("unknown SNI answered: %s", out)
	}
	if out, err := curl("-k", fmt.Sprintf("https://127.0.0.1:%d/v2/", httpsPort)); err == nil {
		t.Fatalf("no SNI answered: %s", out)
	}
	// plain HTTP on the https port
	out, _ = curl("-o", "/dev/null", "-w", "%{http_code}", fmt.Sprintf("http://registry.test:%d/v2/", httpsPort))
	if out != "400" {
		t.Fatalf("plain HTTP to the https port: %q", out)
	}

	// an upload in flight through a broken reload and SIGTERM
	leaf, _ := os.ReadFile(cert)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(leaf)
	c := &http.Client{Transport: basicAuth{tlsTransport(roots, w.HTTPSAddr), "alice", "secret"}}
	base := "https://" + reg
	loc := startUpload(t, c, base, "slow/layer")
	const slowSize = 8 << 20
	slow := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPatch, loc.String(), &throttled{r: newPattern(slowSize), gap: 20 * time.Millisecond, chunk: 256 << 10})
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				err = fmt.Errorf("PATCH: %d", resp.StatusCode)
			}
		}
		slow <- err
	}()
	time.Sleep(500 * time.Millisecond)
	good, _ := os.ReadFile(w.ConfigPath)
	if err := os.WriteFile(w.ConfigPath, []byte("[listen\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.Signal(t, syscall.SIGHUP)
	for i := 0; !strings.Contains(w.Log(), "reload rejected"); i++ {
		if i > 400 {
			t.Fatal("a broken config on SIGHUP was not reported")
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = os.WriteFile(w.ConfigPath, good, 0o644)
	if out, err := curl("-u", "alice:secret", "-o", "/dev/null", "-w", "%{http_code}", "https://"+reg+"/v2/"); err != nil || out != "200" {
		t.Fatalf("after a rejected reload: %q %v", out, err)
	}
	w.Signal(t, syscall.SIGTERM)
	if err := <-slow; err != nil {
		t.Fatalf("upload in flight during SIGHUP and SIGTERM: %v", err)
	}
	if err := w.Stop(t); err != nil {
		t.Fatalf("wharf did not exit cleanly after SIGTERM: %v", err)
	}
}

// basicAuth adds a login to every request.
type basicAuth struct {
	rt         http.RoundTripper
	user, pass string
}

func (b basicAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.SetBasicAuth(b.user, b.pass)
	return b.rt.RoundTrip(r)
}
