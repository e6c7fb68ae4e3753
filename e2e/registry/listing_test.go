package registry_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// TestCatalogAndTagsPagination: after pushes with crane, `crane catalog`
// and `crane ls` list everything, and the raw API pages with n= and a Link
// header that leads through every entry exactly once, in lexical order.
func TestCatalogAndTagsPagination(t *testing.T) {
	harness.ForEachTarget(t, func(t *testing.T, tg harness.Target) {
		crane := harness.Crane(t)
		reg := tg.Start(t)
		img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 1, 16<<10)
		tar := harness.WriteDockerArchive(t, img, "wharf-e2e.test/list:v1")
		var repos []string
		for _, r := range []string{"c", "a", "b/x", "b"} {
			repos = append(repos, repoName(t, r))
		}
		tags := []string{"v2", "v10", "latest", "v1", "1.0"}
		for i, r := range repos {
			crane.Must(t, "push", "--insecure", tar, reg.Addr()+"/"+r+":"+tags[i])
		}
		for _, tag := range tags {
			crane.Must(t, "tag", "--insecure", reg.Addr()+"/"+repos[0]+":"+tags[0], tag)
		}
		slices.Sort(repos)
		slices.Sort(tags)

		gotRepos := strings.Fields(crane.Must(t, "catalog", "--insecure", reg.Addr()))
		if !slices.Equal(gotRepos, repos) {
			t.Errorf("crane catalog %v, want %v", gotRepos, repos)
		}
		// Tags must come in lexical order; a reference server that does
		// not is only checked for the set.
		order := func(s []string) []string {
			if tg.Works(harness.FeatureLexicalTags) {
				return s
			}
			return slices.Sorted(slices.Values(s))
		}
		if got := order(strings.Fields(crane.Must(t, "ls", "--insecure", reg.Addr()+"/"+repos[len(repos)-1]))); !slices.Equal(got, tags) {
			t.Errorf("crane ls %v, want %v", got, tags)
		}

		raw := harness.NewRawClient(reg.URL())
		if got := pages(t, raw, "/v2/_catalog?n=3", "repositories"); !slices.Equal(got, repos) {
			t.Errorf("catalog pages %v, want %v", got, repos)
		}
		tagsPath := "/v2/" + repos[len(repos)-1] + "/tags/list?n=2"
		if got := order(pages(t, raw, tagsPath, "tags")); !slices.Equal(got, tags) {
			t.Errorf("tag pages %v, want %v", got, tags)
		}
	})
}

var linkNextRE = regexp.MustCompile(`^<([^>]+)>;\s*rel="?next"?`)

// pages follows Link rel="next" headers from path and concatenates the
// JSON array field of every page.
func pages(t *testing.T, raw *harness.RawClient, path, field string) []string {
	t.Helper()
	var all []string
	for i := 0; path != ""; i++ {
		if i > 20 {
			t.Fatalf("more than 20 pages: the Link chain does not end")
		}
		r := raw.Do(t, http.MethodGet, path, nil, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
		}
		var page map[string]json.RawMessage
		if err := json.Unmarshal(r.Body, &page); err != nil {
			t.Fatalf("GET %s: %v\n%s", path, err, r.Body)
		}
		var items []string
		if b, ok := page[field]; ok && string(b) != "null" {
			if err := json.Unmarshal(b, &items); err != nil {
				t.Fatalf("GET %s: %s: %v", path, field, err)
			}
		}
		all = append(all, items...)
		path = ""
		if link := r.Header.Get("Link"); link != "" {
			m := linkNextRE.FindStringSubmatch(link)
			if m == nil {
				t.Fatalf("GET %s: unparsable Link %q", path, link)
			}
			path = m[1]
			if !strings.HasPrefix(path, "/v2/") {
				t.Fatalf("Link %q does not point into /v2/", link)
			}
		}
		if len(items) == 0 && path != "" {
			t.Fatalf("an empty page with a next Link: %s", fmt.Sprint(r.Header))
		}
	}
	return all
}
