package auth

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestLoadKeyConcurrently: instances sharing a folder ([cluster]
// shared_dir) start at once; all of them end up with the same key and
// none reads a half-written file.
func TestLoadKeyConcurrently(t *testing.T) {
	for round := 0; round < 20; round++ {
		path := filepath.Join(t.TempDir(), "auth", "token.key")
		const n = 8
		keys := make([][]byte, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				var ks [][]byte
				ks, errs[i] = loadKeys(path)
				if len(ks) > 0 {
					keys[i] = ks[0]
				}
			}(i)
		}
		wg.Wait()
		for i := 0; i < n; i++ {
			if errs[i] != nil {
				t.Fatalf("round %d, instance %d: %v", round, i, errs[i])
			}
			if !bytes.Equal(keys[i], keys[0]) {
				t.Fatalf("round %d: instances got different keys", round)
			}
		}
		ents, err := os.ReadDir(filepath.Dir(path))
		if err != nil || len(ents) != 1 {
			t.Fatalf("round %d: folder holds %d entries (%v), want only the key", round, len(ents), err)
		}
	}
}
