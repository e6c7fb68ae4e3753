package gateway

import (
	"context"
	"fmt"
	"net/http"

	"github.com/wharf-dev/wharf/auth"
	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/cache"
	"github.com/wharf-dev/wharf/backend/proxy"
	"github.com/wharf-dev/wharf/backend/registry"
	"github.com/wharf-dev/wharf/policy"
	"github.com/wharf-dev/wharf/ui"
	"github.com/wharf-dev/wharf/webhook"
)

// UIEnabled reports whether the site serves the web UI: registry and cache
// sites do unless ui = false; proxy sites never do.
func (s Site) UIEnabled() bool {
	if s.Backend != KindRegistry && s.Backend != KindCache {
		return false
	}
	return s.UI == nil || *s.UI
}

// uiKeyFile is where the key that signs the web UI's session cookies lives,
// next to the token key (below [cluster] shared_dir when set, so every
// instance behind a balancer accepts the others' sessions).
const uiKeyFile = "auth/ui-session.key"

// webFor is what serves a site's paths outside /v2/ (apiPath): the web
// UI for a registry or cache site that has it, a proxy site's upstream,
// nothing (404) otherwise. be is the site's backend, whose store the UI
// reads. It returns the user each request was served to, for the access
// log.
func (g *Gateway) webFor(cfg *Config, sc Site, be backend.RouteHandler, pol *policy.Policy) (func(http.ResponseWriter, *http.Request) string, error) {
	if p, ok := be.(*proxy.Proxy); ok {
		return func(w http.ResponseWriter, r *http.Request) string {
			p.ServeHTTP(w, r)
			return ""
		}, nil
	}
	if !sc.UIEnabled() {
		return nil, nil
	}
	uc := ui.Config{
		Host:          sc.Host,
		Policy:        pol,
		AnonymousPull: sc.Anonymous == auth.AnonymousPull,
		Log:           g.log.With().Str("site", sc.Host).Str("component", "ui").Logger(),
	}
	switch b := be.(type) {
	case *registry.Registry:
		uc.Kind, uc.Store = ui.KindRegistry, b.Store()
		if b.DeleteEnabled() {
			uc.Delete = g.uiDelete(sc.Host, b.Delete)
		}
	case *cache.Cache:
		uc.Kind, uc.Store = ui.KindCache, b.Store()
		uc.Upstream, uc.Upstreams, uc.MaxAge = sc.Cache.Upstream, sc.Cache.Upstreams, sc.Cache.MaxAge.Std()
	default:
		return nil, nil
	}
	if g.auth != nil {
		key, err := ui.LoadKey(cfg.sharedPath(uiKeyFile))
		if err != nil {
			return nil, fmt.Errorf("web ui: %w", err)
		}
		uc.Auth, uc.Key = g.auth, key
	}
	u, err := ui.New(uc)
	if err != nil {
		return nil, err
	}
	return u.Serve, nil
}

// uiDelete wraps a registry's Delete for the web UI, so that a tag or
// manifest deleted in the browser sends the same webhook event as an API
// DELETE (serveEvents sees only /v2/ requests). The actor is the UI's
// logged-in user, which the UI passes in.
func (g *Gateway) uiDelete(host string, del func(ctx context.Context, repo, ref string) error) func(ctx context.Context, user, repo, ref string) error {
	return func(ctx context.Context, user, repo, ref string) error {
		if err := del(ctx, repo, ref); err != nil {
			return err
		}
		n := g.hooks.Load()
		if !n.Wants(host, webhook.ActionDelete, repo) {
			return nil
		}
		t := webhook.Target{Repository: repo}
		if backend.IsDigestShaped(ref) {
			t.Digest = ref
		} else {
			t.Tag = ref
		}
		n.Emit(host, webhook.Event{
			ID:        webhook.NewID(),
			Timestamp: g.now().UTC(),
			Action:    webhook.ActionDelete,
			Target:    t,
			Request:   webhook.Request{ID: RequestID(ctx), Host: host, Method: http.MethodPost, UserAgent: "wharf web ui"},
			Actor:     webhook.Actor{Name: user},
			Source:    g.source,
		})
		return nil
	}
}
