// Package retention applies [[retention]] rules to a registry store: per
// repository, the first matching rule keeps the newest tags, recent tags
// and tags matching patterns, removes the other tags, and (with
// untagged_after) the manifests no kept tag reaches any more. It runs on a
// store that a registry is serving at the same time; blobs are left to the
// garbage collector (backend/registry/gc), which runs after it.
//
// # Push time
//
// A tag's push time is the modification time of its record (the file
// _tags/<tag> on the local file system): the registry writes the record
// anew (temp file and rename) on every push of the tag, also of the same
// digest, so it is the time the tag was last pushed. A manifest's push
// time is likewise that of its revision record, which a push of the
// manifest, or of an index listing it, refreshes. wharf import writes the
// records anew: imported tags count as pushed at the import.
//
// # What is kept
//
// Tags: the KeepLast newest, those pushed within KeepWithin, those
// matching KeepTags. Tags named like cosign's or the OCI referrers
// fallback's ("sha256-<hex>", "sha256-<hex>.sig", ".att", ".sbom") whose
// digest is a manifest of the repository are not counted: they stay
// exactly when that manifest stays. Manifests: every one a kept tag
// reaches, the children of a kept index, the referrers (signatures,
// SBOMs: manifests whose subject is kept) of kept manifests, transitively.
// With UntaggedAfter, every other manifest last pushed longer ago goes,
// and with it the referrers of removed manifests.
//
// A rule that would remove every tag of a repository is refused there
// (nothing in that repository changes, the Result lists it) unless the
// rule says AllowEmpty.
//
// # Safety while serving
//
// A tag is removed with storage.Clock.DeleteRecordIfOlder at the time
// seen when deciding: if the tag was pushed again since (to any digest),
// the removal does nothing. Before manifests go, the tags are listed
// again and everything they reach is kept; a manifest is removed only if
// its record was neither rewritten since it was looked at nor touched
// within Grace of the real clock (a push stores the manifest record
// before its tag, and an index push touches its children's records before
// checking them, so a push under way keeps what it needs; see the gc
// package's notes on the same scheme).
package retention

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/layout"
	"github.com/wharf-dev/wharf/backend/storage/sweep"
	"github.com/wharf-dev/wharf/internal/glob"
)

// DefaultWorkers is how many repositories a run works on at once.
const DefaultWorkers = 8

// DefaultGrace: a manifest record written or touched more recently than
// this (by the real clock) is never removed, whatever the rules say.
const DefaultGrace = time.Hour

// Options configures one run over one registry store.
type Options struct {
	// Host is the site the store serves; rules with hosts match on it.
	Host string
	// Rules in config order; only those that can apply to Host matter.
	Rules []Rule
	// DryRun decides and reports, removes nothing.
	DryRun bool
	// Now is the rules' clock (keep_within, untagged_after); default
	// time.Now. Tests inject a clock to simulate time passing.
	Now func() time.Time
	// Grace protects freshly written manifest records by the real clock
	// (see the package doc). Zero means DefaultGrace, negative none.
	Grace time.Duration
	// Report is called for every tag and manifest removed (or that would
	// be) and every refused repository, in repository order, after the
	// run; may be nil.
	Report func(Item)
	// Workers is how many repositories are worked on at once; default
	// DefaultWorkers.
	Workers int

	// beforeDelete runs between deciding and removing, per repository
	// (tests: a push racing retention).
	beforeDelete func(repo string)
}

// Kind says what an Item is about.
type Kind string

// Kinds of report items.
const (
	KindTag      Kind = "tag"
	KindManifest Kind = "manifest"
	KindRefused  Kind = "refused" // the rule would empty the repository
)

// Item is one decision of a run.
type Item struct {
	Kind   Kind          `json:"kind"`
	Rule   int           `json:"rule"`      // 1-based position of the [[retention]] table
	Desc   string        `json:"rule_desc"` // "repos ci/*"
	Repo   string        `json:"repository"`
	Tag    string        `json:"tag,omitempty"`
	Digest digest.Digest `json:"digest,omitempty"`
	Reason string        `json:"reason"`
	// Pushed is the push time the decision was based on.
	Pushed time.Time `json:"pushed,omitzero"`
}

// String is the report line: "rule 1 (repos ci/*): tag ci/app:abc123 not
// in newest 10, pushed 41d ago".
func (it Item) String() string {
	switch it.Kind {
	case KindTag:
		return fmt.Sprintf("rule %d (%s): tag %s:%s %s", it.Rule, it.Desc, it.Repo, it.Tag, it.Reason)
	case KindManifest:
		return fmt.Sprintf("rule %d (%s): manifest %s@%s %s", it.Rule, it.Desc, it.Repo, it.Digest, it.Reason)
	default:
		return fmt.Sprintf("rule %d (%s): repository %s refused: %s", it.Rule, it.Desc, it.Repo, it.Reason)
	}
}

// Result counts what a run removed (or would remove).
type Result struct {
	Repos     int      `json:"repositories"` // repositories a rule matched
	Tags      int      `json:"tags_removed"`
	Manifests int      `json:"manifests_removed"`
	Refused   []string `json:"refused,omitempty"` // repositories left alone because every tag would go
	// Raced counts removals skipped because a push changed the tag or
	// manifest after the decision (or it was deleted meanwhile).
	Raced int `json:"raced"`
}

// Store is what retention needs of a registry site's store: manifests to
// read, records to list and remove, and the clock to remove them by.
type Store interface {
	sweep.Store
	storage.Records
}

type run struct {
	st     Store
	o      Options
	now    time.Time // the rules' clock
	safe   time.Time // real clock minus grace
	res    Result
	parsed map[digest.Digest][]digest.Digest // manifest -> index children (cache)
}

// Apply runs the rules once over every repository of st.
func Apply(ctx context.Context, st Store, o Options) (*Result, error) {
	rules := ForHost(o.Rules, o.Host)
	total := &Result{}
	if len(rules) == 0 {
		return total, nil
	}
	clock := o.Now
	if clock == nil {
		clock = time.Now
	}
	now := clock()
	grace := o.Grace
	if grace == 0 {
		grace = DefaultGrace
	}
	if grace < 0 {
		grace = 0
	}
	safe := time.Now().Add(-grace)
	repos, err := st.ListRepos(ctx)
	if err != nil {
		return nil, fmt.Errorf("retention: %w", err)
	}
	type job struct {
		repo  string
		rule  Numbered
		run   *run
		items []Item
		err   error
	}
	var jobs []*job
	for _, repo := range repos {
		for _, rule := range rules {
			if rule.Matches(o.Host, repo) {
				jobs = append(jobs, &job{repo: repo, rule: rule})
				break
			}
		}
	}
	// Repositories are independent: several at once hide the file
	// system's latency per removal (a rename into tmp/ and a removal).
	// Reports are buffered per repository and given out in order.
	workers := o.Workers
	if workers <= 0 {
		workers = DefaultWorkers
	}
	next := make(chan *job)
	var wg sync.WaitGroup
	for w := 0; w < min(workers, len(jobs)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				j.run = &run{st: st, o: o, now: now, safe: safe, parsed: map[digest.Digest][]digest.Digest{}}
				j.run.o.Report = func(it Item) { j.items = append(j.items, it) }
				if err := ctx.Err(); err != nil {
					j.err = err
					continue
				}
				if err := j.run.repo(ctx, j.rule, j.repo); err != nil {
					j.err = fmt.Errorf("retention: repository %s: %w", j.repo, err)
				}
			}
		}()
	}
	for _, j := range jobs {
		next <- j
	}
	close(next)
	wg.Wait()
	var firstErr error
	for _, j := range jobs {
		if o.Report != nil {
			for _, it := range j.items {
				o.Report(it)
			}
		}
		if j.run != nil {
			total.Repos++
			total.Tags += j.run.res.Tags
			total.Manifests += j.run.res.Manifests
			total.Raced += j.run.res.Raced
			total.Refused = append(total.Refused, j.run.res.Refused...)
		}
		if j.err != nil && firstErr == nil {
			firstErr = j.err
		}
	}
	return total, firstErr
}

type tagInfo struct {
	name   string
	digest digest.Digest
	pushed time.Time
	// subject: for a referrer-style tag ("sha256-<hex>.sig"), the manifest
	// it belongs to
	subject digest.Digest
}

type repoState struct {
	tags      []tagInfo
	revisions map[digest.Digest]time.Time // revision -> record time when looked at
	referrers map[digest.Digest][]digest.Digest
	subjectOf map[digest.Digest]digest.Digest
}

func (r *run) report(it Item) {
	if r.o.Report != nil {
		r.o.Report(it)
	}
}

// load reads a repository's revisions (first: a push refreshes the
// revision before writing its tag), referrers and tags with their times.
func (r *run) load(ctx context.Context, repo string) (*repoState, error) {
	rs := &repoState{
		revisions: map[digest.Digest]time.Time{},
		subjectOf: map[digest.Digest]digest.Digest{},
	}
	revs, err := sweep.Records(ctx, r.st, repo, layout.ManifestsDir)
	if err != nil {
		return nil, err
	}
	for _, rec := range revs {
		rs.revisions[rec.Digest] = rec.ModTime
	}
	if rs.referrers, err = layout.Referrers(ctx, r.st, repo); err != nil {
		return nil, err
	}
	for s, ds := range rs.referrers {
		for _, d := range ds {
			rs.subjectOf[d] = s
		}
	}
	rs.tags, err = r.readTags(ctx, repo)
	if err != nil {
		return nil, err
	}
	for i := range rs.tags {
		if s, ok := referrerTagSubject(rs.tags[i].name); ok {
			if _, has := rs.revisions[s]; has {
				rs.tags[i].subject = s
			}
		}
	}
	return rs, nil
}

// readTags lists tags with their digests and push times. The time is read
// before the content: a push in between makes the time newer, so a
// removal at that time does not remove the new content.
func (r *run) readTags(ctx context.Context, repo string) ([]tagInfo, error) {
	names, err := layout.Tags(ctx, r.st, repo)
	if err != nil {
		return nil, err
	}
	out := make([]tagInfo, 0, len(names))
	for _, n := range names {
		t, err := r.st.StatRecord(ctx, repo, layout.Tag(n))
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		raw, err := r.st.GetRecord(ctx, repo, layout.Tag(n))
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		d, perr := digest.Parse(strings.TrimSpace(string(raw)))
		if perr != nil {
			continue // the registry never writes such a tag; leave it alone
		}
		out = append(out, tagInfo{name: n, digest: d, pushed: t})
	}
	return out, nil
}

// referrerTagSubject recognises "sha256-<hex>" with an optional ".suffix"
// (cosign's .sig/.att/.sbom, the OCI referrers tag schema).
func referrerTagSubject(tag string) (digest.Digest, bool) {
	alg, rest, ok := strings.Cut(tag, "-")
	if !ok {
		return "", false
	}
	hex, _, _ := strings.Cut(rest, ".")
	d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
	return d, d.Validate() == nil
}

// repo applies one rule to one repository.
func (r *run) repo(ctx context.Context, rule Numbered, repo string) error {
	rs, err := r.load(ctx, repo)
	if err != nil {
		return err
	}
	desc := rule.Describe()
	item := func(k Kind, tag string, d digest.Digest, pushed time.Time, reason string) Item {
		return Item{Kind: k, Rule: rule.N, Desc: desc, Repo: repo, Tag: tag, Digest: d, Pushed: pushed, Reason: reason}
	}

	// Ordinary tags, newest first.
	var plain []tagInfo
	for _, t := range rs.tags {
		if t.subject == "" {
			plain = append(plain, t)
		}
	}
	sort.SliceStable(plain, func(i, j int) bool {
		if !plain[i].pushed.Equal(plain[j].pushed) {
			return plain[i].pushed.After(plain[j].pushed)
		}
		return plain[i].name > plain[j].name
	})
	var keep, drop []tagInfo
	reasons := map[string]string{}
	for i, t := range plain {
		switch {
		case rule.KeepLast > 0 && i < rule.KeepLast:
		case rule.KeepWithin > 0 && !t.pushed.Before(r.now.Add(-rule.KeepWithin.Std())):
		case matchesAny(rule.KeepTags, t.name):
		default:
			drop = append(drop, t)
			reasons[t.name] = tagReason(rule.Rule, r.now, t.pushed)
			continue
		}
		keep = append(keep, t)
	}
	if len(plain) > 0 && len(keep) == 0 && !rule.AllowEmpty {
		r.res.Refused = append(r.res.Refused, repo)
		r.report(item(KindRefused, "", "", time.Time{}, fmt.Sprintf("the rule would remove all %d tags; nothing removed (set allow_empty = true to allow this)", len(plain))))
		return nil
	}

	// What the kept tags reach, and the referrer tags that stay with it.
	reach := map[digest.Digest]bool{}
	var roots []digest.Digest
	for _, t := range keep {
		roots = append(roots, t.digest)
	}
	if err := r.closure(ctx, repo, rs, reach, roots); err != nil {
		return err
	}
	refTags := r.referrerTags(ctx, repo, rs, reach)
	if err := refTags.err; err != nil {
		return err
	}
	for _, t := range refTags.drop {
		drop = append(drop, t)
		reasons[t.name] = fmt.Sprintf("belongs to manifest %s, which is not kept", t.subject)
	}

	if r.o.beforeDelete != nil {
		r.o.beforeDelete(repo)
	}
	// Tags go first; one pushed again since it was looked at stays.
	if !r.o.DryRun {
		keys := make([]string, len(drop))
		cutoffs := make([]time.Time, len(drop))
		for i, t := range drop {
			keys[i], cutoffs[i] = layout.Tag(t.name), t.pushed.Add(time.Nanosecond)
		}
		gone, err := r.deleteIfOlder(ctx, repo, keys, cutoffs)
		if err != nil {
			return err
		}
		kept := drop[:0:0]
		for i, t := range drop {
			if gone[i] {
				kept = append(kept, t)
			} else {
				r.res.Raced++ // pushed again, or deleted through the API
			}
		}
		drop = kept
	}
	for _, t := range drop {
		r.res.Tags++
		r.report(item(KindTag, t.name, t.digest, t.pushed, reasons[t.name]))
	}

	if rule.UntaggedAfter == nil {
		return nil
	}
	if !r.o.DryRun {
		// Whatever the tags reach now stays: pushes since the decision
		// included, and tags whose removal lost against a push.
		now, err := r.readTags(ctx, repo)
		if err != nil {
			return err
		}
		roots = roots[:0]
		for _, t := range now {
			roots = append(roots, t.digest)
		}
		if err := r.closure(ctx, repo, rs, reach, roots); err != nil {
			return err
		}
	}
	return r.dropManifests(ctx, rule, repo, rs, reach, item)
}

type refTagResult struct {
	drop []tagInfo
	err  error
}

// referrerTags keeps the referrer-style tags whose manifest is reached,
// adding what they name to reach, until nothing changes; the rest go.
func (r *run) referrerTags(ctx context.Context, repo string, rs *repoState, reach map[digest.Digest]bool) refTagResult {
	kept := map[string]bool{}
	for changed := true; changed; {
		changed = false
		for _, t := range rs.tags {
			if t.subject == "" || kept[t.name] || !reach[t.subject] {
				continue
			}
			kept[t.name] = true
			changed = true
			if err := r.closure(ctx, repo, rs, reach, []digest.Digest{t.digest}); err != nil {
				return refTagResult{err: err}
			}
		}
	}
	var out refTagResult
	for _, t := range rs.tags {
		if t.subject != "" && !kept[t.name] {
			out.drop = append(out.drop, t)
		}
	}
	return out
}

// closure adds to reach the roots and everything they keep: an index's
// children and the referrers of reached manifests.
func (r *run) closure(ctx context.Context, repo string, rs *repoState, reach map[digest.Digest]bool, roots []digest.Digest) error {
	queue := append([]digest.Digest(nil), roots...)
	for len(queue) > 0 {
		d := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if reach[d] {
			continue
		}
		reach[d] = true
		children, err := r.children(ctx, repo, d)
		if err != nil {
			return err
		}
		queue = append(queue, children...)
		queue = append(queue, rs.referrers[d]...)
	}
	return nil
}

// children returns the manifests an index lists (none for an image).
// Content that cannot be read stops the run: deciding on an incomplete
// picture could remove what a kept index needs.
func (r *run) children(ctx context.Context, repo string, d digest.Digest) ([]digest.Digest, error) {
	if c, ok := r.parsed[d]; ok {
		return c, nil
	}
	data, err := storage.ReadBlob(ctx, r.st, d, backend.MaxManifestSize)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", d, err)
	}
	var m struct {
		Manifests []struct {
			Digest digest.Digest `json:"digest"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("manifest %s of %s does not parse (refusing to apply retention): %w", d, repo, err)
	}
	var out []digest.Digest
	for _, c := range m.Manifests {
		if c.Digest.Validate() == nil {
			out = append(out, c.Digest)
		}
	}
	r.parsed[d] = out
	return out, nil
}

// dropManifests removes revisions nothing kept reaches: those last pushed
// longer than untagged_after ago, and the referrers of removed ones.
func (r *run) dropManifests(ctx context.Context, rule Numbered, repo string, rs *repoState, reach map[digest.Digest]bool, item func(Kind, string, digest.Digest, time.Time, string) Item) error {
	after := rule.UntaggedAfter.Std()
	old := r.now.Add(-after)
	reason := map[digest.Digest]string{}
	var order []digest.Digest
	revs := make([]digest.Digest, 0, len(rs.revisions))
	for d := range rs.revisions {
		revs = append(revs, d)
	}
	sort.Slice(revs, func(i, j int) bool { return revs[i] < revs[j] })
	for _, d := range revs {
		t := rs.revisions[d]
		if reach[d] || !t.Before(old) {
			continue
		}
		reason[d] = fmt.Sprintf("no kept tag reaches it, pushed %s ago (untagged_after %s)", ago(r.now, t), after)
		order = append(order, d)
	}
	// referrers of removed manifests go with them, however young
	for i := 0; i < len(order); i++ {
		for _, ref := range rs.referrers[order[i]] {
			if _, ok := rs.revisions[ref]; !ok || reach[ref] || reason[ref] != "" {
				continue
			}
			reason[ref] = fmt.Sprintf("referrer of removed manifest %s", order[i])
			order = append(order, ref)
		}
	}
	var (
		victims []digest.Digest
		keys    []string
		cutoffs []time.Time
	)
	for _, d := range order {
		seen := rs.revisions[d]
		if !seen.Before(r.safe) {
			continue // written within the grace period: a push may be using it
		}
		victims = append(victims, d)
		keys = append(keys, layout.Manifest(d))
		cutoffs = append(cutoffs, seen.Add(time.Nanosecond))
	}
	gone := make([]bool, len(victims))
	if r.o.DryRun {
		for i := range gone {
			gone[i] = true
		}
	} else {
		var err error
		if gone, err = r.deleteIfOlder(ctx, repo, keys, cutoffs); err != nil {
			return err
		}
	}
	for i, d := range victims {
		if !gone[i] {
			r.res.Raced++
			continue
		}
		if s, ok := rs.subjectOf[d]; ok && !r.o.DryRun {
			// after the revision, so a referrer never lists a manifest
			// that is still there but unlisted
			if err := r.st.DeleteRecord(ctx, repo, layout.Referrer(s, d)); err != nil && !errors.Is(err, storage.ErrNotFound) {
				return err
			}
		}
		r.res.Manifests++
		r.report(item(KindManifest, "", d, rs.revisions[d], reason[d]))
	}
	return nil
}

// batchDeleter is what a store offers to remove many records of one
// repository with one sync per directory (localfs.Store).
type batchDeleter interface {
	DeleteRecordsIfOlder(ctx context.Context, repo string, keys []string, cutoffs []time.Time) ([]bool, error)
}

// deleteIfOlder removes records unless rewritten or touched at or after
// their cutoff, and says which went (one that is already gone did not).
func (r *run) deleteIfOlder(ctx context.Context, repo string, keys []string, cutoffs []time.Time) ([]bool, error) {
	if b, ok := r.st.(batchDeleter); ok {
		return b.DeleteRecordsIfOlder(ctx, repo, keys, cutoffs)
	}
	gone := make([]bool, len(keys))
	for i, k := range keys {
		ok, err := r.st.DeleteRecordIfOlder(ctx, repo, k, cutoffs[i])
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return gone, err
		}
		gone[i] = ok
	}
	return gone, nil
}

func matchesAny(globs []string, s string) bool {
	for _, g := range globs {
		if glob.Match(g, s) {
			return true
		}
	}
	return false
}

// tagReason says why a tag is not kept, naming each keep clause it fails.
func tagReason(rule Rule, now, pushed time.Time) string {
	var parts []string
	if rule.KeepLast > 0 {
		parts = append(parts, fmt.Sprintf("not in newest %d", rule.KeepLast))
	}
	if rule.KeepWithin > 0 {
		parts = append(parts, fmt.Sprintf("older than keep_within %s", rule.KeepWithin.Std()))
	}
	if len(rule.KeepTags) > 0 {
		parts = append(parts, "matches no keep_tags")
	}
	parts = append(parts, "pushed "+ago(now, pushed)+" ago")
	return strings.Join(parts, ", ")
}

// ago is a short human age: "41d", "5h", "12m", "30s".
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	case d >= 2*time.Minute:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	default:
		return fmt.Sprintf("%ds", int(d/time.Second))
	}
}
