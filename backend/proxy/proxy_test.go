package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/internal/testlog"
)

func TestParseUpstream(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string
		wantErr string
	}{
		{"http://127.0.0.1:5000", "http://127.0.0.1:5000", ""},
		{"https://registry.internal/", "https://registry.internal", ""},
		{"", "", "empty"},
		{"127.0.0.1:5000", "", "scheme"},
		{"ftp://x", "", "scheme"},
		{"http://", "", "no host"},
		{"http://:5000", "", "no host"},
		{"http://u:p@host:5000", "", "only scheme"},
		{"http://host:5000/v2/", "", "only scheme"},
		{"http://host:5000?x=1", "", "only scheme"},
	} {
		u, err := ParseUpstream(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseUpstream(%q) error = %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || u.String() != tc.want {
			t.Errorf("ParseUpstream(%q) = %v, %v; want %s", tc.in, u, err, tc.want)
		}
	}
}

// seen is what the upstream received.
type seen struct {
	Host, XFF, XFProto, XFHost, AcceptEncoding string
}

func newPair(t *testing.T, opts Options, upstream http.HandlerFunc, tlsFront bool) (front *httptest.Server, up *httptest.Server) {
	t.Helper()
	up = httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	opts.Upstream = up.URL
	opts.Log = testlog.New(t, zerolog.TraceLevel)
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if tlsFront {
		front = httptest.NewTLSServer(p)
	} else {
		front = httptest.NewServer(p)
	}
	t.Cleanup(front.Close)
	return front, up
}

func TestHeadersAndLocation(t *testing.T) {
	var got seen
	var upHost string
	handler := func(w http.ResponseWriter, r *http.Request) {
		got = seen{r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Forwarded-Host"), r.Header.Get("Accept-Encoding")}
		switch r.URL.Path {
		case "/v2/up/blobs/uploads/":
			// registry:2 without X-Forwarded-* knowledge: its own address
			w.Header().Set("Location", "http://"+upHost+"/v2/up/blobs/uploads/123?_state=abc")
			w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
			w.WriteHeader(http.StatusAccepted)
		case "/v2/client/blobs/uploads/":
			// built from X-Forwarded-Host but with the wrong scheme
			w.Header().Set("Location", "http://"+r.Header.Get("X-Forwarded-Host")+"/v2/client/blobs/uploads/9")
			w.WriteHeader(http.StatusAccepted)
		case "/v2/s3/blobs/sha256:aa":
			w.Header().Set("Location", "https://bucket.s3.example.com/data?sig=1")
			w.WriteHeader(http.StatusTemporaryRedirect)
		case "/v2/rel/blobs/uploads/":
			w.Header().Set("Location", "/v2/rel/blobs/uploads/7")
			w.WriteHeader(http.StatusAccepted)
		default:
			// a non-registry error page without the API header
			http.Error(w, "nope", http.StatusNotFound)
		}
	}
	for _, tc := range []struct {
		name         string
		tls          bool
		preserveHost bool
	}{
		{"http rewrite host", false, false},
		{"https rewrite host", true, false},
		{"https preserve host", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			front, up := newPair(t, Options{PreserveHost: tc.preserveHost}, handler, tc.tls)
			upHost = up.Listener.Addr().String()
			client := front.Client()
			client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			scheme := "http"
			if tc.tls {
				scheme = "https"
			}
			do := func(path string) *http.Response {
				t.Helper()
				req, _ := http.NewRequest(http.MethodPost, front.URL+path, nil)
				req.Host = "Registry.Example.com:8443"
				req.Header.Set("X-Forwarded-For", "6.6.6.6") // spoofed: must not pass
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp
			}

			resp := do("/v2/up/blobs/uploads/")
			if want := scheme + "://Registry.Example.com:8443/v2/up/blobs/uploads/123?_state=abc"; resp.Header.Get("Location") != want {
				t.Errorf("Location = %q, want %q", resp.Header.Get("Location"), want)
			}
			wantHost := upHost
			if tc.preserveHost {
				wantHost = "Registry.Example.com:8443"
			}
			if got.Host != wantHost {
				t.Errorf("upstream Host = %q, want %q", got.Host, wantHost)
			}
			if got.XFF != "127.0.0.1" {
				t.Errorf("X-Forwarded-For = %q, want the client address only", got.XFF)
			}
			if got.XFProto != scheme || got.XFHost != "Registry.Example.com:8443" {
				t.Errorf("X-Forwarded-Proto/Host = %q/%q", got.XFProto, got.XFHost)
			}

			resp = do("/v2/client/blobs/uploads/")
			if want := scheme + "://Registry.Example.com:8443/v2/client/blobs/uploads/9"; resp.Header.Get("Location") != want {
				t.Errorf("Location = %q, want %q", resp.Header.Get("Location"), want)
			}
			resp = do("/v2/s3/blobs/sha256:aa")
			if want := "https://bucket.s3.example.com/data?sig=1"; resp.Header.Get("Location") != want {
				t.Errorf("foreign Location changed to %q", resp.Header.Get("Location"))
			}
			resp = do("/v2/rel/blobs/uploads/")
			if want := "/v2/rel/blobs/uploads/7"; resp.Header.Get("Location") != want {
				t.Errorf("relative Location changed to %q", resp.Header.Get("Location"))
			}
			resp = do("/v2/missing")
			if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
				t.Errorf("upstream 404: status %d, API header %q", resp.StatusCode, resp.Header.Get("Docker-Distribution-Api-Version"))
			}
		})
	}
}

func TestUpstreamDownGives502(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p, err := New(Options{Upstream: "http://" + addr, Log: testlog.New(t, zerolog.TraceLevel)})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(p)
	defer front.Close()
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		req, _ := http.NewRequest(method, front.URL+"/v2/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("%s: status %d, want 502", method, resp.StatusCode)
		}
		if resp.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
			t.Fatalf("%s: 502 without API version header", method)
		}
		if method == http.MethodGet {
			var e struct {
				Errors []struct{ Code, Message string }
			}
			if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != "UNKNOWN" {
				t.Fatalf("502 body %q is not a distribution error", body)
			}
		}
	}
}

// Both directions stream: the upstream sees the first part of a request
// body before the client has sent the rest, and the client sees the first
// part of the answer before the upstream has written the rest. A proxy that
// buffered either way would deadlock here (caught by the guard timeout).
func TestStreamsBothWays(t *testing.T) {
	gotFirst := make(chan struct{})
	sendRest := make(chan struct{})
	handler := func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(r.Body, buf); err != nil || string(buf) != "part1" {
			t.Errorf("upstream read %q, %v", buf, err)
			return
		}
		close(gotFirst)
		rest, _ := io.ReadAll(r.Body)
		if string(rest) != "part2" {
			t.Errorf("upstream rest %q", rest)
		}
		w.Header().Set("Content-Length", "10")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("answ1"))
		w.(http.Flusher).Flush()
		<-sendRest
		_, _ = w.Write([]byte("answ2"))
	}
	for _, h2 := range []bool{false, true} {
		gotFirst, sendRest = make(chan struct{}), make(chan struct{})
		up := httptest.NewServer(http.HandlerFunc(handler))
		p, err := New(Options{Upstream: up.URL, Log: testlog.New(t, zerolog.TraceLevel)})
		if err != nil {
			t.Fatal(err)
		}
		front := httptest.NewUnstartedServer(p)
		front.EnableHTTP2 = h2
		front.StartTLS()

		pr, pw := io.Pipe()
		req, _ := http.NewRequest(http.MethodPatch, front.URL+"/v2/x/blobs/uploads/1", pr)
		type result struct {
			resp *http.Response
			err  error
		}
		done := make(chan result, 1)
		go func() {
			resp, err := front.Client().Do(req)
			done <- result{resp, err}
		}()
		guard := time.After(30 * time.Second)
		_, _ = pw.Write([]byte("part1"))
		select {
		case <-gotFirst:
		case <-guard:
			t.Fatalf("h2=%v: request body was buffered: upstream never saw the first part", h2)
		}
		_, _ = pw.Write([]byte("part2"))
		pw.Close()
		var res result
		select {
		case res = <-done:
		case <-guard:
			t.Fatalf("h2=%v: no response headers", h2)
		}
		if res.err != nil {
			t.Fatal(res.err)
		}
		if res.resp.ProtoMajor != map[bool]int{false: 1, true: 2}[h2] {
			t.Fatalf("h2=%v: client spoke %s", h2, res.resp.Proto)
		}
		first := make([]byte, 5)
		readDone := make(chan error, 1)
		go func() { _, err := io.ReadFull(res.resp.Body, first); readDone <- err }()
		select {
		case err := <-readDone:
			if err != nil || string(first) != "answ1" {
				t.Fatalf("first part %q, %v", first, err)
			}
		case <-guard:
			t.Fatalf("h2=%v: response was buffered: first part never arrived", h2)
		}
		close(sendRest)
		rest, _ := io.ReadAll(res.resp.Body)
		res.resp.Body.Close()
		if !bytes.Equal(rest, []byte("answ2")) {
			t.Fatalf("rest %q", rest)
		}
		front.Close()
		up.Close()
		p.Close()
	}
}

// Content-Length and chunked uploads of a few MiB arrive intact, and the
// upstream sees the client's length when it sent one.
func TestBodiesIntact(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	var gotLen int64
	front, _ := newPair(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		gotLen = r.ContentLength
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Docker-Content-Digest", "x")
		_, _ = w.Write(b)
	}, true)
	for _, chunked := range []bool{false, true} {
		var body io.Reader = bytes.NewReader(data)
		if chunked {
			body = io.MultiReader(body) // hides the length
		}
		req, _ := http.NewRequest(http.MethodPut, front.URL+"/v2/a/blobs/uploads/1", body)
		resp, err := front.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(b, data) {
			t.Fatalf("chunked=%v: echoed %d bytes, want %d", chunked, len(b), len(data))
		}
		want := int64(len(data))
		if chunked {
			want = -1
		}
		if gotLen != want {
			t.Fatalf("chunked=%v: upstream Content-Length %d, want %d", chunked, gotLen, want)
		}
	}
}
