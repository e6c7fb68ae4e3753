package conf

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExpandEnv(t *testing.T) {
	t.Setenv("CONF_TEST_A", "alpha")
	t.Setenv("CONF_TEST_EMPTY", "")
	for _, tc := range []struct{ in, want, err string }{
		{"plain", "plain", ""},
		{"${CONF_TEST_A}", "alpha", ""},
		{"x-${CONF_TEST_A}-${CONF_TEST_A}", "x-alpha-alpha", ""},
		{"${CONF_TEST_EMPTY}", "", ""},
		{"$CONF_TEST_A", "$CONF_TEST_A", ""},
		{"${CONF_TEST_NOPE}", "", "CONF_TEST_NOPE is not set"},
		{"${CONF TEST}", "", "malformed"},
		{"${CONF_TEST_A", "", "malformed"},
	} {
		got, err := ExpandEnv(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("hunter2")
	for _, f := range []string{"%v", "%s", "%+v", "%#v"} {
		if out := fmt.Sprintf(f, struct{ P Secret }{s}); strings.Contains(out, "hunter2") {
			t.Errorf("%s prints the secret: %s", f, out)
		}
	}
	if s.Reveal() != "hunter2" {
		t.Error("Reveal lost the value")
	}
}

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "s"), []byte("pw\r\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "e"), []byte("\n"), 0o600)
	env := Env{Dir: dir}
	if v, err := ReadSecretFile(env, "s"); err != nil || v != "pw" {
		t.Errorf("s: %q, %v", v, err)
	}
	if _, err := ReadSecretFile(env, "e"); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty file: %v", err)
	}
	if _, err := ReadSecretFile(env, "missing"); err == nil {
		t.Error("missing file: no error")
	}
}

func TestParseEnum(t *testing.T) {
	type K string
	if v, err := ParseEnum("kind", []byte("b"), K("a"), K("b")); err != nil || v != "b" {
		t.Errorf("b: %q %v", v, err)
	}
	_, err := ParseEnum("kind", []byte("c"), K("a"), K("b"), K("d"))
	if err == nil || err.Error() != `invalid kind "c": want "a", "b" or "d"` {
		t.Errorf("c: %v", err)
	}
}
