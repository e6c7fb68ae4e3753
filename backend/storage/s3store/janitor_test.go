package s3store

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// crashChildEnv makes the test binary act as a wharf instance that is
// killed in the middle of a blob upload (TestCrashChild).
const crashChildEnv = "WHARF_S3_CRASH_CHILD"

// stallReader yields n random bytes and then blocks for ever: a client
// whose upload is in flight when the instance dies.
type stallReader struct{ n int }

func (r *stallReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		select {}
	}
	if len(p) > r.n {
		p = p[:r.n]
	}
	for i := range p {
		p[i] = byte(i*7 + r.n)
	}
	r.n -= len(p)
	return len(p), nil
}

// TestCrashChild is the instance TestKilledUploadIsCleanedUp kills: it
// starts an upload session and streams a PATCH body into it that never
// ends. It only runs when the parent test sets crashChildEnv.
func TestCrashChild(t *testing.T) {
	spec := os.Getenv(crashChildEnv)
	if spec == "" {
		t.Skip("only run as the child of TestKilledUploadIsCleanedUp")
	}
	var endpoint, prefix string
	fmt.Sscan(spec, &endpoint, &prefix)
	ctx := context.Background()
	s, err := New(ctx, Options{
		Config:    Config{Bucket: bucket, Prefix: prefix, Endpoint: endpoint, PathStyle: true, Region: "us-east-1"},
		AccessKey: os.Getenv("WHARF_S3_ACCESS"), SecretKey: os.Getenv("WHARF_S3_SECRET"), PartSize: minPart,
	})
	if err != nil {
		t.Fatal(err)
	}
	u, err := s.NewUpload(ctx, "team/app")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("upload %s\n", u.ID())
	// Two parts' worth and then a stall: the first part is uploaded,
	// the multipart upload stays open.
	_, err = u.Append(ctx, &stallReader{n: 2*minPart - 1})
	t.Fatalf("append returned: %v", err)
}

// TestKilledUploadIsCleanedUp: an instance is killed (SIGKILL) while a
// blob upload streams into S3 as a multipart upload. Nothing aborts
// that upload: its parts stay in the bucket, invisible, and the
// session's state object stays. Once they are older than the upload
// TTL, the janitor of any instance aborts the multipart upload and
// removes the session; younger ones it leaves alone.
func TestKilledUploadIsCleanedUp(t *testing.T) {
	gw := harness.StartVersityGW(t, bucket)
	ctx := context.Background()
	const prefix = "crash.test"
	cmd := exec.Command(os.Args[0], "-test.run", "^TestCrashChild$", "-test.v")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+gw.Endpoint+" "+prefix,
		"WHARF_S3_ACCESS="+gw.AccessKey, "WHARF_S3_SECRET="+gw.SecretKey)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	var id string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "upload "); ok {
			id = rest
			break
		}
	}
	if id == "" {
		t.Fatalf("child printed no upload id: %v", sc.Err())
	}
	go io.Copy(io.Discard, stdout)

	s := newStore(t, gw, prefix, nil)
	// Wait until the child's multipart upload has a part stored: it is
	// in the middle of the blob.
	var mpu minio.ObjectMultipartInfo
	for deadline := time.Now().Add(2 * time.Minute); mpu.UploadID == ""; {
		if time.Now().After(deadline) {
			t.Fatal("the child never stored a part")
		}
		for m := range s.c.ListIncompleteUploads(ctx, bucket, s.prefix+"uploads/"+id+"/", true) {
			if m.Err != nil {
				t.Fatal(m.Err)
			}
			parts, err := minio.Core{Client: s.c}.ListObjectParts(ctx, bucket, m.Key, m.UploadID, 0, 10)
			if err == nil && len(parts.ObjectParts) > 0 {
				mpu = m
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no defer, no abort
		t.Fatal(err)
	}
	cmd.Wait()
	killed = true

	left := func() (uploads, objects int) {
		for m := range s.c.ListIncompleteUploads(ctx, bucket, s.prefix, true) {
			if m.Err != nil {
				t.Fatal(m.Err)
			}
			uploads++
		}
		for o := range s.c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: s.prefix + "uploads/", Recursive: true}) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			objects++
		}
		return uploads, objects
	}
	if u, o := left(); u != 1 || o != 1 {
		t.Fatalf("after the kill: %d incomplete multipart uploads, %d session objects; want 1 and 1 (state)", u, o)
	}
	s.expire(ctx, time.Now()) // younger than the TTL: kept
	if u, o := left(); u != 1 || o != 1 {
		t.Fatalf("janitor removed a young upload: %d multipart uploads, %d objects left", u, o)
	}
	s.expire(ctx, mpu.Initiated.Add(s.ttl+time.Minute)) // past the TTL
	if u, o := left(); u != 0 || o != 0 {
		t.Fatalf("after the janitor: %d incomplete multipart uploads, %d session objects; want none", u, o)
	}
}
