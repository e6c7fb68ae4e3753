package gateway

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/wharf-dev/wharf/webhook"
)

// ReloadFile loads the config at path and applies it with Reload; a file
// that does not load or validate changes nothing.
func (g *Gateway) ReloadFile(ctx context.Context, path string) error {
	cfg, err := LoadConfig(path)
	if err != nil {
		return err
	}
	return g.Reload(ctx, cfg)
}

// Reload applies a new config while serving (SIGHUP): sites are added,
// removed and changed; unchanged sites keep their backends, so transfers in
// flight are not disturbed; removed and changed sites finish their requests
// on the old backend, which is closed after the last one. New TLS sites get
// their certificates; manual cert/key files are read again. If anything in
// cfg cannot be applied, nothing changes and the error says why.
//
// [listen], [log], [acme] and data_dir changes need a restart; they are
// logged and otherwise ignored.
func (g *Gateway) Reload(ctx context.Context, cfg *Config) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.cfg
	if cfg.Listen != old.Listen {
		g.log.Warn().Msg("reload: [listen] changes take effect after a restart")
	}
	if !reflect.DeepEqual(cfg.ACME, old.ACME) {
		g.log.Warn().Msg("reload: [acme] changes take effect after a restart")
	}
	if cfg.Log != old.Log {
		g.log.Warn().Msg("reload: [log] changes take effect after a restart")
	}
	if !reflect.DeepEqual(cfg.GC, old.GC) {
		g.log.Warn().Msg("reload: [gc] changes take effect after a restart ([[retention]] changes apply at the next run)")
	}
	if cfg.DataDir != old.DataDir {
		return fmt.Errorf("reload: data_dir changed from %q to %q: restart wharf for that", old.DataDir, cfg.DataDir)
	}
	for _, s := range cfg.Sites {
		if s.TLS != "off" && g.certs == nil && g.running {
			return fmt.Errorf("reload: site %s: tls = %q needs [listen] https, which this process does not serve (restart wharf)", s.Host, s.TLS)
		}
	}
	prevAuth := g.auth
	if !reflect.DeepEqual(cfg.Auth, old.Auth) {
		svc, err := g.newAuth(cfg)
		if err != nil {
			return fmt.Errorf("reload: %w", err)
		}
		g.auth = svc
	} else if g.auth != nil {
		// SIGHUP also rereads the htpasswd and token key files; a broken
		// file keeps what was loaded, and the rest of the reload goes on.
		if err := g.auth.Reload(); err != nil {
			g.log.Error().Err(err).Msg("reload: htpasswd or token key not reloaded, keeping what was loaded")
		}
	}
	newHooks := !reflect.DeepEqual(cfg.Webhooks, old.Webhooks)
	var hooks *webhook.Notifier
	if newHooks {
		var err error
		if hooks, err = g.newNotifier(cfg); err != nil {
			g.auth = prevAuth
			return fmt.Errorf("reload: webhook: %w", err)
		}
	}
	prev := g.sites.Load()
	t, err := g.build(ctx, cfg, prev)
	if err != nil {
		g.auth = prevAuth
		hooks.Close()
		return fmt.Errorf("reload: %w", err)
	}
	if g.certs != nil {
		if err := g.certs.Update(cfg.acmeConfig("", "").Sites); err != nil {
			closeNew(t, prev)
			g.auth = prevAuth
			hooks.Close()
			return fmt.Errorf("reload: %w", err)
		}
	}
	if newHooks {
		// events still queued for the old endpoints are counted as dropped
		go g.hooks.Swap(hooks).Close()
	}
	g.sites.Store(t)
	g.cfg = cfg
	if prevAuth != nil && prevAuth != g.auth {
		prevAuth.Close()
	}
	kept := map[*site]bool{}
	for _, s := range t.sites() {
		kept[s] = true
	}
	for _, s := range prev.sites() {
		if !kept[s] {
			go retire(s)
		}
	}
	g.log.Info().Strs("hosts", cfg.SortedHosts()).Msg("reloaded config")
	return nil
}

// closeNew closes the sites of t that prev does not have (a reload that
// failed after building them).
func closeNew(t, prev *siteTable) {
	had := map[*site]bool{}
	for _, s := range prev.sites() {
		had[s] = true
	}
	for _, s := range t.sites() {
		if !had[s] {
			s.close()
		}
	}
}

// retire closes a site no longer in the table once its requests are done.
func retire(s *site) {
	for s.inflight.Load() > 0 {
		time.Sleep(500 * time.Millisecond)
	}
	s.close()
}
