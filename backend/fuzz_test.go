package backend

import (
	"strings"
	"testing"
)

// Fuzz targets for every parser that sees client input. Seeds live in
// testdata/fuzz/<Target>/; run one with e.g.
//
//	go test ./backend -run '^$' -fuzz FuzzParseRoute -fuzztime 30s

func FuzzValidateName(f *testing.F) {
	f.Add("library/ubuntu")
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name)
		if err == nil {
			if len(name) > MaxNameLength || strings.Contains(name, "..") || strings.Contains(name, "//") ||
				strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.ToLower(name) != name {
				t.Fatalf("accepted bad name %q", name)
			}
		} else if err.Status != 400 || err.Code != CodeNameInvalid {
			t.Fatalf("name %q: %d %s", name, err.Status, err.Code)
		}
	})
}

func FuzzParseDigest(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("a", 64))
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if err != nil {
			if err.Status != 400 || err.Code != CodeDigestInvalid {
				t.Fatalf("%q: %d %s", s, err.Status, err.Code)
			}
			return
		}
		if d.String() != s || d.Validate() != nil || strings.ContainsAny(s, "/\\.") {
			t.Fatalf("accepted %q as %q", s, d)
		}
	})
}

func FuzzParseRoute(f *testing.F) {
	f.Add("GET", "/v2/a/b/manifests/latest", "")
	f.Fuzz(func(t *testing.T, method, path, from string) {
		rt, err := ParseRoute(method, path, func(k string) string {
			switch k {
			case "mount":
				return "sha256:" + strings.Repeat("a", 64)
			case "from":
				return from
			}
			return ""
		})
		if err != nil {
			if err.Status < 400 || err.Status > 499 {
				t.Fatalf("%s %q: status %d", method, path, err.Status)
			}
			return
		}
		if rt.Kind != KindPing && rt.Kind != KindCatalog && ValidateName(rt.Repo) != nil {
			t.Fatalf("%q: invalid repo %q accepted", path, rt.Repo)
		}
		if rt.MountFrom != "" && ValidateName(rt.MountFrom) != nil {
			t.Fatalf("invalid mount source %q accepted", rt.MountFrom)
		}
		switch rt.Kind {
		case KindBlob, KindReferrers:
			if _, e := ParseDigest(rt.Reference); e != nil {
				t.Fatalf("%q: bad digest %q accepted", path, rt.Reference)
			}
		case KindManifest:
			if strings.ContainsAny(rt.Reference, "/") {
				t.Fatalf("%q: reference %q", path, rt.Reference)
			}
		}
		checkTyped(t, rt)
	})
}

// checkTyped: the typed forms of a route agree with its Reference.
func checkTyped(t *testing.T, rt *Route) {
	set := 0
	for _, ok := range []bool{rt.Tag != "", rt.Digest != "", rt.BadDigest != nil, rt.UploadID != ""} {
		if ok {
			set++
		}
	}
	want := map[Kind]int{KindManifest: 1, KindBlob: 1, KindReferrers: 1, KindUpload: 1}[rt.Kind]
	if set != want {
		t.Fatalf("%s route %+v: %d typed references set, want %d", rt.Kind, rt, set, want)
	}
	for _, v := range []string{rt.Tag, string(rt.Digest), rt.UploadID} {
		if v != "" && v != rt.Reference {
			t.Fatalf("typed reference %q differs from %q", v, rt.Reference)
		}
	}
	if rt.MountDigest != "" && rt.MountDigest.Validate() != nil {
		t.Fatalf("invalid mount digest %q accepted", rt.MountDigest)
	}
}

func FuzzParseAccept(f *testing.F) {
	f.Add("application/vnd.oci.image.manifest.v1+json; q=0.9, */*")
	f.Fuzz(func(t *testing.T, v string) {
		for _, mt := range ParseAccept([]string{v, v}) {
			if mt == "" || strings.ContainsAny(mt, ",; ") || strings.ToLower(mt) != mt {
				t.Fatalf("%q: media type %q", v, mt)
			}
		}
	})
}

func FuzzParseRange(f *testing.F) {
	f.Add("bytes=0-10", int64(100))
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			size = -size
		}
		if size < 0 { // MinInt64
			return
		}
		s, l, ok, err := ParseRange(h, size)
		if ok && (s < 0 || l <= 0 || s+l > size) {
			t.Fatalf("%q size %d: start %d length %d", h, size, s, l)
		}
		if err != nil && err.Status != 416 {
			t.Fatalf("%q: status %d", h, err.Status)
		}
		a, b, ok, _ := ParseContentRange(h)
		if ok && (a < 0 || b < a) {
			t.Fatalf("content range %q: %d-%d", h, a, b)
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	f.Add(MediaTypeOCIManifest, []byte(`{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:`+strings.Repeat("a", 64)+`","size":1}}`))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		m, mt, err := ParseManifest(ct, body)
		if err != nil {
			if err.Status != 400 {
				t.Fatalf("status %d", err.Status)
			}
			return
		}
		if !IsManifestMediaType(mt) || m.SchemaVersion != 2 {
			t.Fatalf("accepted %q schema %d", mt, m.SchemaVersion)
		}
		if IsIndex(mt) {
			for _, c := range m.Manifests {
				if _, e := ParseDigest(string(c.Digest)); e != nil {
					t.Fatalf("child digest %q accepted", c.Digest)
				}
			}
		} else if m.Config == nil {
			t.Fatal("image manifest without config accepted")
		}
	})
}
