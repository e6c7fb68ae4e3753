package gateway

import (
	"context"
	"fmt"
	"net/http"

	"github.com/wharf-dev/wharf/auth"
	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/cache"
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

// withUI puts the web UI in front of api for a site that has it: the one
// place where a site's handler chooses UI (every path outside /v2/) or API.
// be is the site's backend, whose store the UI reads.
func (g *Gateway) withUI(cfg *Config, sc Site, be http.Handler, pol *policy.Policy, api http.Handler) (http.Handler, error) {
	if !sc.UIEnabled() {
		return api, nil
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
		return api, nil
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
	return ui.Split(u, api), nil
}

// uiDelete wraps a registry's Delete for the web UI, so that a tag or
// manifest deleted in the browser sends the same webhook event as an API
// DELETE (withEvents sees only /v2/ requests). The actor is the UI's
// logged-in user, which the UI puts in the request's Identity.
func (g *Gateway) uiDelete(host string, del func(ctx context.Context, repo, ref string) error) func(context.Context, string, string) error {
	return func(ctx context.Context, repo, ref string) error {
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
		user := ""
		if id := auth.IdentityFrom(ctx); id != nil {
			user = id.User
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
