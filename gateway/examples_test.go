package gateway

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadmeExamplesCheckClean: every ```toml block of every README.md in
// the repository is a config (or a piece of one) that checks clean. A
// piece gets what it leaves out: [listen], [auth] with an htpasswd file,
// and a registry site for a block without [[site]].
func TestReadmeExamplesCheckClean(t *testing.T) {
	dir := t.TempDir()
	hp := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(hp, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	blocks := 0
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.Name() != "README.md" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, block := range tomlBlocks(string(data)) {
			blocks++
			text := "data_dir = " + quote(filepath.Join(dir, "data")) + "\n"
			if !strings.Contains(block, "[listen]") {
				text += "[listen]\nhttp = \":80\"\nhttps = \":443\"\n"
			}
			if !strings.Contains(block, "[auth]") {
				text += "[auth]\nhtpasswd = " + quote(hp) + "\n"
			}
			if !strings.Contains(block, "[[site]]") {
				text += "[[site]]\nhost = \"registry.example.com\"\nbackend = \"registry\"\n"
			}
			if _, err := ParseConfig(path+":block"+string(rune('1'+i))+".toml", []byte(text+block)); err != nil {
				t.Errorf("%s, toml block %d:\n%s\ndoes not check clean: %v", path, i+1, block, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if blocks == 0 {
		t.Fatal("no ```toml block found in any README.md")
	}
}

// tomlBlocks returns the bodies of the ```toml fences of a Markdown text.
func tomlBlocks(md string) []string {
	var out []string
	for {
		i := strings.Index(md, "```toml\n")
		if i < 0 {
			return out
		}
		md = md[i+len("```toml\n"):]
		j := strings.Index(md, "```")
		if j < 0 {
			return out
		}
		out = append(out, md[:j])
		md = md[j+3:]
	}
}

func quote(s string) string { return "'" + s + "'" }
