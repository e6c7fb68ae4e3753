// Package ui_test drives wharf's web UI (issue #13) with a real headless
// Chromium against the real binary: images pushed by crane, logins through
// the form, policy filtering, a delete with its confirmation, and a hostile
// label that must show as text. Every page visited is saved as a PNG under
// the test's temp dir, and into $WHARF_UI_SHOTS when it is set.
package ui_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/wharf-dev/wharf/e2e/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// uiConfig: a registry with deletes; anonymous viewers see public/*, bob
// pulls everything but secret/*, alice may do everything.
const uiConfig = `data_dir = "{{.DataDir}}"
[listen]
http  = "{{.HTTP}}"
https = ""
admin = "{{.Admin}}"
[auth]
htpasswd = "{{.Vars.htpasswd}}"
[[site]]
host    = "127.0.0.1"
backend = "registry"
tls     = "off"
[site.registry]
delete = true
[[policy]]
repos = ["secret/*"]
users = ["alice"]
allow = ["pull", "push", "delete"]
[[policy]]
repos = ["secret/*"]
users = ["*", "anonymous"]
allow = []
[[policy]]
repos = ["public/*"]
users = ["anonymous"]
allow = ["pull"]
[[policy]]
users = ["alice"]
allow = ["pull", "push", "delete"]
[[policy]]
users = ["bob"]
allow = ["pull"]
`

var passwords = map[string]string{"alice": "alice-ui-pw", "bob": "bob-ui-pw"}

// hostile is a label value that would run script if it were not escaped.
const hostile = `<script>window.pwned=1</script><img src=x onerror="window.pwned=2">`

func TestBrowserUI(t *testing.T) {
	chromium := harness.Require(t, "chromium")
	crane := harness.Crane(t)
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	var lines []string
	for u, pw := range passwords {
		lines = append(lines, passwdLine(t, u, pw))
	}
	if err := os.WriteFile(htpasswd, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w := harness.StartWharf(t, uiConfig, harness.WithVars(map[string]any{"htpasswd": htpasswd}))
	reg := w.Addr()
	if out, err := crane.RunStdin(t, passwords["alice"]+"\n", "auth", "login", reg, "-u", "alice", "--password-stdin"); err != nil {
		t.Fatalf("crane auth login: %v\n%s", err, out)
	}

	// a multi-platform index pushed by crane, two team images (one with a
	// hostile label), a secret one
	idx := harness.RandomIndex(t, []string{"linux/amd64", "linux/arm64/v8"}, 2, 64<<10)
	crane.Must(t, "push", "--insecure", harness.WriteOCILayout(t, "multi", idx), reg+"/public/web:v1")
	push := func(ref string, labels map[string]string) v1.Image {
		img := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 2, 32<<10)
		if labels != nil {
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			c := cf.Config
			c.Labels = labels
			if img, err = mutate.Config(img, c); err != nil {
				t.Fatal(err)
			}
		}
		crane.Must(t, "push", "--insecure", harness.WriteOCILayout(t, strings.NewReplacer("/", "-", ":", "-").Replace(ref), img), reg+"/"+ref)
		return img
	}
	push("team/app:v1", nil)
	evil := push("team/app:v2", map[string]string{"org.example.note": hostile})
	push("secret/keys:v1", nil)
	evilDigest := harness.MustDigest(t, evil)
	idxDigest := harness.MustDigest(t, idx)

	b := newBrowser(t, chromium)
	base := w.URL()

	t.Run("anonymous", func(t *testing.T) {
		tab := b.tab(t)
		tab.open(base+"/", 200)
		tab.shot("01-anonymous-repositories")
		text := tab.text("main")
		if !strings.Contains(text, "public/web") || strings.Contains(text, "team/app") || strings.Contains(text, "secret/keys") {
			t.Fatalf("anonymous repositories page:\n%s", text)
		}
		tab.open(base+"/r/team/app", 404)
	})

	t.Run("bob", func(t *testing.T) {
		tab := b.tab(t)
		tab.login(base, "bob")
		tab.shot("02-bob-repositories")
		// search
		tab.do(chromedp.SetValue(chromedp.CSS(`form.search input[name=q]`), "web"))
		tab.navigate(chromedp.Click(chromedp.CSS(`form.search button`)))
		if text := tab.text("main"); !strings.Contains(text, "public/web") || strings.Contains(text, "team/app") {
			t.Fatalf("search for web:\n%s", text)
		}
		tab.shot("03-bob-search")
		// open the repository, then the index
		tab.navigate(chromedp.Click(chromedp.CSS(`a[href="/r/public/web"]`)))
		tab.shot("04-bob-tags")
		row := tab.text(`tr[data-tag="v1"]`)
		if !strings.Contains(row, "linux/amd64, linux/arm64/v8") || !strings.Contains(row, "application/vnd.oci.image.index.v1+json") {
			t.Fatalf("tag row of the index: %q", row)
		}
		if n := tab.count("button.danger"); n != 0 {
			t.Fatalf("bob sees %d delete buttons", n)
		}
		tab.navigate(chromedp.Click(chromedp.CSS(`tr[data-tag="v1"] a.digest`)))
		tab.shot("05-bob-index")
		if got := tab.text("#digest"); got != idxDigest.String() {
			t.Fatalf("index page digest %q, want %s", got, idxDigest)
		}
		// the sizes: each platform's manifest, config and layers, and the sum
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		idxSize := mustSize(t, idx.RawManifest)
		total := idxSize
		plat := tab.text("#platforms")
		for _, d := range im.Manifests {
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			n := imageSize(t, img)
			total += n
			if !strings.Contains(plat, d.Platform.String()) {
				t.Errorf("platform %s missing from %q", d.Platform, plat)
			}
			// the child's own page gives its exact byte count
			tab.open(base+"/r/public/web@"+d.Digest.String(), 200)
			if got := tab.text("#total"); !strings.Contains(got, fmt.Sprintf("(%d bytes", n)) {
				t.Errorf("%s: total %q, want %d bytes", d.Platform, got, n)
			}
			if got := tab.text("#layers"); strings.Count(got, "KiB") != 2 {
				t.Errorf("%s: layers %q", d.Platform, got)
			}
		}
		tab.shot("06-bob-image")
		tab.open(base+"/r/public/web@"+idxDigest.String(), 200)
		if got := tab.text("#total"); !strings.Contains(got, fmt.Sprintf("(%d bytes", total)) {
			t.Errorf("index total %q, want %d bytes", got, total)
		}
		if got := tab.text(".pull"); !strings.Contains(got, "docker pull "+reg+"/public/web:v1") || !strings.Contains(got, "podman pull "+reg+"/public/web:v1") {
			t.Errorf("pull lines: %q", got)
		}
		// the policy hides secret/*: not listed, and 404 like a missing one
		tab.open(base+"/", 200)
		if strings.Contains(tab.text("main"), "secret") {
			t.Fatal("bob sees secret/keys")
		}
		tab.open(base+"/r/secret/keys", 404)
		tab.shot("07-bob-hidden")
		// the hostile label is text, and nothing ran
		tab.open(base+"/r/team/app@"+evilDigest.String(), 200)
		tab.shot("08-bob-hostile-label")
		if got := tab.text("#labels .label-value"); got != hostile {
			t.Fatalf("label shows %q, want the literal %q", got, hostile)
		}
		if pwned := tab.eval(`typeof window.pwned`); pwned != "undefined" {
			t.Fatalf("the label's script ran: window.pwned is %s", pwned)
		}
		if n := tab.count(`#labels script, #labels img`); n != 0 {
			t.Fatalf("the label made %d elements", n)
		}
	})

	t.Run("alice deletes a tag", func(t *testing.T) {
		tab := b.tab(t)
		tab.login(base, "alice")
		if !strings.Contains(tab.text("main"), "secret/keys") {
			t.Fatal("alice does not see secret/keys")
		}
		tab.open(base+"/r/team/app", 200)
		tab.shot("09-alice-tags")
		tab.navigate(chromedp.Click(chromedp.CSS(`tr[data-tag="v1"] button.danger`)))
		tab.shot("10-alice-confirm")
		if got := tab.text("main"); !strings.Contains(got, "team/app:v1") {
			t.Fatalf("confirmation page: %q", got)
		}
		tab.navigate(chromedp.Click(chromedp.ID("confirm")))
		if got := tab.text("#deleted"); got != "Deleted v1." {
			t.Errorf("notice after the delete: %q", got)
		}
		if tab.count(`tr[data-tag="v1"]`) != 0 || tab.count(`tr[data-tag="v2"]`) != 1 {
			t.Fatalf("after the delete: %q", tab.text("#tags"))
		}
		tab.shot("11-alice-deleted")
		if tags := strings.Fields(crane.Must(t, "ls", "--insecure", reg+"/team/app")); !slices.Equal(tags, []string{"v2"}) {
			t.Fatalf("crane ls after the delete: %v", tags)
		}
	})
}

func mustSize(t *testing.T, raw func() ([]byte, error)) int64 {
	t.Helper()
	b, err := raw()
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(b))
}

// imageSize is what a pull of img fetches: manifest, config, layers.
func imageSize(t *testing.T, img v1.Image) int64 {
	t.Helper()
	n := mustSize(t, img.RawManifest) + mustSize(t, img.RawConfigFile)
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		s, err := l.Size()
		if err != nil {
			t.Fatal(err)
		}
		n += s
	}
	return n
}

// passwdLine runs `wharf passwd USER` with the password on stdin.
func passwdLine(t *testing.T, user, pw string) string {
	t.Helper()
	out, err := (&harness.Tool{Name: "wharf", Path: harness.WharfBinary(t)}).RunStdin(t, pw+"\n", "passwd", user)
	if err != nil {
		t.Fatalf("wharf passwd %s: %v\n%s", user, err, out)
	}
	return strings.TrimSpace(out)
}

// browser is one headless Chromium for the test.
type browser struct {
	ctx   context.Context
	shots []string // folders screenshots go to
}

func newBrowser(t *testing.T, path string) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelA() })
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		if harness.InCI() {
			t.Fatalf("start chromium: %v", err)
		}
		harness.MissingPeer(t, "chromium does not start: %v", err)
	}
	b := &browser{ctx: ctx, shots: []string{t.TempDir()}}
	if dir := os.Getenv("WHARF_UI_SHOTS"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		b.shots = append(b.shots, dir)
	}
	t.Logf("screenshots in %s", strings.Join(b.shots, " and "))
	return b
}

// tab is a fresh browser context (own cookies) for one user.
type tab struct {
	t   *testing.T
	b   *browser
	ctx context.Context
}

func (b *browser) tab(t *testing.T) *tab {
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	// a hang guard for every step of this tab, not a speed check
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancelT)
	return &tab{t: t, b: b, ctx: ctx}
}

func (tb *tab) do(steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	if err := chromedp.Do(tb.ctx, steps...); err != nil {
		tb.t.Fatal(err)
	}
}

// navigate runs steps that load a new page and waits for it.
func (tb *tab) navigate(steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	resp, err := chromedp.RunResponse(tb.ctx, steps...)
	if err != nil {
		tb.t.Fatal(err)
	}
	if resp.Status >= 400 {
		tb.t.Fatalf("%s: status %d", resp.URL, resp.Status)
	}
}

// open loads url and checks the status.
func (tb *tab) open(url string, status int64) {
	tb.t.Helper()
	resp, err := chromedp.Run(tb.ctx, chromedp.NavigateResponse(url))
	if err != nil {
		tb.t.Fatal(err)
	}
	if resp.Status != status {
		tb.t.Fatalf("%s: status %d, want %d", url, resp.Status, status)
	}
}

func (tb *tab) login(base, user string) {
	tb.t.Helper()
	tb.open(base+"/login", 200)
	tb.do(chromedp.SendKeys(chromedp.ID("username"), user), chromedp.SendKeys(chromedp.ID("password"), passwords[user]))
	tb.shot("00-login-" + user)
	tb.navigate(chromedp.Click(chromedp.ID("submit")))
	if got := tb.text("#user"); got != user {
		tb.t.Fatalf("logged in as %q, want %s", got, user)
	}
}

func (tb *tab) text(sel string) string {
	tb.t.Helper()
	s, err := chromedp.Run(tb.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		tb.t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

func (tb *tab) eval(js string) string {
	tb.t.Helper()
	s, err := chromedp.Run(tb.ctx, chromedp.Evaluate[string](js))
	if err != nil {
		tb.t.Fatalf("evaluate %s: %v", js, err)
	}
	return s
}

func (tb *tab) count(sel string) int {
	tb.t.Helper()
	n, err := chromedp.Run(tb.ctx, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
	if err != nil {
		tb.t.Fatalf("count %s: %v", sel, err)
	}
	return n
}

// shot saves a full-page PNG of the current page.
func (tb *tab) shot(name string) {
	tb.t.Helper()
	png, err := chromedp.Run(tb.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.t.Fatalf("screenshot %s: %v", name, err)
	}
	var errs []error
	for _, dir := range tb.b.shots {
		errs = append(errs, os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644))
	}
	if err := errors.Join(errs...); err != nil {
		tb.t.Fatal(err)
	}
}
