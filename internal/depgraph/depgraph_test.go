package depgraph

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/wharf-dev/wharf/"

// forbidden lists, per package (a prefix of its path below the module),
// the wharf packages it must not depend on, directly or not.
var forbidden = []struct {
	pkg    string
	denied []string
}{
	// backends see a route and an Access, never users, the UI or webhooks
	{"backend", []string{"gateway", "cmd", "auth", "acme", "policy", "internal/transport", "ui", "webhook"}},
	{"ui", []string{"gateway", "cmd", "acme"}},
	{"policy", []string{"gateway", "cmd", "auth", "acme"}},
	{"auth", []string{"gateway", "cmd", "acme"}},
	{"acme", []string{"gateway", "cmd", "auth", "policy", "backend"}},
	{"gateway", []string{"cmd"}},
	// the storage interfaces, the layout and the mark-and-sweep sit below
	// every backend that uses them
	{"backend/storage", []string{"backend/registry", "backend/cache", "backend/proxy", "ui", "cleanup", "webhook"}},
	{"internal/conf", []string{""}}, // no wharf package at all
}

// TestDependencyGraph checks every non-test package's transitive
// dependencies (go list -deps) against forbidden.
func TestDependencyGraph(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=ImportPath,Deps", mod+"...").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	checked := 0
	for {
		var p struct {
			ImportPath string
			Deps       []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(p.ImportPath, mod)
		for _, f := range forbidden {
			if !under(rel, f.pkg) {
				continue
			}
			checked++
			for _, d := range p.Deps {
				if !strings.HasPrefix(d, mod) {
					continue
				}
				dr := strings.TrimPrefix(d, mod)
				for _, bad := range f.denied {
					if bad == "" || under(dr, bad) {
						t.Errorf("%s depends on %s: %s must not import %q", rel, dr, f.pkg, bad)
					}
				}
			}
		}
	}
	if checked < 10 {
		t.Fatalf("only %d packages checked: is go list seeing the module?", checked)
	}
}

// under reports whether package path p is dir or below it.
func under(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}
