package registry

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// TestMain doubles as a registry server for the crash test: with
// WHARF_TEST_SERVE=<root> the test binary serves a registry on a free
// loopback port, prints the address and runs until killed.
func TestMain(m *testing.M) {
	if root := os.Getenv("WHARF_TEST_SERVE"); root != "" {
		reg, err := New(context.Background(), Options{Root: root})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println(ln.Addr().String())
		_ = http.Serve(ln, reg)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func startServer(t *testing.T, root string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "WHARF_TEST_SERVE="+root)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		t.Fatalf("server did not start: %v", err)
	}
	return cmd, "http://" + strings.TrimSpace(line)
}

// TestKill9DuringPushes kills the registry process with SIGKILL while
// several clients push images, restarts it on the same root, and checks
// that every image whose manifest PUT was acknowledged pulls back
// byte-identical, and that no partial blob, manifest or tag is visible.
func TestKill9DuringPushes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	root := t.TempDir()
	cmd, base := startServer(t, root)

	type pushed struct {
		repo, tag string
		manifest  []byte
		layers    map[digest.Digest][]byte
	}
	var mu sync.Mutex
	var acked []pushed
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := &http.Client{Timeout: 20 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				repo := fmt.Sprintf("crash/w%d", w)
				p := pushed{repo: repo, tag: fmt.Sprintf("t%d", i), layers: map[digest.Digest][]byte{}}
				var descs []string
				ok := true
				for l := 0; l < 3 && ok; l++ {
					data := randBytes(t, 200_000+l*300_000)
					d := digest.FromBytes(data)
					if pushBlob(c, base, repo, bytes.NewReader(data), d) != nil {
						ok = false
					}
					p.layers[d] = data
					descs = append(descs, fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}`, d, len(data)))
				}
				if !ok {
					return
				}
				cfg := []byte(fmt.Sprintf(`{"w":%d,"i":%d}`, w, i))
				cd := digest.FromBytes(cfg)
				if pushBlob(c, base, repo, bytes.NewReader(cfg), cd) != nil {
					return
				}
				p.layers[cd] = cfg
				p.manifest = []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[%s]}`, cd, len(cfg), strings.Join(descs, ",")))
				req, _ := http.NewRequest("PUT", base+"/v2/"+repo+"/manifests/"+p.tag, bytes.NewReader(p.manifest))
				req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
				resp, err := c.Do(req)
				if err != nil {
					return
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusCreated {
					mu.Lock()
					acked = append(acked, p)
					mu.Unlock()
				}
			}
		}(w)
	}
	// let the pushes run until a few images are acknowledged, then kill
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 8 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	close(stop)
	wg.Wait()
	if len(acked) == 0 {
		t.Fatal("no push was acknowledged before the kill")
	}

	cmd, base = startServer(t, root)
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	get := func(path string) (int, []byte) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for _, p := range acked {
		st, b := get("/v2/" + p.repo + "/manifests/" + p.tag)
		if st != 200 || !bytes.Equal(b, p.manifest) {
			t.Fatalf("acknowledged %s:%s lost after kill -9 (status %d)", p.repo, p.tag, st)
		}
		for d, data := range p.layers {
			st, b := get("/v2/" + p.repo + "/blobs/" + string(d))
			if st != 200 || !bytes.Equal(b, data) {
				t.Fatalf("blob %s of %s:%s: status %d", d, p.repo, p.tag, st)
			}
		}
	}
	// nothing partial is visible: every stored blob matches its name,
	// every tag names a manifest that is there
	filepath.WalkDir(filepath.Join(root, "blobs"), func(path string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		alg := filepath.Base(filepath.Dir(filepath.Dir(path)))
		want := digest.NewDigestFromEncoded(digest.Algorithm(alg), de.Name())
		f, _ := os.Open(path)
		got, _ := want.Algorithm().FromReader(f)
		f.Close()
		if got != want {
			t.Errorf("blob file %s holds %s", want, got)
		}
		return nil
	})
	for w := 0; w < 4; w++ {
		repo := fmt.Sprintf("crash/w%d", w)
		tags, _ := os.ReadDir(filepath.Join(root, "repositories", repo, "_tags"))
		for _, tg := range tags {
			if st, _ := get("/v2/" + repo + "/manifests/" + tg.Name()); st != 200 {
				t.Errorf("tag %s:%s points at nothing (status %d)", repo, tg.Name(), st)
			}
		}
	}
	t.Logf("%d acknowledged images verified after kill -9", len(acked))
}
