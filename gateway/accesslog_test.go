package gateway

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// A transfer the client breaks off (the proxy aborts with
// http.ErrAbortHandler) still gets its access log line, marked aborted,
// and the abort goes on to net/http.
func TestAccessLogAborted(t *testing.T) {
	var buf bytes.Buffer
	log := zerolog.New(&buf)
	h := accessLog(&log, newMetrics(), "registry.test")(func(w http.ResponseWriter, r *http.Request, _ *exchange) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("partial"))
		panic(http.ErrAbortHandler)
	})
	func() {
		defer func() {
			if p := recover(); p != http.ErrAbortHandler {
				t.Fatalf("panic %v, want http.ErrAbortHandler passed on", p)
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/v2/a/blobs/sha256:00", nil))
	}()
	line := buf.String()
	for _, want := range []string{`"aborted":true`, `"status":200`, `"bytes":7`, `"proto":"HTTP/1.1"`} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %s lacks %s", line, want)
		}
	}
	buf.Reset()
	h = accessLog(&log, newMetrics(), "registry.test")(func(w http.ResponseWriter, r *http.Request, _ *exchange) { http.NotFound(w, r) })
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	if strings.Contains(buf.String(), "aborted") || !strings.Contains(buf.String(), `"status":404`) {
		t.Errorf("normal request logged as %s", buf.String())
	}
}

// A chunked upload (no Content-Length, how Docker pushes) is logged with
// the bytes the backend read, whether it reads with Read or io.Copy.
func TestAccessLogBytesIn(t *testing.T) {
	for _, tc := range []struct {
		name string
		read func(r *http.Request) error
	}{
		{"Read", func(r *http.Request) error { _, err := io.ReadAll(struct{ io.Reader }{r.Body}); return err }},
		{"WriteTo", func(r *http.Request) error { _, err := io.Copy(io.Discard, r.Body); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := zerolog.New(&buf)
			h := accessLog(&log, newMetrics(), "registry.test")(func(w http.ResponseWriter, r *http.Request, _ *exchange) {
				if err := tc.read(r); err != nil {
					t.Error(err)
				}
				w.WriteHeader(http.StatusAccepted)
			})
			req := httptest.NewRequest(http.MethodPatch, "/v2/a/blobs/uploads/x", strings.NewReader(strings.Repeat("x", 100000)))
			req.ContentLength = -1 // chunked
			h.ServeHTTP(httptest.NewRecorder(), req)
			if !strings.Contains(buf.String(), `"bytes_in":100000`) {
				t.Errorf("log line %s lacks bytes_in 100000", buf.String())
			}
		})
	}
}
