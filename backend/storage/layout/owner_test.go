package layout

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// recordMethods are the storage methods that take a record key (or, for
// ListRecords, a record directory) as their third argument.
var recordMethods = map[string]bool{
	"GetRecord": true, "PutRecord": true, "StatRecord": true, "TouchRecord": true,
	"DeleteRecord": true, "DeleteRecordIfOlder": true, "ListRecords": true,
}

// TestOnlyLayoutSpellsKeys keeps this package the one owner of the record
// keys: outside backend/storage no production file calls a record method
// with a literal key or contains a literal that starts like a record key.
// (Tests, e2e and the stores themselves may: they test the raw store.)
func TestOnlyLayoutSpellsKeys(t *testing.T) {
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not at %s: %v", root, err)
	}
	prefixes := []string{TagsDir + "/", ManifestsDir + "/", BlobsDir + "/", ReferrersDir + "/"}
	files := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			switch rel {
			case "backend/storage", "e2e", ".git", "testdata":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		files++
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if ok && recordMethods[sel.Sel.Name] && len(n.Args) >= 3 {
					if _, lit := n.Args[2].(*ast.BasicLit); lit {
						t.Errorf("%s: %s with a literal key; use package layout", rel, sel.Sel.Name)
					}
				}
			case *ast.BasicLit:
				if n.Kind != token.STRING {
					return true
				}
				s, err := strconv.Unquote(n.Value)
				if err != nil {
					return true
				}
				for _, p := range prefixes {
					if strings.HasPrefix(s, p) {
						t.Errorf("%s: literal %q spells a record key; use package layout", rel, s)
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 50 {
		t.Fatalf("only %d files looked at: wrong root?", files)
	}
}
