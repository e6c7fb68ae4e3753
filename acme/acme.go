// Package acme gives wharf its TLS certificates: certmagic obtains and
// renews them from an ACME CA for sites with tls = "acme", and cert/key
// files are loaded for sites with tls = "manual". The Manager picks the
// certificate for a TLS handshake by SNI and refuses every name that is not
// a configured site, so no certificate is ever requested for a stranger.
package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/rs/zerolog"
)

// DefaultCA is the ACME directory used when [acme] ca is empty.
const DefaultCA = "https://acme-v02.api.letsencrypt.org/directory"

// Site is what the Manager needs to know about one [[site]].
type Site struct {
	Host     string // DNS name, any case; a trailing dot is ignored
	TLS      Mode   // ModeACME (also for ""), ModeManual or ModeOff
	CertFile string // PEM certificate chain, tls = "manual"
	KeyFile  string // PEM private key, tls = "manual"
}

// Config is the [acme] table plus what the Manager needs from [listen].
type Config struct {
	// DataDir holds the certificate storage (below DataDir/acme).
	DataDir string
	// CA is the ACME directory URL; DefaultCA when empty.
	CA string
	// Email is the ACME account's contact address (may be empty).
	Email string
	// CARoot is a PEM file of extra roots trusted for the ACME server
	// itself (a private CA, or Pebble in tests); the system roots stay
	// trusted too.
	CARoot string
	// HTTPAddr and HTTPSAddr are the [listen] addresses. The challenges are
	// answered there by the gateway's own listeners: HTTP-01 through
	// HTTPChallengeHandler, TLS-ALPN-01 through TLSConfig. An empty
	// HTTPAddr disables HTTP-01.
	HTTPAddr  string
	HTTPSAddr string
	// DisableHTTP01 and DisableTLSALPN01 turn one challenge type off.
	DisableHTTP01    bool
	DisableTLSALPN01 bool
	// Sites are the sites served over TLS; tls = "off" sites are ignored.
	Sites []Site
}

// Manager serves certificates for the configured sites. It is safe for
// concurrent use; Update swaps the set of sites while handshakes go on.
type Manager struct {
	log    zerolog.Logger
	cache  *certmagic.Cache
	magic  *certmagic.Config
	issuer *certmagic.ACMEIssuer

	sites atomic.Pointer[siteSet]

	mu      sync.Mutex // serialises Start/Update/Stop
	ctx     context.Context
	managed map[string]context.CancelFunc // acme names being managed -> cancel their jobs
	started bool
	stopped bool
}

// siteSet is one immutable snapshot of the sites: looked up on every
// handshake without locks.
type siteSet struct {
	acme   map[string]struct{}
	manual map[string]*tls.Certificate
}

// New checks cfg, loads manual certificates and prepares certmagic. It does
// not contact the CA: call Start once the listeners are up, so the
// challenges can be answered.
func New(ctx context.Context, cfg Config, log zerolog.Logger) (*Manager, error) {
	set, err := loadSites(cfg.Sites)
	if err != nil {
		return nil, err
	}
	if cfg.DataDir == "" {
		return nil, errors.New("acme: data_dir is empty")
	}
	m := &Manager{
		log:     log.With().Str("component", "acme").Logger(),
		ctx:     ctx,
		managed: make(map[string]context.CancelFunc),
	}
	m.sites.Store(set)

	zlog := newZapLogger(m.log)
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return m.magic, nil },
		Logger:           zlog,
	})
	m.magic = certmagic.New(m.cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: filepath.Join(cfg.DataDir, "acme")},
		Logger:  zlog,
	})
	tmpl := certmagic.ACMEIssuer{
		CA:                      cfg.CA,
		Email:                   cfg.Email,
		Agreed:                  true,
		DisableHTTPChallenge:    cfg.DisableHTTP01 || cfg.HTTPAddr == "",
		DisableTLSALPNChallenge: cfg.DisableTLSALPN01,
		Logger:                  zlog,
	}
	if tmpl.CA == "" {
		tmpl.CA = DefaultCA
	}
	if tmpl.DisableHTTPChallenge && tmpl.DisableTLSALPNChallenge {
		m.cache.Stop()
		return nil, errors.New("acme: both challenges are disabled (HTTP-01 needs [listen] http)")
	}
	// Point certmagic's challenge solvers at wharf's own ports: it finds
	// them taken by our listeners and leaves the answering to us, instead of
	// opening :80/:443 by itself.
	if host, port, ok := splitPort(cfg.HTTPAddr); ok {
		tmpl.ListenHost, tmpl.AltHTTPPort = host, port
	}
	if host, port, ok := splitPort(cfg.HTTPSAddr); ok {
		if tmpl.ListenHost == "" {
			tmpl.ListenHost = host
		}
		tmpl.AltTLSALPNPort = port
	}
	if cfg.CARoot != "" {
		pool, err := rootPool(cfg.CARoot)
		if err != nil {
			m.cache.Stop()
			return nil, err
		}
		tmpl.TrustedRoots = pool
	}
	m.issuer = certmagic.NewACMEIssuer(m.magic, tmpl)
	m.magic.Issuers = []certmagic.Issuer{m.issuer}
	return m, nil
}

// Start begins managing the certificates of the acme sites: stored ones are
// loaded without asking the CA, missing ones are obtained in the background
// with retries and back-off (a CA that is down is logged, never fatal).
func (m *Manager) Start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.started = true
	m.manageLocked(m.sites.Load())
}

// Update replaces the set of sites (SIGHUP). Manual certificates are read
// again from disk; if any of them cannot be loaded nothing changes and the
// error is returned. New acme names get their certificates, removed ones
// stop being served and renewed.
func (m *Manager) Update(sites []Site) error {
	set, err := loadSites(sites)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return errors.New("acme: manager is stopped")
	}
	m.sites.Store(set)
	if m.started {
		m.manageLocked(set)
	}
	return nil
}

// manageLocked starts management for names new in set and stops it for
// names no longer there. m.mu is held.
func (m *Manager) manageLocked(set *siteSet) {
	var removed []certmagic.SubjectIssuer
	for name, cancel := range m.managed {
		if _, ok := set.acme[name]; !ok {
			cancel()
			delete(m.managed, name)
			removed = append(removed, certmagic.SubjectIssuer{Subject: name})
			m.log.Info().Str("host", name).Msg("certificate no longer managed: site removed")
		}
	}
	if len(removed) > 0 {
		m.cache.RemoveManaged(removed)
	}
	var names []string
	for name := range set.acme {
		if _, ok := m.managed[name]; !ok {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		ctx, cancel := context.WithCancel(m.ctx)
		m.managed[name] = cancel
		m.log.Info().Str("host", name).Str("ca", m.issuer.CA).Msg("managing certificate")
		if err := m.magic.ManageAsync(ctx, []string{name}); err != nil {
			m.log.Error().Err(err).Str("host", name).Msg("cannot manage certificate")
		}
	}
}

// Stop ends certificate maintenance and pending obtain jobs.
func (m *Manager) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return
	}
	m.stopped = true
	for name, cancel := range m.managed {
		cancel()
		delete(m.managed, name)
	}
	m.cache.Stop()
}

// TLSConfig returns the server TLS configuration: TLS 1.2 and newer,
// HTTP/2 and HTTP/1.1 (and acme-tls/1 for the TLS-ALPN-01 challenge),
// certificates by SNI.
func (m *Manager) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: m.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1", acmez.ACMETLS1Protocol},
		// TLS 1.2 only; Go orders them itself and prefers AES-GCM where
		// the CPU has AES instructions. TLS 1.3 suites are not configurable.
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
}

// Errors of GetCertificate; the handshake fails with them.
var (
	ErrNoSNI       = errors.New("acme: TLS client sent no server name (SNI)")
	ErrIPSNI       = errors.New("acme: TLS server name is an IP address")
	ErrUnknownHost = errors.New("acme: TLS server name is not a configured site")
)

// GetCertificate is tls.Config.GetCertificate: the certificate of the site
// named by SNI. Unknown names, IP addresses as SNI and a missing SNI are
// refused, so the handshake fails and no certificate is ever obtained for
// them; the one exception is a connection without SNI to an address that a
// tls = "manual" site is named by (clients send no SNI for IP addresses).
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := NormalizeHost(hello.ServerName)
	set := m.sites.Load()
	if name == "" {
		// Clients send no SNI when they connect by IP address: a manual
		// site named by the address they connected to answers.
		if ip := localIP(hello.Conn); ip != "" {
			if c, ok := set.manual[ip]; ok {
				return c, nil
			}
		}
		return nil, ErrNoSNI
	}
	if net.ParseIP(name) != nil {
		return nil, ErrIPSNI
	}
	if c, ok := set.manual[name]; ok {
		return c, nil
	}
	if _, ok := set.acme[name]; ok {
		// certmagic answers TLS-ALPN-01 challenges here too.
		return m.magic.GetCertificate(hello)
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownHost, name)
}

// HTTPChallengeHandler answers ACME HTTP-01 challenges for this Manager's
// certificates and passes every other request to next.
func (m *Manager) HTTPChallengeHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if certmagic.LooksLikeHTTPChallenge(r) && m.issuer.HandleHTTPChallenge(w, r) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// HasCertificate reports whether a certificate for host is ready to serve.
func (m *Manager) HasCertificate(host string) bool {
	name := NormalizeHost(host)
	set := m.sites.Load()
	if _, ok := set.manual[name]; ok {
		return true
	}
	if _, ok := set.acme[name]; !ok {
		return false
	}
	return len(m.cache.AllMatchingCertificates(name)) > 0
}

// NormalizeHost lower-cases a host name and drops a trailing dot.
func NormalizeHost(h string) string {
	h = strings.TrimSuffix(strings.TrimSpace(h), ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// CheckSite reports what is wrong with a site's TLS settings: an acme
// site named by an IP address, or unreadable or mismatched manual cert and
// key files. `wharf check` and start-up use it.
func CheckSite(s Site) error {
	_, err := checkSite(s)
	return err
}

func checkSite(s Site) (*tls.Certificate, error) {
	name := NormalizeHost(s.Host)
	switch s.TLS {
	case "", ModeACME:
		if name == "" {
			return nil, errors.New("host is empty")
		}
		if net.ParseIP(name) != nil {
			return nil, fmt.Errorf("host %q: an IP address cannot get an ACME certificate; use tls = \"manual\" or \"off\"", s.Host)
		}
		if !strings.Contains(name, ".") {
			return nil, fmt.Errorf("host %q: ACME certificates need a fully qualified domain name", s.Host)
		}
		return nil, nil
	case ModeManual:
		if s.CertFile == "" || s.KeyFile == "" {
			return nil, fmt.Errorf("host %q: tls = \"manual\" needs cert and key", s.Host)
		}
		c, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("host %q: loading cert %s and key %s: %w", s.Host, s.CertFile, s.KeyFile, err)
		}
		return &c, nil
	case ModeOff:
		return nil, nil
	default:
		return nil, fmt.Errorf("host %q: unknown tls mode %q (acme | manual | off)", s.Host, s.TLS)
	}
}

func loadSites(sites []Site) (*siteSet, error) {
	set := &siteSet{acme: map[string]struct{}{}, manual: map[string]*tls.Certificate{}}
	var errs []error
	for _, s := range sites {
		c, err := checkSite(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		name := NormalizeHost(s.Host)
		switch s.TLS {
		case "", ModeACME:
			set.acme[name] = struct{}{}
		case ModeManual:
			set.manual[name] = c
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("acme: %w", errors.Join(errs...))
	}
	return set, nil
}

func rootPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("acme: reading ca_root: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("acme: ca_root %s holds no PEM certificate", file)
	}
	return pool, nil
}

// localIP is the address a connection was accepted on, as a site host
// would name it ("" if unknown).
func localIP(c net.Conn) string {
	if c == nil {
		return ""
	}
	a, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return ""
	}
	return a.IP.String()
}

// splitPort splits a listen address such as ":80" or "127.0.0.1:8080".
func splitPort(addr string) (string, int, bool) {
	if addr == "" {
		return "", 0, false
	}
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, false
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 {
		return "", 0, false
	}
	return host, port, true
}
