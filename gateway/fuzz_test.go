package gateway

import (
	"os"
	"testing"
)

// FuzzParseConfig: any bytes given as gateway.toml give a config or a
// *ConfigError, never a panic.
func FuzzParseConfig(f *testing.F) {
	if ex, err := os.ReadFile("../gateway.toml.example"); err == nil {
		f.Add(ex)
	}
	f.Add([]byte("[listen]\nhttp = \":80\"\n[[site]]\nhost = \"a.example\"\nbackend = \"registry\"\ntls = \"off\"\n"))
	f.Add([]byte("[[site]]\n[site.cache]\nttl = \"-1h\"\n[[policy]]\nallow = [\"pull\"]\n[groups]\nci = [\"@ci\"]\n"))
	f.Add([]byte("[listen\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("/nonexistent/gw.toml", data)
		if err == nil && c == nil {
			t.Fatal("nil config without an error")
		}
	})
}
