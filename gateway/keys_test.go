package gateway

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// configKeys lists every TOML key of t (a struct type) as a dotted path
// ("site.cache.upstream"), following nested tables, arrays of tables and
// pointers to tables; maps are keys of their own (their entries are the
// user's names).
func configKeys(prefix string, t reflect.Type) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft.NumField() > 0 && !isLeaf(ft) {
			out = append(out, configKeys(path, ft)...)
			continue
		}
		out = append(out, path)
	}
	return out
}

// isLeaf: a struct that decodes from one TOML value (none so far).
func isLeaf(t reflect.Type) bool {
	_, ok := reflect.PointerTo(t).MethodByName("UnmarshalText")
	return ok
}

// TestEveryKeyInExample: each key the code decodes appears in
// gateway.toml.example, set or commented out ("# key = ..."), below a
// header of its table. A key added in code without its documented line
// fails here.
func TestEveryKeyInExample(t *testing.T) {
	data, err := os.ReadFile("../gateway.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	// table -> leaf keys seen in it, commented or not
	seen := map[string]map[string]bool{}
	table := ""
	header := regexp.MustCompile(`^#?\s*\[\[?\s*([a-z0-9_.]+)\s*\]\]?`)
	keyLine := regexp.MustCompile(`^#?\s*([a-z0-9_]+)\s*=`)
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if m := header.FindStringSubmatch(line); m != nil {
			table = m[1]
			mark(seen, "[]", table)
			// "# [site.registry] storage = ..." names keys on the same line
			if rest := strings.TrimSpace(line[len(m[0]):]); rest != "" {
				if k := keyLine.FindStringSubmatch(rest); k != nil {
					mark(seen, table, k[1])
				}
			}
			continue
		}
		if m := keyLine.FindStringSubmatch(line); m != nil {
			mark(seen, table, m[1])
		}
	}
	for _, k := range configKeys("", reflect.TypeOf(Config{})) {
		tbl, leaf := "", k
		if i := strings.LastIndexByte(k, '.'); i >= 0 {
			tbl, leaf = k[:i], k[i+1:]
		}
		if !seen[tbl][leaf] && !seen["[]"][k] { // a map is its own table: [groups]
			t.Errorf("key %q is not in gateway.toml.example (add it, commented, with what it does, below [%s])", k, tbl)
		}
	}
}

func mark(seen map[string]map[string]bool, table, key string) {
	if seen[table] == nil {
		seen[table] = map[string]bool{}
	}
	seen[table][key] = true
}
