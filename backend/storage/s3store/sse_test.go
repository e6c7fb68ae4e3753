package s3store

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/e2e/harness"
)

// recorder is an HTTP transport in front of the S3 server that keeps the
// method, URL and SSE headers of every request.
type recorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	method, url string
	header      http.Header
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, recorded{req.Method, req.URL.String(), req.Header.Clone()})
	r.mu.Unlock()
	return r.next.RoundTrip(req)
}

// writes are the requests that create an object: PUT of an object (a
// whole object or a server-side copy, not a part) and the POST that
// starts a multipart upload. Parts inherit the upload's encryption.
func (r *recorder) writes() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []recorded
	for _, q := range r.reqs {
		isPart := strings.Contains(q.url, "partNumber=")
		switch {
		case q.method == http.MethodPut && !isPart,
			q.method == http.MethodPost && strings.Contains(q.url, "?uploads"):
			out = append(out, q)
		}
	}
	return out
}

// TestSSEOnEveryWrite: with sse set, every object wharf creates — small
// puts (records, state, markers), chunks streamed as multipart uploads,
// the commit's copy and compose — asks for that encryption, and the data
// reads back. versitygw v1.8.0 accepts the headers (it stores the data
// unencrypted: its posix backend has no SSE), so what is checked against
// it is that the header is sent and nothing breaks; AWS and MinIO then
// encrypt.
func TestSSEOnEveryWrite(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	ctx := context.Background()
	for _, tc := range []struct {
		sse, kmsKey string
		want        http.Header
	}{
		{SSES3, "", http.Header{"X-Amz-Server-Side-Encryption": {"AES256"}}},
		{SSEKMS, "", http.Header{"X-Amz-Server-Side-Encryption": {"aws:kms"}}},
		{SSEKMS, "arn:aws:kms:us-east-1:111122223333:key/wharf-test", http.Header{
			"X-Amz-Server-Side-Encryption":                {"aws:kms"},
			"X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id": {"arn:aws:kms:us-east-1:111122223333:key/wharf-test"},
		}},
	} {
		t.Run(tc.sse+tc.kmsKey, func(t *testing.T) {
			rec := &recorder{next: http.DefaultTransport}
			s := newStore(t, gw, "sse-"+storage.NewID(), func(o *Options) {
				o.SSE, o.SSEKMSKeyID = tc.sse, tc.kmsKey
				o.Transport = rec
				o.PartSize = minPart
			})
			small := []byte("a manifest")
			if err := s.PutBlob(ctx, digest.FromBytes(small), small); err != nil {
				t.Fatal(err)
			}
			if err := s.PutRecord(ctx, "a", "tags/x", []byte("1")); err != nil {
				t.Fatal(err)
			}
			// Chunks of 6 MiB: multipart uploads, composed at commit;
			// then one chunk: copied at commit.
			for _, chunks := range [][]int{{6 << 20, 6 << 20}, {1000}} {
				var all []byte
				u, err := s.NewUpload(ctx, "a")
				if err != nil {
					t.Fatal(err)
				}
				for _, n := range chunks {
					b := randomBytes(t, n)
					all = append(all, b...)
					if _, err := u.Append(ctx, bytes.NewReader(b)); err != nil {
						t.Fatal(err)
					}
				}
				d := digest.FromBytes(all)
				if err := u.Commit(ctx, d); err != nil {
					t.Fatal(err)
				}
				b, err := s.OpenBlob(ctx, d)
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(b)
				b.Close()
				if err != nil || !bytes.Equal(got, all) {
					t.Fatalf("read back: %d bytes, %v", len(got), err)
				}
			}
			writes := rec.writes()
			var posts, copies int
			for _, w := range writes {
				for k, v := range tc.want {
					if got := w.header.Values(k); len(got) != 1 || got[0] != v[0] {
						t.Errorf("%s %s: %s = %q, want %q", w.method, w.url, k, got, v)
					}
				}
				if w.method == http.MethodPost {
					posts++
				}
				if w.header.Get("X-Amz-Copy-Source") != "" {
					copies++
				}
			}
			// Two 6 MiB chunks and the compose start multipart uploads;
			// the one-chunk commit copies.
			if posts < 3 || copies < 1 {
				t.Fatalf("want >= 3 multipart starts and >= 1 copy among the writes, got %d and %d of %d", posts, copies, len(writes))
			}
		})
	}
}
