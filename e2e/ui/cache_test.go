package ui_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// uiCacheConfig: one plain-HTTP mirror of a docker-registry, no logins,
// with max_age so the page says when eviction comes.
const uiCacheConfig = `data_dir = "{{.DataDir}}"
[listen]
http  = "{{.HTTP}}"
https = ""
admin = ""
[[site]]
host    = "127.0.0.1"
backend = "cache"
tls     = "off"
[site.cache]
upstream = "{{.Vars.upstream}}"
max_age  = "720h"
`

// TestBrowserCacheUI: a Docker schema 2 image in docker-registry, pulled by
// crane through wharf's mirror, then browsed in Chromium: the mirror shows
// what it cached, from which upstream, when it was last pulled and when
// max_age evicts it, with the layers' sizes.
func TestBrowserCacheUI(t *testing.T) {
	chromium := harness.Require(t, "chromium")
	crane := harness.Crane(t)
	up := harness.StartDockerRegistry(t, "")
	img := harness.RandomImage(t, harness.DockerFormat, "linux/arm64/v8", 2, 48<<10)
	crane.Must(t, "push", "--insecure", harness.WriteDockerArchive(t, img, "wharf-e2e.test/tool:1.0"), up.Addr()+"/library/tool:1.0")
	w := harness.StartWharf(t, uiCacheConfig, harness.WithVars(map[string]any{"upstream": up.URL()}))
	crane.Must(t, "pull", "--insecure", w.Addr()+"/library/tool:1.0", filepath.Join(t.TempDir(), "tool.tar"))

	b := newBrowser(t, chromium)
	tab := b.tab(t)
	tab.open(w.URL()+"/", 200)
	tab.shot("20-cache-repositories")
	if got := tab.text("header .kind"); got != "cache of "+up.URL() {
		t.Errorf("header says %q", got)
	}
	tab.navigate(chromedp.Click(chromedp.CSS(`a[href="/r/library/tool"]`)))
	tab.shot("21-cache-tags")
	head := tab.text("#tags thead")
	row := tab.text(`tr[data-tag="1.0"]`)
	for _, want := range []string{"Last pulled", "Checked upstream", "Evicted after"} {
		if !strings.Contains(strings.ToLower(head), strings.ToLower(want)) {
			t.Errorf("tags table lacks the column %q: %q", want, head)
		}
	}
	if !strings.Contains(row, "linux/arm64/v8") || !strings.Contains(row, "application/vnd.docker.distribution.manifest.v2+json") || strings.Count(row, "UTC") < 3 {
		t.Errorf("cached tag row: %q", row)
	}
	tab.navigate(chromedp.Click(chromedp.CSS(`tr[data-tag="1.0"] a.digest`)))
	tab.shot("22-cache-image")
	if got, want := tab.text("#total"), fmt.Sprintf("(%d bytes", imageSize(t, img)); !strings.Contains(got, want) {
		t.Errorf("cached image total %q, want %s", got, want)
	}
	if n := tab.count("#layers tbody tr"); n != 2 {
		t.Errorf("%d layers shown, want 2", n)
	}
	if n := tab.count("button.danger"); n != 0 {
		t.Errorf("a mirror shows %d delete buttons", n)
	}
}
