package retention

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/internal/conf"
)

const day = 24 * time.Hour

// TestFiftyTags: 50 tags pushed one a day, plus latest and v1.0 long ago;
// keep the newest 10, those of the last 20 days, latest and v*. The
// survivors are exactly c30..c49, latest and v1.0; the manifests of the
// removed tags go (but the one latest names stays); another repository
// no rule matches keeps everything; a dry run first reports exactly what
// the real run then does and changes nothing.
func TestFiftyTags(t *testing.T) {
	e := newEnv(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	digests := map[string]digest.Digest{}
	for i := 0; i < 50; i++ {
		tag := fmt.Sprintf("c%02d", i)
		d := e.put("ci/app", tag, e.image("ci/app", tag, nil))
		digests[tag] = d
		pushed := now.Add(-time.Duration(50-i) * day) // c49 one day ago, c00 fifty
		e.manifestAt("ci/app", d, pushed)
		e.tagAt("ci/app", tag, pushed)
	}
	e.put("ci/app", "latest", e.image("ci/app", "c10", nil)) // same bytes as c10
	e.tagAt("ci/app", "latest", now.Add(-40*day))
	e.manifestAt("ci/app", digests["c10"], now.Add(-40*day))
	digests["v1.0"] = e.put("ci/app", "v1.0", e.image("ci/app", "v1.0", nil))
	e.tagAt("ci/app", "v1.0", now.Add(-300*day))
	e.manifestAt("ci/app", digests["v1.0"], now.Add(-300*day))
	other := e.put("other/app", "old", e.image("other/app", "old", nil))
	e.tagAt("other/app", "old", now.Add(-400*day))
	e.manifestAt("other/app", other, now.Add(-400*day))

	rules := []Rule{{
		Repos:         []string{"ci/*"},
		KeepLast:      10,
		KeepWithin:    conf.Duration(20 * day),
		KeepTags:      []string{"latest", "v*"},
		UntaggedAfter: dur(day),
	}}
	clock := func() time.Time { return now }

	want := []string{"latest", "v1.0"}
	for i := 30; i < 50; i++ {
		want = append(want, fmt.Sprintf("c%02d", i))
	}
	sort.Strings(want)
	wantManifests := map[digest.Digest]bool{digests["v1.0"]: true, digests["c10"]: true}
	for i := 30; i < 50; i++ {
		wantManifests[digests[fmt.Sprintf("c%02d", i)]] = true
	}

	dry, dryItems := e.apply(Options{Host: "registry.test", Rules: rules, Now: clock, DryRun: true})
	if got := e.tags("ci/app"); len(got) != 52 {
		t.Fatalf("dry run removed tags: %d left", len(got))
	}
	res, items := e.apply(Options{Host: "registry.test", Rules: rules, Now: clock})
	if lines(dryItems) != lines(items) || dry.Tags != res.Tags || dry.Manifests != res.Manifests {
		t.Errorf("dry run reported\n%s\nthe real run did\n%s", lines(dryItems), lines(items))
	}
	if got := e.tags("ci/app"); !slices.Equal(got, want) {
		t.Errorf("survivors %v\nwant %v", got, want)
	}
	if res.Tags != 30 || res.Manifests != 29 || res.Repos != 1 {
		t.Errorf("result %+v, want 30 tags, 29 manifests, 1 repository", res)
	}
	for tag, d := range digests {
		if got := e.has("ci/app", d); got != wantManifests[d] {
			t.Errorf("manifest of %s (%s): present %v, want %v", tag, d, got, wantManifests[d])
		}
	}
	if got := e.tags("other/app"); !slices.Equal(got, []string{"old"}) || !e.has("other/app", other) {
		t.Errorf("repository without a rule changed: %v", got)
	}
	wantLine := "rule 1 (repos ci/*): tag ci/app:c05 not in newest 10, older than keep_within 480h0m0s, matches no keep_tags, pushed 45d ago"
	if !strings.Contains(lines(items), wantLine) {
		t.Errorf("report lacks %q:\n%s", wantLine, lines(items))
	}
	// idempotent
	if res, _ := e.apply(Options{Host: "registry.test", Rules: rules, Now: clock}); res.Tags+res.Manifests != 0 {
		t.Errorf("second run removed more: %+v", res)
	}
}

// TestIndexAndReferrers: an index kept by a v* tag stays whole (children,
// the index's signature, a child's SBOM); an old image loses its tag, its
// manifest, its signature (a referrer, however young) and its cosign-style
// signature tag.
func TestIndexAndReferrers(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	old := now.Add(-30 * day)
	amd := e.image("multi", "amd64", nil)
	arm := e.image("multi", "arm64", nil)
	dAmd := e.put("multi", digest.FromBytes(amd).String(), amd)
	dArm := e.put("multi", digest.FromBytes(arm).String(), arm)
	idx := index(amd, arm)
	dIdx := e.put("multi", "v2", idx)
	sig := e.image("multi", "sig of index", descOf(idx))
	dSig := e.put("multi", digest.FromBytes(sig).String(), sig)
	sbom := e.image("multi", "sbom of amd64", descOf(amd))
	dSbom := e.put("multi", digest.FromBytes(sbom).String(), sbom)

	gone := e.image("multi", "old build", nil)
	dGone := e.put("multi", "build-1", gone)
	goneSig := e.image("multi", "sig of old build", descOf(gone))
	dGoneSig := e.put("multi", digest.FromBytes(goneSig).String(), goneSig)
	cosign := e.image("multi", "cosign sig of old build", nil)
	cosignTag := "sha256-" + dGone.Encoded() + ".sig"
	dCosign := e.put("multi", cosignTag, cosign)
	keptCosign := e.image("multi", "cosign sig of index", nil)
	keptCosignTag := "sha256-" + dIdx.Encoded() + ".sig"
	dKeptCosign := e.put("multi", keptCosignTag, keptCosign)

	for _, d := range []digest.Digest{dAmd, dArm, dIdx, dSig, dSbom, dGone, dCosign, dKeptCosign} {
		e.manifestAt("multi", d, old)
	}
	for _, tag := range []string{"v2", "build-1", cosignTag, keptCosignTag} {
		e.tagAt("multi", tag, old)
	}
	e.manifestAt("multi", dGoneSig, now.Add(-time.Minute)) // young by the rules' clock

	rules := []Rule{{KeepTags: []string{"v*"}, UntaggedAfter: dur(time.Hour)}}
	res, items := e.apply(Options{Host: "h", Rules: rules})
	t.Logf("report:\n%s", lines(items))
	if got, want := e.tags("multi"), []string{keptCosignTag, "v2"}; !slices.Equal(got, want) {
		t.Errorf("tags %v, want %v", got, want)
	}
	for _, d := range []digest.Digest{dAmd, dArm, dIdx, dSig, dSbom, dKeptCosign} {
		if !e.has("multi", d) {
			t.Errorf("kept manifest %s is gone", d)
		}
	}
	for _, d := range []digest.Digest{dGone, dGoneSig, dCosign} {
		if e.has("multi", d) {
			t.Errorf("manifest %s should be gone", d)
		}
	}
	if res.Tags != 2 || res.Manifests != 3 {
		t.Errorf("result %+v, want 2 tags, 3 manifests", res)
	}
	// the removed referrer is no longer listed for its subject
	if st, _, b := e.do("GET", "/v2/multi/referrers/"+string(dGone), nil, ""); st != 200 || strings.Contains(string(b), string(dGoneSig)) {
		t.Errorf("referrers of the removed manifest: %d %s", st, b)
	}
	if !strings.Contains(lines(items), "referrer of removed manifest "+string(dGone)) {
		t.Errorf("report does not say why the signature went:\n%s", lines(items))
	}
}

// TestRefuseEmpty: a rule that would remove every tag of a repository
// changes nothing there unless it says allow_empty.
func TestRefuseEmpty(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	for _, tag := range []string{"a", "b"} {
		d := e.put("app", tag, e.image("app", tag, nil))
		e.tagAt("app", tag, now.Add(-10*day))
		e.manifestAt("app", d, now.Add(-10*day))
	}
	e.put("keeps", "v1", e.image("keeps", "v1", nil))
	rule := Rule{KeepTags: []string{"v*"}, UntaggedAfter: dur(0)}
	res, items := e.apply(Options{Rules: []Rule{rule}})
	if got := e.tags("app"); len(got) != 2 || len(res.Refused) != 1 || res.Refused[0] != "app" || res.Tags != 0 {
		t.Fatalf("refusal: tags %v, result %+v", got, res)
	}
	want := "rule 1 (every repository): repository app refused: the rule would remove all 2 tags; nothing removed (set allow_empty = true to allow this)"
	if lines(items) != want {
		t.Errorf("report\n%s\nwant\n%s", lines(items), want)
	}
	rule.AllowEmpty = true
	res, _ = e.apply(Options{Rules: []Rule{rule}})
	if got := e.tags("app"); res.Tags != 2 || res.Manifests != 2 || len(got) != 0 {
		t.Errorf("allow_empty: result %+v, tags %v", res, got)
	}
	if got := e.tags("keeps"); !slices.Equal(got, []string{"v1"}) {
		t.Errorf("keeps: %v", got)
	}
}

// TestRepushWins: a tag pushed again (to another image) between the
// decision and the removal stays, and so does its new manifest; a tag
// pushed onto a manifest about to go keeps that manifest.
func TestRepushWins(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	old := now.Add(-10 * day)
	dOld := e.put("app", "build-1", e.image("app", "1", nil))
	dOld2 := e.put("app", "build-2", e.image("app", "2", nil))
	e.put("app", "v1", e.image("app", "v1", nil))
	for _, tag := range []string{"build-1", "build-2"} {
		e.tagAt("app", tag, old)
	}
	e.manifestAt("app", dOld, old)
	e.manifestAt("app", dOld2, old)
	var dNew digest.Digest
	o := Options{Rules: []Rule{{KeepTags: []string{"v*"}, UntaggedAfter: dur(day)}}, Grace: -1}
	o.beforeDelete = func(string) {
		dNew = e.put("app", "build-1", e.image("app", "1 again", nil))
		e.put("app", "rescue", e.image("app", "2", nil)) // same bytes as build-2
	}
	res, items := e.apply(o)
	t.Logf("report:\n%s", lines(items))
	if got, want := e.tags("app"), []string{"build-1", "rescue", "v1"}; !slices.Equal(got, want) {
		t.Errorf("tags %v, want %v", got, want)
	}
	if !e.has("app", dNew) || !e.has("app", dOld2) {
		t.Errorf("a manifest a racing push tagged is gone")
	}
	if e.has("app", dOld) {
		t.Errorf("the manifest build-1 named before the push should be gone")
	}
	if res.Raced == 0 {
		t.Errorf("no race counted: %+v", res)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Rule
		keys []string
	}{
		{"contract example", Rule{Repos: []string{"ci/*"}, KeepLast: 10, KeepWithin: conf.Duration(720 * time.Hour), KeepTags: []string{"latest", "v*"}, UntaggedAfter: dur(day)}, nil},
		{"keeps nothing", Rule{Repos: []string{"ci/*"}}, []string{"keep_last"}},
		{"keeps nothing, allowed", Rule{Repos: []string{"ci/*"}, AllowEmpty: true}, nil},
		{"negative keep_last", Rule{KeepLast: -1, KeepTags: []string{"x"}}, []string{"keep_last"}},
		{"bad globs", Rule{Repos: []string{"", "/abs"}, KeepTags: []string{"a b"}, KeepLast: 1}, []string{"repos", "repos", "keep_tags"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var keys []string
			for _, p := range tc.r.Validate() {
				keys = append(keys, p.Key)
			}
			if !slices.Equal(keys, tc.keys) {
				t.Errorf("problems at %v, want %v (%v)", keys, tc.keys, tc.r.Validate())
			}
		})
	}
}

func TestMatches(t *testing.T) {
	for _, tc := range []struct {
		hosts, repos []string
		host, repo   string
		want         bool
	}{
		{nil, nil, "a.test", "x", true},
		{nil, []string{"ci/*"}, "a.test", "ci/app", true},
		{nil, []string{"ci/*"}, "a.test", "ci/x/app", true},
		{nil, []string{"ci/*"}, "a.test", "cix", false},
		{[]string{"b.test"}, nil, "a.test", "x", false},
		{[]string{"*.test"}, []string{"x"}, "A.test", "x", true},
	} {
		r := Rule{Hosts: tc.hosts, Repos: tc.repos}
		if got := r.Matches(tc.host, tc.repo); got != tc.want {
			t.Errorf("%v %v on %s/%s: %v", tc.hosts, tc.repos, tc.host, tc.repo, got)
		}
	}
}
