package gateway

import (
	"fmt"
	"net/http"

	"github.com/wharf-dev/wharf/auth"
	"github.com/wharf-dev/wharf/backend/cache"
	"github.com/wharf-dev/wharf/backend/registry"
	"github.com/wharf-dev/wharf/policy"
	"github.com/wharf-dev/wharf/ui"
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
			uc.Delete = b.Delete
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
