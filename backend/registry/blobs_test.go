package registry

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
)

func randBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPing(t *testing.T) {
	e := newEnv(t, Options{})
	r := e.do("GET", "/v2/", nil)
	e.expect(r, http.StatusOK, "")
	r = e.do("HEAD", "/v2/", nil)
	e.expect(r, http.StatusOK, "")
	r = e.do("POST", "/v2/", nil)
	e.expect(r, http.StatusMethodNotAllowed, "UNSUPPORTED")
}

// TestUploadFlows pushes a blob in each way clients do and reads it back.
func TestUploadFlows(t *testing.T) {
	data := randBytes(t, 300_000)
	d256 := digest.SHA256.FromBytes(data)
	d512 := digest.SHA512.FromBytes(data)
	cases := []struct {
		name string
		d    digest.Digest
		push func(e *env, repo string, d digest.Digest) *resp
	}{
		{"monolithic POST", d256, func(e *env, repo string, d digest.Digest) *resp {
			return e.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+string(d), data)
		}},
		{"monolithic POST sha512", d512, func(e *env, repo string, d digest.Digest) *resp {
			return e.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+string(d), data)
		}},
		{"POST then PUT", d256, func(e *env, repo string, d digest.Digest) *resp {
			r := e.do("POST", "/v2/"+repo+"/blobs/uploads/", nil)
			e.expect(r, http.StatusAccepted, "")
			return e.do("PUT", r.header.Get("Location")+"?digest="+string(d), data)
		}},
		{"streamed PATCH", d256, func(e *env, repo string, d digest.Digest) *resp {
			r := e.do("POST", "/v2/"+repo+"/blobs/uploads/", nil)
			e.expect(r, http.StatusAccepted, "")
			r = e.do("PATCH", r.header.Get("Location"), data, "Content-Type: application/octet-stream")
			e.expect(r, http.StatusAccepted, "")
			if got, want := r.header.Get("Range"), fmt.Sprintf("0-%d", len(data)-1); got != want {
				t.Errorf("Range %q, want %q", got, want)
			}
			return e.do("PUT", r.header.Get("Location")+"?digest="+string(d), nil)
		}},
		{"chunked PATCH sha512", d512, func(e *env, repo string, d digest.Digest) *resp {
			r := e.do("POST", "/v2/"+repo+"/blobs/uploads/", nil)
			e.expect(r, http.StatusAccepted, "")
			loc := r.header.Get("Location")
			for off := 0; off < len(data); off += 100_000 {
				end := min(off+100_000, len(data))
				r = e.do("PATCH", loc, data[off:end], fmt.Sprintf("Content-Range: %d-%d", off, end-1))
				e.expect(r, http.StatusAccepted, "")
				loc = r.header.Get("Location")
			}
			st := e.do("GET", loc, nil)
			e.expect(st, http.StatusNoContent, "")
			if got, want := st.header.Get("Range"), fmt.Sprintf("0-%d", len(data)-1); got != want {
				t.Errorf("status Range %q, want %q", got, want)
			}
			return e.do("PUT", loc+"?digest="+string(d), nil)
		}},
		{"chunked PATCH with final chunk in PUT", d256, func(e *env, repo string, d digest.Digest) *resp {
			r := e.do("POST", "/v2/"+repo+"/blobs/uploads/", nil)
			r = e.do("PATCH", r.header.Get("Location"), data[:1000], "Content-Range: 0-999")
			e.expect(r, http.StatusAccepted, "")
			return e.do("PUT", r.header.Get("Location")+"?digest="+string(d), data[1000:], fmt.Sprintf("Content-Range: 1000-%d", len(data)-1))
		}},
	}
	for _, c := range cases {
		for _, direct := range []bool{false, true} {
			name := c.name
			if direct {
				name += " (DirectIO)"
			}
			t.Run(name, func(t *testing.T) {
				flow(t, c.push, c.d, data, Options{DirectIO: direct})
			})
		}
	}
}

// flow pushes data with push into a fresh registry and checks what
// comes back.
func flow(t *testing.T, push func(e *env, repo string, d digest.Digest) *resp, d digest.Digest, data []byte, o Options) {
	e := newEnv(t, o)
	repo := "flows/a"
	r := push(e, repo, d)
	e.expect(r, http.StatusCreated, "")
	if got := r.header.Get("Location"); got != "/v2/"+repo+"/blobs/"+string(d) {
		t.Errorf("Location %q", got)
	}
	if got := r.header.Get("Docker-Content-Digest"); got != string(d) {
		t.Errorf("Docker-Content-Digest %q", got)
	}
	g := e.do("GET", "/v2/"+repo+"/blobs/"+string(d), nil)
	e.expect(g, http.StatusOK, "")
	if !bytes.Equal(g.body, data) {
		t.Fatal("pulled bytes differ")
	}
	h := e.do("HEAD", "/v2/"+repo+"/blobs/"+string(d), nil)
	e.expect(h, http.StatusOK, "")
	if h.header.Get("Content-Length") != fmt.Sprint(len(data)) || h.header.Get("Docker-Content-Digest") != string(d) {
		t.Errorf("HEAD headers %v", h.header)
	}
	// the session is gone after the commit
	uploads, _ := os.ReadDir(filepath.Join(e.root, "uploads"))
	if len(uploads) != 0 {
		t.Errorf("%d upload sessions left", len(uploads))
	}
}

func TestEmptyBlob(t *testing.T) {
	e := newEnv(t, Options{})
	d := e.pushBlob("x/y", []byte{})
	r := e.do("GET", "/v2/x/y/blobs/"+string(d), nil)
	e.expect(r, http.StatusOK, "")
	if len(r.body) != 0 || r.header.Get("Content-Length") != "0" {
		t.Fatalf("empty blob: %q %v", r.body, r.header)
	}
}

func TestBlobRange(t *testing.T) {
	e := newEnv(t, Options{})
	data := []byte("0123456789abcdefghij")
	d := e.pushBlob("r/r", data)
	cases := []struct {
		rng    string
		status int
		body   string
		cr     string
	}{
		{"", 200, string(data), ""},
		{"bytes=0-4", 206, "01234", "bytes 0-4/20"},
		{"bytes=15-", 206, "fghij", "bytes 15-19/20"},
		{"bytes=-3", 206, "hij", "bytes 17-19/20"},
		{"bytes=10-100", 206, "abcdefghij", "bytes 10-19/20"},
		{"bytes=20-25", 416, "", "bytes */20"},
		{"bytes=5-2", 416, "", "bytes */20"},
		{"bytes=x-y", 416, "", "bytes */20"},
		{"bytes=0-1,4-5", 200, string(data), ""}, // several ranges: whole blob
		{"items=0-1", 200, string(data), ""},
	}
	for _, c := range cases {
		t.Run(c.rng, func(t *testing.T) {
			var h []string
			if c.rng != "" {
				h = append(h, "Range: "+c.rng)
			}
			r := e.do("GET", "/v2/r/r/blobs/"+string(d), nil, h...)
			if r.status != c.status {
				t.Fatalf("status %d, want %d", r.status, c.status)
			}
			if c.status != 416 && string(r.body) != c.body {
				t.Errorf("body %q, want %q", r.body, c.body)
			}
			if c.status == 416 && r.errCode() != "RANGE_INVALID" {
				t.Errorf("code %q", r.errCode())
			}
			if got := r.header.Get("Content-Range"); got != c.cr {
				t.Errorf("Content-Range %q, want %q", got, c.cr)
			}
		})
	}
}

// TestBlobBadInput: each bad request gets its 4xx and spec code, and
// nothing is stored.
func TestBlobBadInput(t *testing.T) {
	e := newEnv(t, Options{Delete: true})
	good := e.pushBlob("ok/repo", []byte("hello"))
	long := strings.Repeat("a", 256)
	other := digest.FromString("other")
	cases := []struct {
		name, method, path string
		body               []byte
		hdr                []string
		status             int
		code               string
	}{
		{"upper-case name", "GET", "/v2/Bad/blobs/" + string(good), nil, nil, 400, "NAME_INVALID"},
		{"dot-dot name", "POST", "/v2/a/../b/blobs/uploads/", nil, nil, 400, "NAME_INVALID"},
		{"empty component", "POST", "/v2/a//b/blobs/uploads/", nil, nil, 400, "NAME_INVALID"},
		{"name too long", "GET", "/v2/" + long + "/tags/list", nil, nil, 400, "NAME_INVALID"},
		{"malformed digest", "GET", "/v2/ok/repo/blobs/sha256:xyz", nil, nil, 400, "DIGEST_INVALID"},
		{"unsupported algorithm", "GET", "/v2/ok/repo/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", nil, nil, 400, "DIGEST_INVALID"},
		{"unknown blob", "GET", "/v2/ok/repo/blobs/" + string(other), nil, nil, 404, "BLOB_UNKNOWN"},
		{"blob of another repo", "GET", "/v2/ok/other/blobs/" + string(good), nil, nil, 404, "BLOB_UNKNOWN"},
		{"monolithic digest mismatch", "POST", "/v2/ok/repo/blobs/uploads/?digest=" + string(other), []byte("not other"), nil, 400, "DIGEST_INVALID"},
		{"monolithic bad digest", "POST", "/v2/ok/repo/blobs/uploads/?digest=sha256:1", []byte("x"), nil, 400, "DIGEST_INVALID"},
		{"unknown upload PATCH", "PATCH", "/v2/ok/repo/blobs/uploads/0123456789abcdef0123456789abcdef", []byte("x"), nil, 404, "BLOB_UPLOAD_UNKNOWN"},
		{"garbage upload id", "GET", "/v2/ok/repo/blobs/uploads/not-an-id", nil, nil, 404, "BLOB_UPLOAD_UNKNOWN"},
		{"unknown upload PUT", "PUT", "/v2/ok/repo/blobs/uploads/0123456789abcdef0123456789abcdef?digest=" + string(good), nil, nil, 404, "BLOB_UPLOAD_UNKNOWN"},
		{"unknown upload DELETE", "DELETE", "/v2/ok/repo/blobs/uploads/0123456789abcdef0123456789abcdef", nil, nil, 404, "BLOB_UPLOAD_UNKNOWN"},
		{"delete unknown blob", "DELETE", "/v2/ok/repo/blobs/" + string(other), nil, nil, 404, "BLOB_UNKNOWN"},
		{"PUT on blob", "PUT", "/v2/ok/repo/blobs/" + string(good), nil, nil, 405, "UNSUPPORTED"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(c.method, c.path, c.body, c.hdr...)
			if r.status != c.status || r.errCode() != c.code {
				t.Fatalf("got %d %s, want %d %s: %s", r.status, r.errCode(), c.status, c.code, r.body)
			}
		})
	}
	// nothing was stored by any of them: one blob, one repository
	assertBlobCount(t, e.root, 1)
	r := e.do("GET", "/v2/_catalog", nil)
	if string(bytes.TrimSpace(r.body)) != `{"repositories":["ok/repo"]}` {
		t.Fatalf("catalog %s", r.body)
	}
}

func assertBlobCount(t *testing.T, root string, want int) {
	t.Helper()
	n := 0
	filepath.WalkDir(filepath.Join(root, "blobs"), func(p string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() {
			n++
		}
		return nil
	})
	if n != want {
		t.Fatalf("%d blobs stored, want %d", n, want)
	}
}

func TestDigestMismatchDiscardsUpload(t *testing.T) {
	e := newEnv(t, Options{})
	r := e.do("POST", "/v2/m/m/blobs/uploads/", nil)
	loc := r.header.Get("Location")
	e.expect(e.do("PATCH", loc, []byte("some data")), http.StatusAccepted, "")
	r = e.do("PUT", loc+"?digest="+string(digest.FromString("else")), nil)
	e.expect(r, http.StatusBadRequest, "DIGEST_INVALID")
	e.expect(e.do("GET", loc, nil), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
	e.expect(e.do("GET", "/v2/m/m/blobs/"+string(digest.FromString("else")), nil), http.StatusNotFound, "BLOB_UNKNOWN")
	e.expect(e.do("GET", "/v2/m/m/blobs/"+string(digest.FromString("some data")), nil), http.StatusNotFound, "BLOB_UNKNOWN")
	assertBlobCount(t, e.root, 0)
}

func TestChunkOutOfOrder(t *testing.T) {
	e := newEnv(t, Options{})
	data := randBytes(t, 3000)
	r := e.do("POST", "/v2/c/c/blobs/uploads/", nil)
	loc := r.header.Get("Location")
	e.expect(e.do("PATCH", loc, data[:1000], "Content-Range: 0-999"), http.StatusAccepted, "")
	cases := []struct{ name, cr string }{
		{"gap", "1500-2499"},
		{"overlap", "500-1499"},
		{"restart", "0-999"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do("PATCH", loc, data[:1000], "Content-Range: "+c.cr)
			e.expect(r, http.StatusRequestedRangeNotSatisfiable, "")
			if got := r.header.Get("Range"); got != "0-999" {
				t.Errorf("Range %q, want 0-999", got)
			}
			if r.header.Get("Location") != loc {
				t.Errorf("Location %q", r.header.Get("Location"))
			}
		})
	}
	// a malformed Content-Range is rejected too, and the length must agree
	e.expect(e.do("PATCH", loc, data[1000:2000], "Content-Range: abc"), http.StatusRequestedRangeNotSatisfiable, "")
	e.expect(e.do("PATCH", loc, data[1000:2000], "Content-Range: 1000-1499"), http.StatusBadRequest, "SIZE_INVALID")
	// the session is intact: finish it
	e.expect(e.do("PATCH", loc, data[1000:], "Content-Range: 1000-2999"), http.StatusAccepted, "")
	e.expect(e.do("PUT", loc+"?digest="+string(digest.FromBytes(data)), nil), http.StatusCreated, "")
}

func TestCancelUpload(t *testing.T) {
	e := newEnv(t, Options{})
	r := e.do("POST", "/v2/c/c/blobs/uploads/", nil)
	loc := r.header.Get("Location")
	e.expect(e.do("PATCH", loc, []byte("abc")), http.StatusAccepted, "")
	e.expect(e.do("DELETE", loc, nil), http.StatusNoContent, "")
	e.expect(e.do("GET", loc, nil), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
	e.expect(e.do("PATCH", loc, []byte("abc")), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
	// an upload id only works in its own repository
	r = e.do("POST", "/v2/c/c/blobs/uploads/", nil)
	id := r.header.Get("Docker-Upload-UUID")
	e.expect(e.do("GET", "/v2/c/other/blobs/uploads/"+id, nil), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
}

func TestMount(t *testing.T) {
	e := newEnv(t, Options{})
	d := e.pushBlob("src/repo", []byte("layer"))
	missing := digest.FromString("missing")
	cases := []struct {
		name, query string
		status      int
	}{
		{"from source", "mount=" + string(d) + "&from=src/repo", 201},
		{"without from", "mount=" + string(d), 201},
		{"from repo without it", "mount=" + string(d) + "&from=src/empty", 202},
		{"missing blob", "mount=" + string(missing) + "&from=src/repo", 202},
		{"missing blob without from", "mount=" + string(missing), 202},
		{"bad from", "mount=" + string(d) + "&from=BAD", 202},
		{"bad digest", "mount=sha256:zz&from=src/repo", 202},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			repo := fmt.Sprintf("dst/r%d", i)
			r := e.do("POST", "/v2/"+repo+"/blobs/uploads/?"+c.query, nil)
			e.expect(r, c.status, "")
			if c.status == 201 {
				if r.header.Get("Location") != "/v2/"+repo+"/blobs/"+string(d) {
					t.Errorf("Location %q", r.header.Get("Location"))
				}
				e.expect(e.do("HEAD", "/v2/"+repo+"/blobs/"+string(d), nil), 200, "")
			} else {
				if !strings.HasPrefix(r.header.Get("Location"), "/v2/"+repo+"/blobs/uploads/") {
					t.Errorf("Location %q", r.header.Get("Location"))
				}
				e.expect(e.do("HEAD", "/v2/"+repo+"/blobs/"+string(d), nil), 404, "")
			}
		})
	}
	assertBlobCount(t, e.root, 1) // stored once however many repositories use it
}

func TestDeleteBlob(t *testing.T) {
	e := newEnv(t, Options{})
	d := e.pushBlob("d/d", []byte("x"))
	e.expect(e.do("DELETE", "/v2/d/d/blobs/"+string(d), nil), http.StatusMethodNotAllowed, "UNSUPPORTED")
	e.expect(e.do("GET", "/v2/d/d/blobs/"+string(d), nil), http.StatusOK, "")

	e.restart(Options{Delete: true})
	e.expect(e.do("DELETE", "/v2/d/d/blobs/"+string(d), nil), http.StatusAccepted, "")
	e.expect(e.do("GET", "/v2/d/d/blobs/"+string(d), nil), http.StatusNotFound, "BLOB_UNKNOWN")
	e.expect(e.do("DELETE", "/v2/d/d/blobs/"+string(d), nil), http.StatusNotFound, "BLOB_UNKNOWN")
}

// TestResumeAfterRestart: an upload started by one process is finished
// by the next one on the same root.
func TestResumeAfterRestart(t *testing.T) {
	e := newEnv(t, Options{})
	data := randBytes(t, 2_500_000)
	r := e.do("POST", "/v2/res/ume/blobs/uploads/", nil)
	loc := r.header.Get("Location")
	e.expect(e.do("PATCH", loc, data[:1_000_000], "Content-Range: 0-999999"), http.StatusAccepted, "")

	e.restart(Options{})
	st := e.do("GET", loc, nil)
	e.expect(st, http.StatusNoContent, "")
	if st.header.Get("Range") != "0-999999" {
		t.Fatalf("Range after restart %q", st.header.Get("Range"))
	}
	e.expect(e.do("PATCH", loc, data[1_000_000:2_000_000], "Content-Range: 1000000-1999999"), http.StatusAccepted, "")

	// again, and this time with a state file that lags behind the data (as
	// after a crash between writing data and recording it): the extra,
	// never acknowledged bytes are dropped.
	e.stop()
	id := loc[strings.LastIndexByte(loc, '/')+1:]
	f, err := os.OpenFile(filepath.Join(e.root, "uploads", id, "data"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("garbage never acknowledged"))
	f.Close()
	e.start(Options{})
	st = e.do("GET", loc, nil)
	if st.header.Get("Range") != "0-1999999" {
		t.Fatalf("Range after crash %q", st.header.Get("Range"))
	}
	e.expect(e.do("PUT", loc+"?digest="+string(digest.FromBytes(data)), data[2_000_000:]), http.StatusCreated, "")
	g := e.do("GET", "/v2/res/ume/blobs/"+string(digest.FromBytes(data)), nil)
	if !bytes.Equal(g.body, data) {
		t.Fatal("content differs after resumed upload")
	}
}

// TestClientDisconnect: a client that goes away mid-PATCH leaves a
// session holding what arrived; it resumes from there.
func TestClientDisconnect(t *testing.T) {
	e := newEnv(t, Options{})
	data := randBytes(t, 4<<20)
	r := e.do("POST", "/v2/dis/con/blobs/uploads/", nil)
	loc := r.header.Get("Location")

	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", loc, len(data))
	sent := 1_500_000
	if _, err := conn.Write(data[:sent]); err != nil {
		t.Fatal(err)
	}
	conn.(*net.TCPConn).CloseWrite()
	// the server answers (an error) once it sees the body end early
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("interrupted PATCH got %d", resp.StatusCode)
		}
	}
	conn.Close()

	st := e.do("GET", loc, nil)
	e.expect(st, http.StatusNoContent, "")
	var end int
	if _, err := fmt.Sscanf(st.header.Get("Range"), "0-%d", &end); err != nil {
		t.Fatalf("Range %q", st.header.Get("Range"))
	}
	got := end + 1
	if got != sent {
		t.Fatalf("session holds %d bytes, %d were sent", got, sent)
	}
	e.expect(e.do("PATCH", loc, data[got:], fmt.Sprintf("Content-Range: %d-%d", got, len(data)-1)), http.StatusAccepted, "")
	e.expect(e.do("PUT", loc+"?digest="+string(digest.FromBytes(data)), nil), http.StatusCreated, "")
}

// TestConcurrentSameBlob: clients pushing the same blob at once all
// succeed and it is stored once.
func TestConcurrentSameBlob(t *testing.T) {
	e := newEnv(t, Options{})
	data := randBytes(t, 1<<20)
	d := digest.FromBytes(data)
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			repo := fmt.Sprintf("same/r%d", i%3)
			c := e.srv.Client()
			if err := pushBlob(c, e.srv.URL, repo, bytes.NewReader(data), d); err != nil {
				errs <- err.Error()
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := 0; i < 3; i++ {
		g := e.do("GET", fmt.Sprintf("/v2/same/r%d/blobs/%s", i, d), nil)
		if g.status != 200 || !bytes.Equal(g.body, data) {
			t.Fatalf("repo %d: status %d", i, g.status)
		}
	}
	assertBlobCount(t, e.root, 1)
}

// TestLeftoversInvisible: files a killed process left in tmp/ and a
// half-created upload never show up and are cleaned at start.
func TestLeftoversInvisible(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"tmp", "uploads/0123456789abcdef0123456789abcdef", "blobs"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.WriteFile(filepath.Join(root, "tmp", "w-123"), []byte("half a manifest"), 0o644)
	old := time.Now().Add(-time.Hour) // left by a process killed an hour ago
	os.Chtimes(filepath.Join(root, "tmp", "w-123"), old, old)
	os.WriteFile(filepath.Join(root, "tmp", "w-456"), []byte("being written right now"), 0o644)
	os.WriteFile(filepath.Join(root, "uploads/0123456789abcdef0123456789abcdef/data"), []byte("partial"), 0o644)
	e := newEnv(t, Options{Root: root})
	if _, err := os.Stat(filepath.Join(root, "tmp", "w-123")); !os.IsNotExist(err) {
		t.Errorf("old temporary file not cleaned: %v", err)
	}
	// a fresh one may belong to a registry still draining on this root
	if _, err := os.Stat(filepath.Join(root, "tmp", "w-456")); err != nil {
		t.Errorf("fresh temporary file removed: %v", err)
	}
	// an upload without its state file was never acknowledged: unknown
	e.expect(e.do("GET", "/v2/a/b/blobs/uploads/0123456789abcdef0123456789abcdef", nil), 404, "BLOB_UPLOAD_UNKNOWN")
	e.expect(e.do("GET", "/v2/a/b/blobs/"+string(digest.FromString("partial")), nil), 404, "BLOB_UNKNOWN")
	r := e.do("GET", "/v2/_catalog", nil)
	if string(bytes.TrimSpace(r.body)) != `{"repositories":[]}` {
		t.Fatalf("catalog %s", r.body)
	}
}

// TestDiskFull: a push to a full disk gets 507 with a clear message, no
// blob appears, and the registry keeps serving (needs root to mount a
// small tmpfs; skipped otherwise).
func TestDiskFull(t *testing.T) {
	dir := t.TempDir()
	if err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", dir).Run(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	e := newEnv(t, Options{Root: dir})
	small := e.pushBlob("full/disk", []byte("fits"))
	big := randBytes(t, 4<<20)
	r := e.do("POST", "/v2/full/disk/blobs/uploads/?digest="+string(digest.FromBytes(big)), big)
	e.expect(r, http.StatusInsufficientStorage, "UNKNOWN")
	if !strings.Contains(string(r.body), "storage is full") {
		t.Fatalf("message %s", r.body)
	}
	e.expect(e.do("HEAD", "/v2/full/disk/blobs/"+string(digest.FromBytes(big)), nil), 404, "")
	e.expect(e.do("GET", "/v2/full/disk/blobs/"+string(small), nil), 200, "")
	assertBlobCount(t, dir, 1)
}
