package e2e_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// tokenFor runs the Docker token dance's second step against the real
// wharf: a pull token for repo with alice's password.
func tokenFor(t *testing.T, w *harness.Wharf, repo string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+w.HTTPAddr+"/v2/token?service=127.0.0.1&scope=repository:"+repo+":pull", nil)
	req.SetBasicAuth("alice", passwords["alice"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || resp.StatusCode != 200 || tr.Token == "" {
		t.Fatalf("token endpoint: %s %v", resp.Status, err)
	}
	return tr.Token
}

// kidOf is the kid in a token's JWT header.
func kidOf(t *testing.T, tok string) string {
	t.Helper()
	head, _, _ := strings.Cut(tok, ".")
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Kid string }
	if err := json.Unmarshal(raw, &h); err != nil || h.Kid == "" {
		t.Fatalf("token header %s has no kid", raw)
	}
	return h.Kid
}

// The signing key is rotated (new key file, SIGHUP) in the middle of a
// 30-layer pull: the layers after the rotation still come with the token
// from before it, and new tokens carry the new kid.
func TestTokenKeyRotationDuringPull(t *testing.T) {
	w, _ := startAuthWharf(t)
	const repo = "public/rotate"
	img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 30, 32<<10)
	ref, err := name.ParseReference(w.HTTPAddr+"/"+repo+":v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	alice := remote.WithAuth(&authn.Basic{Username: "alice", Password: passwords["alice"]})
	if err := remote.Write(ref, img, alice); err != nil {
		t.Fatalf("push: %v", err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 30 {
		t.Fatalf("%d layers, %v", len(layers), err)
	}
	tok := tokenFor(t, w, repo)
	kid1 := kidOf(t, tok)
	keyFile := filepath.Join(w.Config.DataDir, "auth", "token.key")
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token key file: %v (want mode 0600)", err)
	}
	for i, l := range layers {
		if i == 15 {
			// an operator's rotation: a new key file renamed into place,
			// the old key dropped from it, then SIGHUP
			tmp := keyFile + ".new"
			if err := os.WriteFile(tmp, []byte(strings.Repeat("c3", 32)+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, keyFile); err != nil {
				t.Fatal(err)
			}
			w.Signal(t, syscall.SIGHUP)
			for end := time.Now().Add(30 * time.Second); kidOf(t, tokenFor(t, w, repo)) == kid1; {
				if time.Now().After(end) {
					t.Fatal("the new key never signed a token after SIGHUP")
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/v2/%s/blobs/%s", w.HTTPAddr, repo, d), nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		_, err = io.Copy(h, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || err != nil || "sha256:"+hex.EncodeToString(h.Sum(nil)) != d.String() {
			t.Fatalf("layer %d with the token from before the rotation: %s %v", i, resp.Status, err)
		}
	}
	if kid2 := kidOf(t, tokenFor(t, w, repo)); kid2 == kid1 {
		t.Fatalf("new tokens still carry kid %s", kid1)
	}
	// and a fresh login's pull sees the same image
	got, err := remote.Image(ref, alice)
	if err != nil {
		t.Fatalf("pull after the rotation: %v", err)
	}
	want, _ := img.Digest()
	if d, err := got.Digest(); err != nil || d != want {
		t.Fatalf("pulled %s (%v), pushed %s", d, err, want)
	}
}
