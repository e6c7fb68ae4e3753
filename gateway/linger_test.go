package gateway

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/internal/testpeer"
)

const lingerTOML = `
data_dir = "%[1]s/data"
[listen]
http  = "127.0.0.1:0"
https = "127.0.0.1:0"
[[site]]
host    = "registry.test"
backend = "registry"
tls     = "manual"
cert    = "%[1]s/registry.test-cert.pem"
key     = "%[1]s/registry.test-key.pem"
[[site]]
host    = "plain.test"
backend = "registry"
tls     = "off"
`

// bigManifest is 5 MiB of JSON: over the 4 MiB manifest limit.
func bigManifest() []byte {
	b := bytes.Repeat([]byte(" "), 5<<20)
	b[0], b[len(b)-1] = '{', '}'
	return b
}

// A client that writes its whole oversize manifest before reading gets
// the 413 with the distribution spec's error JSON, and (the body being
// drained) its connection stays usable.
func TestOversizeBodyGets413(t *testing.T) {
	tg := startGateway(t, "http://unused.invalid", lingerTOML)
	body := bigManifest()
	for _, tc := range []struct {
		name    string
		tls     bool
		chunked bool
	}{
		{"http content-length", false, false},
		{"http chunked", false, true},
		{"tls content-length", true, false},
		{"tls chunked", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host, addr := "plain.test", tg.httpAddr
			var c net.Conn
			var err error
			if tc.tls {
				host, addr = "registry.test", tg.httpsAddr
				c, err = tls.Dial("tcp", addr, &tls.Config{RootCAs: tg.roots, ServerName: host, NextProtos: []string{"http/1.1"}})
			} else {
				c, err = net.Dial("tcp", addr)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * time.Minute)) // only ends a hung test
			var req bytes.Buffer
			fmt.Fprintf(&req, "PUT /v2/big/manifests/latest HTTP/1.1\r\nHost: %s\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n", host)
			if tc.chunked {
				req.WriteString("Transfer-Encoding: chunked\r\n\r\n")
				for p := body; len(p) > 0; {
					n := min(len(p), 64<<10)
					fmt.Fprintf(&req, "%x\r\n%s\r\n", n, p[:n])
					p = p[n:]
				}
				req.WriteString("0\r\n\r\n")
			} else {
				fmt.Fprintf(&req, "Content-Length: %d\r\n\r\n", len(body))
				req.Write(body)
			}
			// the whole request first, as Python's http.client does
			if _, err := c.Write(req.Bytes()); err != nil {
				t.Fatalf("writing the body: %v (the server did not take it)", err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			var e struct {
				Errors []struct{ Code, Message string }
			}
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
				t.Fatalf("error body: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge || len(e.Errors) != 1 || e.Errors[0].Code != "SIZE_INVALID" {
				t.Fatalf("%s %+v, want 413 SIZE_INVALID", resp.Status, e)
			}
			// the body was drained: the connection serves the next request
			fmt.Fprintf(c, "GET /v2/ HTTP/1.1\r\nHost: %s\r\n\r\n", host)
			resp, err = http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("next request on the same connection: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("next request: %s", resp.Status)
			}
		})
	}
}

const pyPut = `
import http.client, json, socket, ssl, sys
port, tls, cafile, host = int(sys.argv[1]), sys.argv[2] == "tls", sys.argv[3], sys.argv[4]
body = b"{" + b" " * ((5 << 20) - 2) + b"}"
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
sock = socket.create_connection(("127.0.0.1", port), timeout=120)
if tls:
    ctx = ssl.create_default_context(cafile=cafile)
    sock = ctx.wrap_socket(sock, server_hostname=host)
conn.sock = sock
conn.request("PUT", "/v2/py/manifests/latest", body=body,
             headers={"Host": host, "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
resp = conn.getresponse()
print(json.dumps({"status": resp.status, "body": json.loads(resp.read())}))
`

// The same with Python's http.client, which sends the whole body before
// it looks at the answer.
func TestOversizeBodyPython(t *testing.T) {
	py := testpeer.Need(t, "python3", "apt-get install python3")
	tg := startGateway(t, "http://unused.invalid", lingerTOML)
	script := filepath.Join(t.TempDir(), "put.py")
	if err := os.WriteFile(script, []byte(pyPut), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ mode, host, addr string }{
		{"plain", "plain.test", tg.httpAddr},
		{"tls", "registry.test", tg.httpsAddr},
	} {
		_, port, _ := net.SplitHostPort(tc.addr)
		out, err := exec.Command(py, script, port, tc.mode, filepath.Join(tg.certDir, "registry.test-cert.pem"), tc.host).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: python: %v\n%s", tc.mode, err, out)
		}
		var got struct {
			Status int
			Body   struct {
				Errors []struct{ Code string }
			}
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%s: %v: %s", tc.mode, err, out)
		}
		if got.Status != 413 || len(got.Body.Errors) != 1 || got.Body.Errors[0].Code != "SIZE_INVALID" {
			t.Fatalf("%s: python got %s", tc.mode, strings.TrimSpace(string(out)))
		}
	}
}
