package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkProxyTLS measures a 256 MiB download and upload through the
// https listener and the proxy backend to an in-memory upstream (the
// upstream's cost is tiny, so the profile shows the gateway's own).
func BenchmarkProxyTLS(b *testing.B) {
	const size = 256 << 20
	block := bytes.Repeat([]byte("wharf-bench-data"), 1<<16) // 1 MiB
	u := newUpstream(b)
	u.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.Header().Set("Content-Length", strconv.Itoa(size))
			for i := 0; i < size/len(block); i++ {
				if _, err := w.Write(block); err != nil {
					return
				}
			}
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Got", strconv.FormatInt(n, 10))
		w.WriteHeader(http.StatusAccepted)
	})
	tg := startGateway(b, u.URL, baseTOML)
	for _, h2 := range []bool{false, true} {
		name := map[bool]string{false: "h1", true: "h2"}[h2]
		c := tg.client(h2)
		b.Run("pull-"+name, func(b *testing.B) {
			b.SetBytes(size)
			buf := make([]byte, 256<<10)
			for i := 0; i < b.N; i++ {
				resp, err := c.Get(tg.httpsURL("registry.test", "/v2/a/blobs/sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"))
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.CopyBuffer(io.Discard, resp.Body, buf)
				resp.Body.Close()
				if n != size {
					b.Fatalf("got %d", n)
				}
			}
		})
		b.Run("push-"+name, func(b *testing.B) {
			b.SetBytes(size)
			for i := 0; i < b.N; i++ {
				req, _ := http.NewRequest(http.MethodPatch, tg.httpsURL("registry.test", "/v2/a/blobs/uploads/1"), io.LimitReader(&repeat{block: block}, size))
				resp, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				if resp.Header.Get("X-Got") != strconv.Itoa(size) {
					b.Fatalf("upstream got %s", resp.Header.Get("X-Got"))
				}
			}
		})
	}
}

type repeat struct {
	block []byte
	off   int
}

func (r *repeat) Read(p []byte) (int, error) {
	n := copy(p, r.block[r.off:])
	r.off = (r.off + n) % len(r.block)
	return n, nil
}

// BenchmarkRegistryTLSPull pulls a 256 MiB blob from the registry site
// over TLS (HTTP/1.1): the listener's and TLS costs per pulled GiB.
func BenchmarkRegistryTLSPull(b *testing.B) {
	const size = 256 << 20
	tg := startGateway(b, "http://unused.invalid", registryTOML)
	c := tg.client(false)
	base := tg.httpsURL("registry.test", "")
	resp, err := c.Post(base+"/v2/b/blobs/uploads/", "", nil)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = base + loc
	}
	h := sha256.New()
	data := io.TeeReader(io.LimitReader(&repeat{block: bytes.Repeat([]byte("wharf-bench-data"), 1<<16)}, size), h)
	req, _ := http.NewRequest(http.MethodPatch, loc, data)
	resp, err = c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	digest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	loc = resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = base + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, _ = http.NewRequest(http.MethodPut, loc+sep+"digest="+digest, nil)
	resp, err = c.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		b.Fatalf("PUT: %v %v", resp.Status, err)
	}
	resp.Body.Close()
	b.SetBytes(size)
	b.ResetTimer()
	buf := make([]byte, 256<<10)
	for i := 0; i < b.N; i++ {
		resp, err := c.Get(base + "/v2/b/blobs/" + digest)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.CopyBuffer(io.Discard, resp.Body, buf)
		resp.Body.Close()
		if n != size {
			b.Fatalf("got %d", n)
		}
	}
}

const registryTOML = `
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
`

// BenchmarkRegistryTLSPush pushes 256 MiB blobs to the registry site over
// TLS (HTTP/1.1, one PATCH then PUT, as docker does).
func BenchmarkRegistryTLSPush(b *testing.B) {
	const size = 256 << 20
	tg := startGateway(b, "http://unused.invalid", registryTOML)
	c := tg.client(false)
	base := tg.httpsURL("registry.test", "")
	block := bytes.Repeat([]byte("wharf-bench-data"), 1<<16)
	b.SetBytes(size)
	for i := 0; i < b.N; i++ {
		resp, err := c.Post(base+"/v2/p/blobs/uploads/", "", nil)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if !strings.HasPrefix(loc, "http") {
			loc = base + loc
		}
		// a different blob each round
		block[0] = byte(i)
		req, _ := http.NewRequest(http.MethodPatch, loc, io.LimitReader(&repeat{block: block}, size))
		resp, err = c.Do(req)
		if err != nil || resp.StatusCode != http.StatusAccepted {
			b.Fatalf("PATCH: %v %v", resp.Status, err)
		}
		resp.Body.Close()
	}
}
