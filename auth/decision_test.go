package auth

import (
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/wharf-dev/wharf/backend"
)

// TestDecide: the decision is a value (user, granted actions, whether a
// mount may read its source, the catalog filter) or a refusal carrying
// its headers; Decide writes nothing.
func TestDecide(t *testing.T) {
	f := newFixture(t, Site{}, Config{})
	g := f.s.Guard(Site{Host: testHost, Policy: mustPolicy(t)})
	bearer := f.token(t, "alice", "apw", "repository:team-a/app:pull")
	mount := "/v2/team-a/app/blobs/uploads/?mount=" + digestOf("x")
	pull := []backend.Action{backend.ActionPull}
	for _, c := range []struct {
		name, method, path, authz string
		status                    int // 0: let through
		user                      string
		granted                   []backend.Action
		mayMount, catalog         bool
	}{
		{"anonymous ping is challenged", "GET", "/v2/", "", 401, "", nil, false, false},
		{"logged-in ping", "GET", "/v2/", basic("bob", "bpw"), 0, "bob", nil, false, false},
		{"bad password", "GET", "/v2/", basic("bob", "nope"), 401, "", nil, false, false},
		{"policy grants", "PUT", "/v2/team-a/app/manifests/v1", basic("alice", "apw"), 0, "alice", []backend.Action{backend.ActionPull, backend.ActionPush}, false, false},
		{"policy refuses a logged-in user", "PUT", "/v2/team-a/app/manifests/v1", basic("bob", "bpw"), 403, "bob", nil, false, false},
		{"anonymous pull of public", "GET", "/v2/public/x/manifests/v1", "", 0, "", pull, false, false},
		{"anonymous push is challenged", "PUT", "/v2/public/x/manifests/v1", "", 401, "", pull, false, false},
		{"token grants what it names", "GET", "/v2/team-a/app/manifests/v1", bearer, 0, "alice", pull, false, false},
		{"token asked for less", "PUT", "/v2/team-a/app/manifests/v1", bearer, 401, "alice", pull, false, false},
		{"mount from a readable source", "POST", mount + "&from=team-a/base", basic("alice", "apw"), 0, "alice", []backend.Action{backend.ActionPull, backend.ActionPush}, true, false},
		{"mount from an unreadable source", "POST", mount + "&from=secret/x", basic("alice", "apw"), 0, "alice", []backend.Action{backend.ActionPull, backend.ActionPush}, false, false},
		{"catalog gets a filter", "GET", "/v2/_catalog", basic("alice", "apw"), 0, "alice", nil, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(c.method, "http://"+testHost+c.path, nil)
			if c.authz != "" {
				r.Header.Set("Authorization", c.authz)
			}
			rt, perr := backend.ParseRequest(r)
			if perr != nil {
				t.Fatal(perr)
			}
			d, refused := g.Decide(r, rt)
			switch {
			case c.status == 0 && refused != nil:
				t.Fatalf("refused: %v", refused)
			case c.status != 0 && (refused == nil || refused.Status != c.status):
				t.Fatalf("refusal %v, want status %d", refused, c.status)
			case c.status == 401 && refused.Header.Get("WWW-Authenticate") == "":
				t.Fatal("401 without a challenge")
			case c.status == 403 && refused.Header.Get("WWW-Authenticate") != "":
				t.Fatal("403 with a challenge")
			}
			if d.User != c.user || !slices.Equal(d.Granted, c.granted) || d.MayMount != c.mayMount || (d.Catalog != nil) != c.catalog {
				t.Fatalf("decision {user %q granted %v mount %v catalog %v}, want {%q %v %v %v}",
					d.User, d.Granted, d.MayMount, d.Catalog != nil, c.user, c.granted, c.mayMount, c.catalog)
			}
			if c.catalog && (!d.Catalog("team-a/app") || d.Catalog("secret/x")) {
				t.Fatal("catalog filter does not follow the policy")
			}
			// the backend's share of the decision: never more than decided
			if a := d.Access(); a.MayMount != d.MayMount || (a.Catalog != nil) != c.catalog {
				t.Fatalf("Access %+v does not carry the decision", a)
			}
		})
	}
}
