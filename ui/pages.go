package ui

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/layout"
)

// page is what every template gets besides its own data.
type page struct {
	Title     string
	Host      string // as the client addressed the site (pull lines)
	Kind      string
	Upstream  string
	User      string
	Logins    bool   // the site has logins (show the login link)
	CSRF      string // the session's CSRF token ("" when anonymous)
	Query     string // the search box
	Next      string // this page, for the login link to come back to
	BuildTime duration
	Data      any
}

func (u *UI) newPage(r *http.Request, v viewer, title string) *page {
	p := &page{Title: title, Host: r.Host, Kind: u.cfg.Kind, Upstream: u.cfg.Upstream, User: v.User, Logins: u.cfg.Auth != nil}
	if r.Method == http.MethodGet && r.URL.Path != "/login" {
		p.Next = r.URL.RequestURI()
	}
	if v.cookie != "" {
		p.CSRF = u.sess.csrf(v.cookie)
	}
	return p
}

// duration prints as milliseconds with two decimals ("1.08 ms").
type duration time.Duration

func (d duration) String() string {
	return fmt.Sprintf("%.2f ms", float64(time.Duration(d).Microseconds())/1000)
}

// render executes a page template into a buffer first, so a template error
// never leaves half a page, and reports the server's time in the footer
// (data) and in Server-Timing (data and rendering).
func (u *UI) render(w http.ResponseWriter, r *http.Request, status int, name string, p *page, start time.Time) {
	p.BuildTime = duration(time.Since(start))
	var buf bytes.Buffer
	if err := pages[name].ExecuteTemplate(&buf, "layout", p); err != nil {
		u.log.Error().Err(err).Str("page", name).Msg("ui: template failed")
		http.Error(w, "internal error rendering the page; see the server log", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	h.Set("Server-Timing", fmt.Sprintf("data;dur=%.2f, total;dur=%.2f",
		float64(time.Duration(p.BuildTime).Microseconds())/1000, float64(time.Since(start).Microseconds())/1000))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

// fail answers with a plain error page: status and a sentence, never
// internals.
func (u *UI) fail(w http.ResponseWriter, r *http.Request, v viewer, status int, msg string) {
	p := u.newPage(r, v, http.StatusText(status))
	p.Data = struct {
		Status int
		Text   string
		Msg    string
	}{status, http.StatusText(status), msg}
	u.render(w, r, status, "error", p, time.Now())
}

// internal logs err and answers 500 without details (404 for what vanished
// meanwhile, 400 for a client's cancelled request).
func (u *UI) internal(w http.ResponseWriter, r *http.Request, v viewer, err error) {
	switch {
	case errors.Is(err, storage.ErrNotFound):
		u.fail(w, r, v, http.StatusNotFound, "It is not there (any more).")
	case errors.Is(err, context.Canceled):
		u.fail(w, r, v, http.StatusBadRequest, "The request was cancelled.")
	default:
		u.log.Error().Err(err).Str("path", r.URL.Path).Msg("ui: reading the store failed")
		u.fail(w, r, v, http.StatusInternalServerError, "Reading the registry's storage failed; the server log says why.")
	}
}

// pager cuts a list into pages of size n; page numbers start at 1.
type pager struct {
	Page, Pages, Total int
	Prev, Next         string // links, "" when there is none
}

func paginate(total, n int, r *http.Request) (pg pager, from, to int) {
	pg.Total = total
	pg.Pages = max((total+n-1)/n, 1)
	pg.Page, _ = strconv.Atoi(r.URL.Query().Get("page"))
	pg.Page = min(max(pg.Page, 1), pg.Pages)
	from = (pg.Page - 1) * n
	to = min(from+n, total)
	link := func(p int) string {
		q := r.URL.Query()
		q.Set("page", strconv.Itoa(p))
		return r.URL.Path + "?" + q.Encode()
	}
	if pg.Page > 1 {
		pg.Prev = link(pg.Page - 1)
	}
	if pg.Page < pg.Pages {
		pg.Next = link(pg.Page + 1)
	}
	return pg, from, to
}

// reposData is the repositories page.
type reposData struct {
	Repos []repoInfo
	Pager pager
}

func (u *UI) repos(w http.ResponseWriter, r *http.Request, v viewer) {
	start := time.Now()
	ctx := r.Context()
	all, err := u.repoNames(ctx)
	if err != nil {
		u.internal(w, r, v, err)
		return
	}
	q := strings.ToLower(strings.TrimSpace(r.URL.Query().Get("q")))
	names := all[:0:0]
	for _, n := range all {
		if (q == "" || strings.Contains(n, q)) && u.canSee(r, v, n) {
			names = append(names, n)
		}
	}
	pg, from, to := paginate(len(names), u.cfg.PageSize, r)
	d := reposData{Pager: pg}
	for _, n := range names[from:to] {
		ri, err := u.b.repo(ctx, n)
		if err != nil {
			u.internal(w, r, v, err)
			return
		}
		d.Repos = append(d.Repos, ri)
	}
	p := u.newPage(r, v, "Repositories")
	p.Query = r.URL.Query().Get("q")
	p.Data = d
	u.render(w, r, http.StatusOK, "repos", p, start)
}

// repoOrImage serves /r/<repository> and /r/<repository>@<digest>.
func (u *UI) repoOrImage(w http.ResponseWriter, r *http.Request, v viewer, rest string) {
	repo, ref, hasRef := strings.Cut(rest, "@")
	tag, hasTag := "", false
	if i := strings.LastIndexByte(repo, ':'); !hasRef && i > strings.LastIndexByte(repo, '/') {
		repo, tag, hasTag = repo[:i], repo[i+1:], true // /r/<repository>:<tag>, as people write images
	}
	if backend.ValidateName(repo) != nil || !u.canSee(r, v, repo) {
		u.fail(w, r, v, http.StatusNotFound, "There is no such repository (or you may not see it; try logging in).")
		return
	}
	if hasTag {
		if !backend.ValidTag(tag) {
			u.fail(w, r, v, http.StatusNotFound, "This repository has no such tag.")
			return
		}
		t, err := u.b.readTag(r.Context(), repo, tag)
		if err != nil {
			u.fail(w, r, v, http.StatusNotFound, "This repository has no such tag.")
			return
		}
		http.Redirect(w, r, "/r/"+repo+"@"+string(t.Digest), http.StatusFound)
		return
	}
	if !hasRef {
		u.repo(w, r, v, repo)
		return
	}
	d, err := digest.Parse(ref)
	if err != nil {
		u.fail(w, r, v, http.StatusNotFound, "That is not a digest this registry knows.")
		return
	}
	u.image(w, r, v, repo, d)
}

// tagRow is one row of a repository's tags.
type tagRow struct {
	tagRef
	Summary   *summary
	Total     int64
	Platforms []string
	Created   time.Time
	Labels    []kv
	EvictAt   time.Time // cache with max_age: when gc evicts it if nobody pulls it
	EvictSoon bool
}

type kv struct{ K, V string }

func sortedKV(m map[string]string) []kv {
	out := make([]kv, 0, len(m))
	for k, v := range m {
		out = append(out, kv{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].K < out[j].K })
	return out
}

// repoData is a repository's page.
type repoData struct {
	Repo      string
	Upstream  string // cache: where this repository comes from
	Tags      []tagRow
	Deleted   string // a delete just done here
	Pager     pager
	Sort      string
	CanDelete bool
	MaxAge    time.Duration
}

func (u *UI) repo(w http.ResponseWriter, r *http.Request, v viewer, repo string) {
	start := time.Now()
	ctx := r.Context()
	names, err := layout.Tags(ctx, u.cfg.Store, repo)
	if err != nil {
		u.internal(w, r, v, err)
		return
	}
	if len(names) == 0 {
		// a repository with only untagged manifests still exists
		if ok, err := u.b.exists(ctx, repo); err != nil || !ok {
			if err != nil {
				u.internal(w, r, v, err)
				return
			}
			u.fail(w, r, v, http.StatusNotFound, "There is no such repository (or you may not see it; try logging in).")
			return
		}
	}
	sortBy := r.URL.Query().Get("sort")
	tags := make([]tagRef, 0, len(names))
	if sortBy == "date" {
		// every tag's time is needed before the page can be cut: one stat each
		for _, n := range names {
			if mt, err := u.cfg.Store.StatRecord(ctx, repo, layout.Tag(n)); err == nil {
				tags = append(tags, tagRef{Name: n, Pushed: mt})
			}
		}
		slices.SortStableFunc(tags, func(a, b tagRef) int { return b.Pushed.Compare(a.Pushed) })
	} else {
		sortBy = "name" // the store lists them sorted by name: no stat needed
		for _, n := range names {
			tags = append(tags, tagRef{Name: n})
		}
	}
	pg, from, to := paginate(len(tags), u.cfg.PageSize, r)
	d := repoData{Repo: repo, Deleted: r.URL.Query().Get("deleted"), Upstream: u.upstreamOf(repo), Pager: pg, Sort: sortBy, CanDelete: u.canDelete(r, v, repo), MaxAge: u.cfg.MaxAge}
	now := u.cfg.Now()
	for _, t := range tags[from:to] {
		ref, err := u.b.readTag(ctx, repo, t.Name)
		if err != nil {
			continue // deleted since the listing
		}
		row := tagRow{tagRef: ref}
		if s, err := u.b.manifest(ctx, repo, ref.Digest); err == nil {
			row.Summary = s
			row.Total = u.b.total(ctx, repo, s)
			row.Platforms = platforms(s)
			img := s.Image
			if img == nil && s.IsIndex() {
				img = u.firstImage(ctx, repo, s)
			}
			if img != nil {
				row.Created = img.Created
				row.Labels = sortedKV(img.Config.Labels)
			}
		}
		if u.cfg.Kind == KindCache && u.cfg.MaxAge > 0 && !ref.Pushed.IsZero() {
			row.EvictAt = ref.Pushed.Add(u.cfg.MaxAge)
			row.EvictSoon = row.EvictAt.Sub(now) < min(24*time.Hour, u.cfg.MaxAge/4)
		}
		d.Tags = append(d.Tags, row)
	}
	p := u.newPage(r, v, repo)
	p.Data = d
	u.render(w, r, http.StatusOK, "repo", p, start)
}

// firstImage is the config of an index's first image in the store (an
// index's created date and labels are its images').
func (u *UI) firstImage(ctx context.Context, repo string, s *summary) *imageConfig {
	for _, c := range s.Manifests {
		if cs, err := u.b.manifest(ctx, repo, c.Digest); err == nil && cs.Image != nil {
			return cs.Image
		}
	}
	return nil
}

// platforms lists "os/arch[/variant]" of an index's entries (skipping
// attestation manifests, whose platform is unknown/unknown).
func platforms(s *summary) []string {
	var out []string
	if !s.IsIndex() {
		if s.Image != nil && s.Image.OS != "" {
			out = append(out, platformString(s.Image.OS, s.Image.Architecture, s.Image.Variant))
		}
		return out
	}
	for _, m := range s.Manifests {
		if m.Platform == nil || m.Platform.OS == "unknown" {
			continue
		}
		out = append(out, platformString(m.Platform.OS, m.Platform.Architecture, m.Platform.Variant))
	}
	return out
}

func platformString(os, arch, variant string) string {
	s := os + "/" + arch
	if variant != "" {
		s += "/" + variant
	}
	return s
}

// imageData is one image or index page.
type imageData struct {
	Repo       string
	S          *summary
	Total      int64
	Tags       []string
	Unscanned  int // the repository's tag count when not all were read
	Children   []childRow
	Referrers  []refGroup
	Labels     []kv
	Annots     []kv
	CanDelete  bool
	Subject    string
	PullDigest string
}

type childRow struct {
	backend.Descriptor
	Platform string
	InStore  bool
	Total    int64
}

type refGroup struct {
	Type  string
	Kind  string // signature, SBOM, attestation or other
	Items []backend.Descriptor
}

// referrerKind names what an artifact type is, for people.
func referrerKind(t string) string {
	l := strings.ToLower(t)
	switch {
	case strings.Contains(l, "sig") || strings.Contains(l, "cosign") || strings.Contains(l, "notary"):
		return "signature"
	case strings.Contains(l, "spdx") || strings.Contains(l, "cyclonedx") || strings.Contains(l, "sbom") || strings.Contains(l, "syft"):
		return "SBOM"
	case strings.Contains(l, "in-toto") || strings.Contains(l, "attestation") || strings.Contains(l, "provenance") || strings.Contains(l, "vex"):
		return "attestation"
	}
	return "other"
}

func (u *UI) image(w http.ResponseWriter, r *http.Request, v viewer, repo string, d digest.Digest) {
	start := time.Now()
	ctx := r.Context()
	s, err := u.b.manifest(ctx, repo, d)
	if errors.Is(err, storage.ErrNotFound) {
		u.fail(w, r, v, http.StatusNotFound, "This repository has no manifest with that digest.")
		return
	}
	if err != nil {
		u.internal(w, r, v, err)
		return
	}
	tags, unscanned := u.imageTags(r, repo, d)
	data := imageData{Repo: repo, S: s, Total: u.b.total(ctx, repo, s), Tags: tags, Unscanned: unscanned,
		CanDelete: u.canDelete(r, v, repo), Annots: sortedKV(s.Annotations), PullDigest: string(d)}
	if s.Image != nil {
		data.Labels = sortedKV(s.Image.Config.Labels)
	}
	if s.Subject != nil {
		data.Subject = string(s.Subject.Digest)
	}
	for _, c := range s.Manifests {
		row := childRow{Descriptor: c}
		if c.Platform != nil {
			row.Platform = platformString(c.Platform.OS, c.Platform.Architecture, c.Platform.Variant)
		}
		if cs, err := u.b.manifest(ctx, repo, c.Digest); err == nil {
			row.InStore, row.Total = true, u.b.total(ctx, repo, cs)
		}
		data.Children = append(data.Children, row)
	}
	for _, ref := range u.b.referrers(ctx, repo, d) {
		if n := len(data.Referrers); n > 0 && data.Referrers[n-1].Type == ref.ArtifactType {
			data.Referrers[n-1].Items = append(data.Referrers[n-1].Items, ref)
			continue
		}
		data.Referrers = append(data.Referrers, refGroup{Type: ref.ArtifactType, Kind: referrerKind(ref.ArtifactType), Items: []backend.Descriptor{ref}})
	}
	p := u.newPage(r, v, repo+"@"+d.Encoded()[:12])
	p.Data = data
	u.render(w, r, http.StatusOK, "image", p, start)
}

// maxTagScan is how many tags the image page reads to find the ones that
// name the image; a repository with more lists only the tag the viewer
// came from (?tag=), so the page stays fast with 5,000 tags.
const maxTagScan = 500

// imageTags lists the tags that point at d for the image page, and how
// many tags the repository has when it did not look at all of them.
func (u *UI) imageTags(r *http.Request, repo string, d digest.Digest) (tags []string, unscanned int) {
	ctx := r.Context()
	names, err := layout.Tags(ctx, u.cfg.Store, repo)
	if err != nil {
		return nil, 0
	}
	if len(names) <= maxTagScan {
		return u.b.tagsOf(ctx, repo, d, names), 0
	}
	if hint := r.URL.Query().Get("tag"); backend.ValidTag(hint) {
		tags = u.b.tagsOf(ctx, repo, d, []string{hint})
	}
	return tags, len(names)
}

// loginForm shows the login page with an optional message.
func (u *UI) loginForm(w http.ResponseWriter, r *http.Request, v viewer, status int, msg string) {
	if u.cfg.Auth == nil {
		u.fail(w, r, v, http.StatusNotFound, "This site has no logins: everyone sees everything.")
		return
	}
	p := u.newPage(r, v, "Log in")
	p.Data = struct {
		Msg  string
		Next string
	}{msg, safeNext(r.FormValue("next"))}
	u.render(w, r, status, "login", p, time.Now())
}

// safeNext keeps a post-login target only if it is a path on this site.
func safeNext(s string) string {
	if s == "" || !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") || strings.HasPrefix(s, "/\\") {
		return "/"
	}
	if _, err := url.ParseRequestURI(s); err != nil {
		return "/"
	}
	return s
}

// maxForm bounds the login and delete forms.
const maxForm = 64 << 10

func (u *UI) login(w http.ResponseWriter, r *http.Request, v viewer) {
	if u.cfg.Auth == nil {
		u.fail(w, r, v, http.StatusNotFound, "This site has no logins: everyone sees everything.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		u.fail(w, r, v, http.StatusBadRequest, "The form could not be read.")
		return
	}
	user := r.PostForm.Get("username")
	pw := r.PostForm.Get("password")
	if user == "" || pw == "" {
		u.loginForm(w, r, v, http.StatusBadRequest, "Enter a user name and a password.")
		return
	}
	ok, wait := u.checkLogin(r, user, []byte(pw))
	if wait > 0 {
		secs := int((wait + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		u.loginForm(w, r, v, http.StatusTooManyRequests, fmt.Sprintf("Too many failed logins; try again in %d seconds.", secs))
		return
	}
	if !ok {
		u.loginForm(w, r, v, http.StatusUnauthorized, "Incorrect user name or password.")
		return
	}
	val, exp := u.sess.issue(user)
	http.SetCookie(w, sessionCookie(val, exp, r.TLS != nil))
	http.Redirect(w, r, safeNext(r.PostForm.Get("next")), http.StatusSeeOther)
}

// checkLogin is the UI's one use of the auth package's login path
// (auth.Service.Login: throttle first, then the credential cache or
// bcrypt), kept in one place.
func (u *UI) checkLogin(r *http.Request, user string, pw []byte) (bool, time.Duration) {
	res := u.cfg.Auth.Login(r.Context(), r.RemoteAddr, user, pw)
	return res.OK, res.RetryAfter
}

func (u *UI) logout(w http.ResponseWriter, r *http.Request, v viewer) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if v.User != "" && !u.sess.checkCSRF(v.cookie, r.PostFormValue("csrf")) {
		u.fail(w, r, v, http.StatusForbidden, "The form's security token does not match your session; reload the page and try again.")
		return
	}
	http.SetCookie(w, sessionCookie("", time.Time{}, r.TLS != nil))
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// deleteTarget is what a delete form names.
type deleteTarget struct {
	Repo, Ref string
	IsTag     bool
	Tags      []string // a manifest delete also removes these tags
}

// target reads and checks repo and ref of a delete request: only what the
// viewer may delete, and only what exists.
func (u *UI) target(w http.ResponseWriter, r *http.Request, v viewer, form url.Values) (deleteTarget, bool) {
	t := deleteTarget{Repo: form.Get("repo"), Ref: form.Get("ref")}
	if backend.ValidateName(t.Repo) != nil || !u.canSee(r, v, t.Repo) {
		u.fail(w, r, v, http.StatusNotFound, "There is no such repository (or you may not see it; try logging in).")
		return t, false
	}
	if !u.canDelete(r, v, t.Repo) {
		u.fail(w, r, v, http.StatusForbidden, "You may not delete in this repository.")
		return t, false
	}
	ctx := r.Context()
	if d, err := digest.Parse(t.Ref); err == nil {
		if _, err := u.cfg.Store.GetRecord(ctx, t.Repo, layout.Manifest(d)); err != nil {
			u.fail(w, r, v, http.StatusNotFound, "This repository has no manifest with that digest.")
			return t, false
		}
		// the confirmation names every tag that goes, however many to read
		names, err := layout.Tags(ctx, u.cfg.Store, t.Repo)
		if err != nil {
			u.internal(w, r, v, err)
			return t, false
		}
		t.Tags = u.b.tagsOf(ctx, t.Repo, d, names)
		return t, true
	}
	if !backend.ValidTag(t.Ref) {
		u.fail(w, r, v, http.StatusBadRequest, "That is neither a tag nor a digest.")
		return t, false
	}
	if _, err := u.cfg.Store.GetRecord(ctx, t.Repo, layout.Tag(t.Ref)); err != nil {
		u.fail(w, r, v, http.StatusNotFound, "This repository has no such tag.")
		return t, false
	}
	t.IsTag = true
	return t, true
}

// confirmDelete is the confirmation step: a page that says what goes and a
// POST form carrying the CSRF token.
func (u *UI) confirmDelete(w http.ResponseWriter, r *http.Request, v viewer) {
	t, ok := u.target(w, r, v, r.URL.Query())
	if !ok {
		return
	}
	p := u.newPage(r, v, "Delete")
	p.Data = t
	u.render(w, r, http.StatusOK, "confirm", p, time.Now())
}

func (u *UI) doDelete(w http.ResponseWriter, r *http.Request, v viewer) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		u.fail(w, r, v, http.StatusBadRequest, "The form could not be read.")
		return
	}
	if v.User == "" || !u.sess.checkCSRF(v.cookie, r.PostForm.Get("csrf")) {
		u.fail(w, r, v, http.StatusForbidden, "The form's security token does not match your session; reload the page and try again.")
		return
	}
	t, ok := u.target(w, r, v, r.PostForm)
	if !ok {
		return
	}
	if err := u.cfg.Delete(r.Context(), v.User, t.Repo, t.Ref); err != nil {
		var be *backend.Error
		if errors.As(err, &be) {
			u.fail(w, r, v, be.Status, be.Message)
			return
		}
		u.internal(w, r, v, err)
		return
	}
	u.log.Info().Str("user", v.User).Str("repo", t.Repo).Str("ref", t.Ref).Msg("ui: deleted")
	http.Redirect(w, r, "/r/"+t.Repo+"?deleted="+url.QueryEscape(t.Ref), http.StatusSeeOther)
}
