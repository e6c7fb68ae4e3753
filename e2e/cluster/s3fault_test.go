package cluster_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// s3Faults is an HTTP proxy in front of versitygw that injects what
// versitygw itself never does, on GETs of blob objects only (keys with
// "/blobs/" in them): 503 SlowDown answers, and bodies cut off (the
// connection closed) after a number of bytes, short of their
// Content-Length. Everything else passes untouched, Host header
// included (S3 signatures cover it).
type s3Faults struct {
	slowDown atomic.Int32 // blob GETs still to refuse; <0: refuse all
	refused  atomic.Int32
	cutAfter atomic.Int64 // >0: blob GET bodies end after this many bytes
	cuts     atomic.Int32
	proxy    *httputil.ReverseProxy
}

func newS3Faults(t *testing.T, endpoint string) (*s3Faults, *httptest.Server) {
	t.Helper()
	target, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	f := &s3Faults{}
	f.proxy = &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target)
		pr.Out.Host = pr.In.Host
	}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *s3Faults) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	blobGet := r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/")
	if blobGet {
		if n := f.slowDown.Load(); n < 0 || n > 0 && f.slowDown.Add(-1) >= 0 {
			f.refused.Add(1)
			body := `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`
			w.Header().Set("Content-Type", "application/xml")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, body)
			return
		}
		if cut := f.cutAfter.Load(); cut > 0 {
			w = &cutWriter{ResponseWriter: w, left: cut, f: f}
		}
	}
	f.proxy.ServeHTTP(w, r)
}

// cutWriter passes the first left body bytes and then aborts the
// handler, which makes net/http close the connection.
type cutWriter struct {
	http.ResponseWriter
	left int64
	f    *s3Faults
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if int64(len(p)) >= c.left {
		c.ResponseWriter.Write(p[:c.left])
		c.ResponseWriter.(http.Flusher).Flush()
		c.f.cuts.Add(1)
		panic(http.ErrAbortHandler)
	}
	c.left -= int64(len(p))
	return c.ResponseWriter.Write(p)
}

// startWharfOnS3 starts wharf whose S3 endpoint is endpoint (versitygw
// or a fault proxy in front of it), with gw's credentials.
func startWharfOnS3(t *testing.T, gw *harness.VersityGW, endpoint string) *harness.Wharf {
	t.Helper()
	dir := t.TempDir()
	vars := map[string]any{"bucket": bucket, "endpoint": endpoint,
		"accessFile": filepath.Join(dir, "access"), "secretFile": filepath.Join(dir, "secret")}
	for f, v := range map[string]string{"access": gw.AccessKey, "secret": gw.SecretKey} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return harness.StartWharf(t, harness.S3Config, harness.WithVars(vars))
}

// get fetches a blob with a plain Go client and returns the status, the
// announced length, the bytes that came and the read error.
func get(t *testing.T, base, path string, h http.Header) (status int, length int64, body []byte, rerr error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	c := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, rerr = io.ReadAll(resp.Body)
	return resp.StatusCode, resp.ContentLength, body, rerr
}

// TestS3FaultsDuringPull: S3 faults while blobs are pulled through wharf
// (issue #15). A few 503 SlowDown answers are retried and the pull gets
// the blob; an S3 that keeps refusing gives the client a clean 503 with
// the distribution error JSON, only after the retries; an S3 connection
// cut mid-blob fails the pull short of its Content-Length, for a whole
// blob and for a Range, and never delivers wrong bytes.
func TestS3FaultsDuringPull(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	f, proxy := newS3Faults(t, gw.Endpoint)
	w := startWharfOnS3(t, gw, proxy.URL)
	base := "http://" + w.HTTPAddr
	raw := harness.NewRawClient(base)

	data := make([]byte, 24<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	desc := raw.PushBlob(t, "faults/app", "application/octet-stream", data)
	path := "/v2/faults/app/blobs/" + desc.Digest.String()

	t.Run("slowdown retried", func(t *testing.T) {
		f.refused.Store(0)
		f.slowDown.Store(3)
		defer f.slowDown.Store(0)
		status, _, body, err := get(t, base, path, nil)
		if status != http.StatusOK || err != nil || !bytes.Equal(body, data) {
			t.Fatalf("pull through 3x SlowDown: %d, %d bytes, %v", status, len(body), err)
		}
		if n := f.refused.Load(); n != 3 {
			t.Fatalf("%d GETs refused, want 3", n)
		}
	})

	t.Run("slowdown persists", func(t *testing.T) {
		f.refused.Store(0)
		f.slowDown.Store(-1)
		defer f.slowDown.Store(0)
		status, _, body, err := get(t, base, path, nil)
		if err != nil {
			t.Fatal(err)
		}
		var e struct {
			Errors []struct{ Code, Message string }
		}
		if status != http.StatusServiceUnavailable || json.Unmarshal(body, &e) != nil || len(e.Errors) != 1 || e.Errors[0].Code != "UNAVAILABLE" {
			t.Fatalf("want 503 UNAVAILABLE JSON, got %d %s", status, body)
		}
		// minio-go tries 10 times; the direct path asks once before.
		if n := f.refused.Load(); n < 5 {
			t.Fatalf("only %d GETs refused before the client got its answer: not retried", n)
		}
		t.Logf("503 after %d refused GETs: %s", f.refused.Load(), bytes.TrimSpace(body))
	})

	for _, tc := range []struct {
		name  string
		rng   string
		start int
	}{
		{"cut whole blob", "", 0},
		{"cut range", "bytes=1000-", 1000},
		{"cut range at 8 MiB", fmt.Sprintf("bytes=%d-", 8<<20), 8 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.cuts.Store(0)
			f.cutAfter.Store(5<<20 + 123)
			defer f.cutAfter.Store(0)
			var h http.Header
			want := http.StatusOK
			if tc.rng != "" {
				h = http.Header{"Range": {tc.rng}}
				want = http.StatusPartialContent
			}
			status, length, body, err := get(t, base, path, h)
			if status != want || length != int64(len(data)-tc.start) {
				t.Fatalf("status %d, Content-Length %d; want %d, %d", status, length, want, len(data)-tc.start)
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("read of a pull whose S3 connection was cut: %d bytes, error %v; want unexpected EOF", len(body), err)
			}
			if len(body) >= len(data)-tc.start || !bytes.Equal(body, data[tc.start:tc.start+len(body)]) {
				t.Fatalf("cut pull delivered %d bytes that are not the blob's", len(body))
			}
			if f.cuts.Load() == 0 {
				t.Fatal("the proxy cut nothing")
			}
		})
	}

	t.Run("whole after faults", func(t *testing.T) {
		status, _, body, err := get(t, base, path, nil)
		if status != http.StatusOK || err != nil || !bytes.Equal(body, data) {
			t.Fatalf("pull: %d, %d bytes, %v", status, len(body), err)
		}
		status, _, body, err = get(t, base, path, http.Header{"Range": {"bytes=100-199"}})
		if status != http.StatusPartialContent || err != nil || !bytes.Equal(body, data[100:200]) {
			t.Fatalf("range pull: %d, %d bytes, %v", status, len(body), err)
		}
	})

	// crane, a real client, notices the cut too (digest or length).
	t.Run("crane notices a cut", func(t *testing.T) {
		crane := harness.Crane(t)
		ref := w.HTTPAddr + "/faults/app@" + desc.Digest.String()
		if out, err := crane.Run(t, "blob", "--insecure", ref); err != nil || out != string(data) {
			t.Fatalf("crane blob without faults: %d bytes, %v", len(out), err)
		}
		f.cutAfter.Store(1 << 20)
		defer f.cutAfter.Store(0)
		out, err := crane.Run(t, "blob", "--insecure", ref)
		if err == nil {
			t.Fatalf("crane blob of a cut pull succeeded (%d bytes)", len(out))
		}
	})
}

// TestS3StartupErrors: `wharf serve` with a wrong bucket, secret or
// access key refuses to start and says which.
func TestS3StartupErrors(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	bin := harness.WharfBinary(t)
	for _, tc := range []struct {
		name, bucket, access, secret, want string
	}{
		{"no such bucket", "missing-bucket", gw.AccessKey, gw.SecretKey, "does not exist (wharf does not create buckets)"},
		{"wrong secret", bucket, gw.AccessKey, "not-the-secret", "secret key is wrong"},
		{"unknown access key", bucket, "nobody", gw.SecretKey, "access key is not known"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write := func(name, v string) string {
				p := filepath.Join(dir, name)
				if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				return p
			}
			cfg := fmt.Sprintf(`data_dir = %q
[listen]
http  = %q
https = ""
[[site]]
host    = "127.0.0.1"
backend = "registry"
tls     = "off"
[site.registry]
storage = "s3"
[site.registry.s3]
bucket          = %q
endpoint        = %q
path_style      = true
access_key_file = %q
secret_key_file = %q
`, filepath.Join(dir, "data"), harness.FreeAddr(t), tc.bucket, gw.Endpoint, write("access", tc.access), write("secret", tc.secret))
			path := write("gateway.toml", cfg)
			cmd := exec.Command(bin, "serve", "-config", path)
			cmd.Dir = dir
			done := make(chan struct{})
			var out []byte
			var err error
			go func() { out, err = cmd.CombinedOutput(); close(done) }()
			select {
			case <-done:
			case <-time.After(2 * time.Minute):
				cmd.Process.Kill()
				<-done
				t.Fatalf("wharf serve with a broken S3 config kept running: %s", out)
			}
			if err == nil {
				t.Fatalf("wharf serve exited 0: %s", out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("wharf serve said %q; want it to say %q", out, tc.want)
			}
		})
	}
}
