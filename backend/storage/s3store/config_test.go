package s3store

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/internal/conf"
)

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "key"), []byte("k\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := conf.Env{Dir: dir}
	for _, tc := range []struct {
		name string
		c    Config
		want string // "" = valid; else a key that must be named
	}{
		{"minimal", Config{Bucket: "wharf"}, ""},
		{"full", Config{Bucket: "wharf.data-1", Prefix: "a/b", Endpoint: "http://127.0.0.1:7070", PathStyle: true, AccessKeyFile: "key", SecretKeyFile: "key", SSE: "AES256"}, ""},
		{"no bucket", Config{}, "bucket"},
		{"bad bucket", Config{Bucket: "Wharf_Data"}, "bucket"},
		{"bad endpoint", Config{Bucket: "wharf", Endpoint: "s3.example.net"}, "endpoint"},
		{"endpoint with path", Config{Bucket: "wharf", Endpoint: "https://s3.example.net/x"}, "endpoint"},
		{"one key file", Config{Bucket: "wharf", AccessKeyFile: "key"}, "access_key_file"},
		{"missing key file", Config{Bucket: "wharf", AccessKeyFile: "key", SecretKeyFile: "nope"}, "secret_key_file"},
		{"bad prefix", Config{Bucket: "wharf", Prefix: "/abs"}, "prefix"},
		{"sse-kms", Config{Bucket: "wharf", SSE: "aws:kms"}, ""},
		{"sse-kms with key", Config{Bucket: "wharf", SSE: "aws:kms", SSEKMSKeyID: "arn:aws:kms:us-east-1:1:key/k"}, ""},
		{"bad sse", Config{Bucket: "wharf", SSE: "aes256"}, "sse"},
		{"sse-c not offered", Config{Bucket: "wharf", SSE: "SSE-C"}, "sse"},
		{"kms key without kms", Config{Bucket: "wharf", SSE: "AES256", SSEKMSKeyID: "k"}, "sse_kms_key_id"},
		{"kms key without sse", Config{Bucket: "wharf", SSEKMSKeyID: "k"}, "sse_kms_key_id"},
		{"redirect", Config{Bucket: "wharf", Redirect: true, RedirectExpiry: conf.Duration(time.Hour)}, ""},
		{"redirect expiry too long", Config{Bucket: "wharf", Redirect: true, RedirectExpiry: conf.Duration(8 * 24 * time.Hour)}, "redirect_expiry"},
		{"redirect expiry too short", Config{Bucket: "wharf", Redirect: true, RedirectExpiry: conf.Duration(time.Millisecond)}, "redirect_expiry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.SetDefaults("registry.test")
			ps := tc.c.Validate(env)
			if tc.want == "" {
				if len(ps) != 0 {
					t.Fatalf("valid config refused: %v", ps)
				}
				return
			}
			if len(ps) == 0 {
				t.Fatal("accepted")
			}
			if ps[0].Key != tc.want {
				t.Fatalf("problem %q names key %q, want %q", ps[0].Msg, ps[0].Key, tc.want)
			}
		})
	}
	var c Config
	c.SetDefaults("registry.test")
	if c.Prefix != "registry.test" || c.Region != "us-east-1" || !strings.HasPrefix(c.Endpoint, "https://s3.") || c.RedirectExpiry.Std() != DefaultRedirectExpiry {
		t.Fatalf("defaults: %+v", c)
	}
}
