package gateway

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/wharf-dev/wharf/internal/conf"
)

// configKeys lists every TOML key of t (a struct type) as a dotted path
// ("site.cache.upstream"), following nested tables, arrays of tables and
// pointers to tables; maps are keys of their own (their entries are the
// user's names).
func configKeys(prefix string, t reflect.Type) []string {
	var out []string
	for _, f := range configFields(prefix, t) {
		out = append(out, f.key)
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

// TestConfigReference: docs/config.md has a row for every key the code
// decodes, no row for a key the code no longer reads, and each row's type
// cell agrees with the field's Go type (docType).
func TestConfigReference(t *testing.T) {
	data, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	// "| `site.cache.ttl` | duration | ..." -> key, type cell
	row := regexp.MustCompile("^\\|\\s*`([a-z0-9_.]+)`\\s*\\|\\s*([^|]*?)\\s*\\|")
	doc := map[string]string{}
	for i, line := range strings.Split(string(data), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if _, dup := doc[m[1]]; dup {
			t.Errorf("docs/config.md:%d: key %q listed twice", i+1, m[1])
		}
		doc[m[1]] = m[2]
	}
	code := map[string]bool{}
	for _, f := range configFields("", reflect.TypeOf(Config{})) {
		code[f.key] = true
		typ, ok := doc[f.key]
		if !ok {
			typ := docType(f.typ)
			if typ == "" {
				typ = "TYPE"
			}
			t.Errorf("key %q is not in docs/config.md (add a row: | `%s` | %s | default | meaning |)", f.key, f.key, typ)
			continue
		}
		if want := docType(f.typ); !strings.HasPrefix(typ, want) {
			t.Errorf("docs/config.md: key %q has type %q, want it to start with %q (Go type %v)", f.key, typ, want, f.typ)
		}
	}
	for k := range doc {
		if !code[k] {
			t.Errorf("docs/config.md lists %q, which no config struct decodes (a removed or renamed key?)", k)
		}
	}
}

// field is one decoded key and the Go type of its value.
type field struct {
	key string
	typ reflect.Type
}

// configFields lists every TOML key of t with the Go type of its value
// (see configKeys).
func configFields(prefix string, t reflect.Type) []field {
	var out []field
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
			out = append(out, configFields(path, ft)...)
			continue
		}
		out = append(out, field{path, ft})
	}
	return out
}

// docType is how docs/config.md names a Go type (its type cell starts
// with this).
func docType(t reflect.Type) string {
	switch {
	case t == reflect.TypeOf(conf.Duration(0)):
		return "duration"
	case t == reflect.TypeOf(conf.Secret("")):
		return "secret"
	case t.Kind() == reflect.String && isLeaf(t):
		return "one of" // an enum: UnmarshalText calls conf.ParseEnum
	case isLeaf(t):
		return "" // another text-decoded value (a size, ...): any type cell
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint64, reflect.Uint32:
		return "integer"
	case reflect.Float64, reflect.Float32:
		return "number"
	case reflect.Slice, reflect.Array:
		return "list of " + docType(t.Elem())
	case reflect.Map:
		return "table"
	}
	return ""
}

// TestConfigReferenceDefaults: a default written as a literal in
// docs/config.md ("`\"30s\"`", "`4096`", "`false`") is what SetDefaults
// gives a config that leaves the key out. Defaults that are words
// ("*required*", "every site") or depend on the host ("registry/<host>")
// are not literals and are not compared, nor are keys of tables a
// defaulted config does not have (entries of [[policy]], optional
// sub-tables); TestConfigReference has checked that every row's key
// exists.
func TestConfigReferenceDefaults(t *testing.T) {
	data, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	c := &Config{Sites: []Site{{Backend: KindRegistry}, {Backend: KindCache}, {Backend: KindProxy}}}
	c.setDefaults()
	root := reflect.ValueOf(c).Elem()
	row := regexp.MustCompile("^\\|\\s*`([a-z0-9_.]+)`\\s*\\|[^|]*\\|\\s*`([^`]*)`")
	checked := 0
	for _, line := range strings.Split(string(data), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil || strings.Contains(m[2], "<") {
			continue
		}
		v, ok := valueAt(root, strings.Split(m[1], "."))
		if !ok {
			continue
		}
		checked++
		if got := literal(v); got != m[2] {
			t.Errorf("docs/config.md: %s defaults to %s, the reference says %s", m[1], got, m[2])
		}
	}
	if checked < 20 {
		t.Fatalf("only %d defaults compared: did the table format change?", checked)
	}
}

// valueAt follows a key path through v by toml tags; for an array of
// tables it takes the entry that has the path's next table (the site of
// that backend), or the first. ok is false when the path leads through a
// table the config does not have (a nil pointer, an empty array).
func valueAt(v reflect.Value, path []string) (reflect.Value, bool) {
	for i, name := range path {
		for v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return v, false
			}
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct {
			return v, false
		}
		f, ok := fieldByTag(v, name)
		if !ok {
			return v, false
		}
		v = f
		if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct {
			if v.Len() == 0 {
				return v, false
			}
			el := v.Index(0)
			for j := 0; j < v.Len() && i+1 < len(path); j++ {
				if t, ok := fieldByTag(v.Index(j), path[i+1]); ok && !(t.Kind() == reflect.Pointer && t.IsNil()) {
					el = v.Index(j)
					break
				}
			}
			v = el
		}
	}
	return v, true
}

func fieldByTag(v reflect.Value, name string) (reflect.Value, bool) {
	for i := 0; i < v.NumField(); i++ {
		if tag, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("toml"), ","); tag == name {
			return v.Field(i), true
		}
	}
	return v, false
}

// literal writes v as the reference does: TOML-ish literals.
func literal(v reflect.Value) string {
	if d, ok := v.Interface().(conf.Duration); ok {
		return fmt.Sprintf("%q", d.Std().String())
	}
	switch v.Kind() {
	case reflect.String:
		return fmt.Sprintf("%q", v.String())
	case reflect.Slice:
		var parts []string
		for i := 0; i < v.Len(); i++ {
			parts = append(parts, literal(v.Index(i)))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return fmt.Sprint(v.Interface())
}
