package backend

import (
	"net/http"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	cases := []struct {
		name string
		ok   bool
	}{
		{"a", true}, {"library/ubuntu", true}, {"a.b_c__d---e/f", true}, {"0/1/2", true},
		{strings.Repeat("a", 255), true},
		{"", false}, {"A", false}, {"a/../b", false}, {"..", false}, {"a//b", false}, {"/a", false},
		{"a/", false}, {"a___b", false}, {"a.", false}, {"-a", false}, {"a_", false},
		{strings.Repeat("a", 256), false}, {"a b", false}, {"a:b", false}, {"_catalog", false},
	}
	for _, c := range cases {
		err := ValidateName(c.name)
		if (err == nil) != c.ok {
			t.Errorf("ValidateName(%.20q) = %v, want ok=%v", c.name, err, c.ok)
		}
		if err != nil && (err.Status != http.StatusBadRequest || err.Code != CodeNameInvalid) {
			t.Errorf("ValidateName(%.20q): %d %s", c.name, err.Status, err.Code)
		}
	}
}

func TestParseDigest(t *testing.T) {
	cases := []struct {
		in string
		ok bool
	}{
		{"sha256:" + strings.Repeat("a", 64), true},
		{"sha512:" + strings.Repeat("0", 128), true},
		{"sha256:" + strings.Repeat("A", 64), false},
		{"sha256:" + strings.Repeat("a", 63), false},
		{"sha384:" + strings.Repeat("a", 96), false},
		{"md5:d41d8cd98f00b204e9800998ecf8427e", false},
		{"sha256", false}, {"", false}, {":abc", false},
	}
	for _, c := range cases {
		_, err := ParseDigest(c.in)
		if (err == nil) != c.ok {
			t.Errorf("ParseDigest(%q) = %v, want ok=%v", c.in, err, c.ok)
		}
		if err != nil && err.Code != CodeDigestInvalid {
			t.Errorf("ParseDigest(%q) code %s", c.in, err.Code)
		}
	}
}

func TestParseRange(t *testing.T) {
	cases := []struct {
		h             string
		size          int64
		start, length int64
		ok, bad       bool
	}{
		{"", 10, 0, 0, false, false},
		{"bytes=0-0", 10, 0, 1, true, false},
		{"bytes=2-5", 10, 2, 4, true, false},
		{"bytes=2-", 10, 2, 8, true, false},
		{"bytes=-4", 10, 6, 4, true, false},
		{"bytes=-40", 10, 0, 10, true, false},
		{"bytes=5-100", 10, 5, 5, true, false},
		{"bytes=10-", 10, 0, 0, false, true},
		{"bytes=0-0", 0, 0, 0, false, true},
		{"bytes=-0", 10, 0, 0, false, true},
		{"bytes=4-3", 10, 0, 0, false, true},
		{"bytes=a-b", 10, 0, 0, false, true},
		{"bytes=5", 10, 0, 0, false, true},
		{"bytes=0-1,3-4", 10, 0, 0, false, false},
		{"pages=1-2", 10, 0, 0, false, false},
	}
	for _, c := range cases {
		s, l, ok, err := ParseRange(c.h, c.size)
		if ok != c.ok || (err != nil) != c.bad || (ok && (s != c.start || l != c.length)) {
			t.Errorf("ParseRange(%q, %d) = %d %d %v %v", c.h, c.size, s, l, ok, err)
		}
		if err != nil && err.Status != http.StatusRequestedRangeNotSatisfiable {
			t.Errorf("ParseRange(%q) status %d", c.h, err.Status)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	cases := []struct {
		h          string
		start, end int64
		ok, bad    bool
	}{
		{"", 0, 0, false, false},
		{"0-99", 0, 99, true, false},
		{"100-199", 100, 199, true, false},
		{"bytes 100-199/1000", 100, 199, true, false},
		{"bytes 100-199/*", 100, 199, true, false},
		{"5-4", 0, 0, false, true},
		{"-4", 0, 0, false, true},
		{"a-b", 0, 0, false, true},
		{"10", 0, 0, false, true},
	}
	for _, c := range cases {
		s, e, ok, err := ParseContentRange(c.h)
		if ok != c.ok || (err != nil) != c.bad || (ok && (s != c.start || e != c.end)) {
			t.Errorf("ParseContentRange(%q) = %d %d %v %v", c.h, s, e, ok, err)
		}
	}
}

func TestParseRoute(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	cases := []struct {
		method, path string
		kind         Kind
		repo, ref    string
		action       Action
		code         string
	}{
		{"GET", "/v2/", KindPing, "", "", "", ""},
		{"GET", "/v2", KindPing, "", "", "", ""},
		{"GET", "/v2/_catalog", KindCatalog, "", "", ActionPull, ""},
		{"GET", "/v2/a/b/tags/list", KindTags, "a/b", "", ActionPull, ""},
		{"PUT", "/v2/a/manifests/latest", KindManifest, "a", "latest", ActionPush, ""},
		{"DELETE", "/v2/a/manifests/" + d, KindManifest, "a", d, ActionDelete, ""},
		{"GET", "/v2/a/blobs/" + d, KindBlob, "a", d, ActionPull, ""},
		{"POST", "/v2/a/b/c/blobs/uploads/", KindUploadStart, "a/b/c", "", ActionPush, ""},
		{"PATCH", "/v2/a/blobs/uploads/xyz", KindUpload, "a", "xyz", ActionPush, ""},
		{"GET", "/v2/a/referrers/" + d, KindReferrers, "a", d, ActionPull, ""},
		{"GET", "/v2/manifests/blobs/" + d, KindBlob, "manifests", d, ActionPull, ""},
		{"GET", "/v2/A/blobs/" + d, 0, "", "", "", CodeNameInvalid},
		{"GET", "/v2/a/blobs/sha256:x", 0, "", "", "", CodeDigestInvalid},
		{"GET", "/v2/a/manifests/-tag", 0, "", "", "", CodeManifestInvalid},
		{"GET", "/v2/a/nothing/here", 0, "", "", "", CodeUnsupported},
		{"GET", "/v3/", 0, "", "", "", CodeUnsupported},
	}
	for _, c := range cases {
		rt, err := ParseRoute(c.method, c.path, nil)
		if c.code != "" {
			if err == nil || err.Code != c.code {
				t.Errorf("%s %s: err %v, want %s", c.method, c.path, err, c.code)
			}
			continue
		}
		if err != nil || rt.Kind != c.kind || rt.Repo != c.repo || rt.Reference != c.ref || rt.Action != c.action {
			t.Errorf("%s %s = %+v %v", c.method, c.path, rt, err)
		}
	}
}

func TestParseManifest(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	cfg := `"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + d + `","size":3}`
	cases := []struct {
		name, ct, body, mt, code string
	}{
		{"oci", MediaTypeOCIManifest, `{"schemaVersion":2,"mediaType":"` + MediaTypeOCIManifest + `",` + cfg + `,"layers":[]}`, MediaTypeOCIManifest, ""},
		{"oci without mediaType", MediaTypeOCIManifest, `{"schemaVersion":2,` + cfg + `}`, MediaTypeOCIManifest, ""},
		{"no content type, index shape", "", `{"schemaVersion":2,"manifests":[]}`, MediaTypeOCIIndex, ""},
		{"content type with parameters", MediaTypeOCIIndex + "; charset=utf-8", `{"schemaVersion":2,"manifests":[]}`, MediaTypeOCIIndex, ""},
		{"docker list", MediaTypeDockerManifestList, `{"schemaVersion":2,"mediaType":"` + MediaTypeDockerManifestList + `","manifests":[{"mediaType":"` + MediaTypeDockerManifest + `","digest":"` + d + `","size":1,"platform":{"architecture":"amd64","os":"linux"}}]}`, MediaTypeDockerManifestList, ""},
		{"mismatch", MediaTypeDockerManifest, `{"schemaVersion":2,"mediaType":"` + MediaTypeOCIManifest + `",` + cfg + `}`, "", CodeManifestInvalid},
		{"unknown", "application/x-foo", `{"schemaVersion":2,"mediaType":"application/x-foo"}`, "", CodeManifestInvalid},
		{"schema 3", MediaTypeOCIManifest, `{"schemaVersion":3,` + cfg + `}`, "", CodeManifestInvalid},
		{"index with layers", MediaTypeOCIIndex, `{"schemaVersion":2,"manifests":[],"layers":[]}`, "", CodeManifestInvalid},
		{"bad data field", MediaTypeOCIManifest, `{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"` + d + `","size":3,"data":"YWJj"}}`, "", CodeManifestInvalid},
		{"negative size", MediaTypeOCIManifest, `{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"` + d + `","size":-1}}`, "", CodeManifestInvalid},
		{"bad subject", MediaTypeOCIManifest, `{"schemaVersion":2,` + cfg + `,"subject":{"mediaType":"a/b","digest":"x","size":1}}`, "", CodeManifestInvalid},
		{"trailing junk", MediaTypeOCIManifest, `{"schemaVersion":2,` + cfg + `} x`, "", CodeManifestInvalid},
		{"bad content type", "a b c", `{}`, "", CodeManifestInvalid},
	}
	for _, c := range cases {
		_, mt, err := ParseManifest(c.ct, []byte(c.body))
		if c.code != "" {
			if err == nil || err.Code != c.code {
				t.Errorf("%s: err %v, want %s", c.name, err, c.code)
			}
			continue
		}
		if err != nil || mt != c.mt {
			t.Errorf("%s: %q %v, want %q", c.name, mt, err, c.mt)
		}
	}
}
