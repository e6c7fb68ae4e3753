package cache

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// upstream is an HTTP client for one registry speaking the distribution
// API. It answers auth challenges itself: Bearer (the token dance, tokens
// cached per scope until they expire) and Basic.
type upstream struct {
	name      string // registry name in the site's table; "" = the default upstream
	metrics   *siteMetrics
	base      *url.URL // scheme://host[:port]
	dockerHub bool     // single-component names get library/
	username  string
	password  string
	client    *http.Client
	tokenMu   sync.Mutex
	tokens    map[string]token // by scope
	basicMode bool             // the upstream asked for Basic once
}

// maxTokens: past this many cached tokens, expired ones are dropped.
const maxTokens = 1024

type token struct {
	value   string
	expires time.Time
}

// challenge is a parsed WWW-Authenticate header.
type challenge struct {
	scheme string // "bearer" or "basic", lower case
	params map[string]string
}

// dockerHubHosts are the names under which Docker Hub's registry is known;
// all of them are reached at registry-1.docker.io.
var dockerHubHosts = map[string]bool{
	"registry-1.docker.io": true,
	"docker.io":            true,
	"index.docker.io":      true,
}

// parseUpstream checks the upstream URL: http or https, a host, no path,
// query or credentials.
func parseUpstream(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("upstream is empty")
	}
	if !strings.Contains(s, "://") {
		return nil, fmt.Errorf("upstream %q: scheme must be http or https (\"https://registry-1.docker.io\")", s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("upstream %q: scheme must be http or https", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("upstream %q: no host", s)
	}
	if u.User != nil {
		return nil, fmt.Errorf("upstream %q: put credentials in username/password, not in the URL", s)
	}
	if p := strings.TrimSuffix(u.Path, "/"); p != "" && p != "/v2" {
		return nil, fmt.Errorf("upstream %q: no path allowed (the registry's root, not a repository)", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("upstream %q: no query or fragment allowed", s)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

func newUpstream(base *url.URL, username, password string, tr http.RoundTripper) *upstream {
	u := &upstream{
		base:     base,
		username: username,
		password: password,
		tokens:   map[string]token{},
		client: &http.Client{
			Transport: tr,
			// Blob downloads are redirected to CDNs; Go's client drops
			// the Authorization header when the host changes.
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if len(via) >= 10 {
					return errors.New("too many redirects")
				}
				return nil
			},
		},
	}
	if dockerHubHosts[strings.ToLower(base.Hostname())] {
		u.dockerHub = true
		u.base = &url.URL{Scheme: "https", Host: "registry-1.docker.io"}
	}
	return u
}

func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          128,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		// The bytes are stored and served as the upstream sent them.
		DisableCompression: true,
		ForceAttemptHTTP2:  true,
		ReadBufferSize:     64 << 10,
	}
}

// repo maps a repository name as the client sees it to the upstream's.
func (u *upstream) repo(name string) string {
	if u.dockerHub && !strings.Contains(name, "/") {
		return "library/" + name
	}
	return name
}

// do sends method to path (below the upstream's root, with an optional
// query) for the repository upRepo ("" for none), answering one auth
// challenge. The caller closes the body.
func (u *upstream) do(ctx context.Context, method, path string, query url.Values, hdr http.Header, upRepo string) (*http.Response, error) {
	scope := ""
	if upRepo != "" {
		scope = "repository:" + upRepo + ":pull"
	}
	resp, err := u.send(ctx, method, path, query, hdr, scope)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusUnauthorized {
		return resp, nil
	}
	ch := parseChallenge(resp.Header.Values("WWW-Authenticate"))
	drain(resp)
	if ch == nil {
		return nil, &upstreamError{status: http.StatusUnauthorized, msg: "upstream answered 401 without a usable WWW-Authenticate challenge"}
	}
	switch ch.scheme {
	case "basic":
		if u.username == "" {
			return nil, &upstreamError{status: http.StatusUnauthorized, msg: "upstream asks for Basic credentials and none are configured (set username/password in [site.cache])"}
		}
		u.tokenMu.Lock()
		u.basicMode = true
		u.tokenMu.Unlock()
	case "bearer":
		asked := scope
		if s := ch.params["scope"]; s != "" {
			scope = s
		}
		if err := u.fetchToken(ctx, ch, scope, asked); err != nil {
			return nil, err
		}
	default:
		return nil, &upstreamError{status: http.StatusUnauthorized, msg: fmt.Sprintf("upstream asks for unsupported auth scheme %q", ch.scheme)}
	}
	resp, err = u.send(ctx, method, path, query, hdr, scope)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		drain(resp)
		u.metrics.upstreamError(label(u), http.StatusUnauthorized, "status")
		if u.username == "" {
			return nil, &upstreamError{status: http.StatusUnauthorized, msg: "upstream refused anonymous access (set username/password in [site.cache])"}
		}
		return nil, &upstreamError{status: http.StatusUnauthorized, msg: "upstream refused the configured credentials"}
	}
	return resp, nil
}

// send makes one request with whatever credentials are known for scope.
func (u *upstream) send(ctx context.Context, method, path string, query url.Values, hdr http.Header, scope string) (*http.Response, error) {
	target := *u.base
	target.Path = path
	if query != nil {
		target.RawQuery = query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, target.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("build upstream request: %w", err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", "wharf-cache")
	u.tokenMu.Lock()
	tok, ok := u.tokens[scope]
	basic := u.basicMode
	u.tokenMu.Unlock()
	switch {
	case ok && time.Now().Before(tok.expires):
		req.Header.Set("Authorization", "Bearer "+tok.value)
	case basic && u.username != "":
		req.SetBasicAuth(u.username, u.password)
	}
	askedUpstream(ctx)
	resp, err := u.client.Do(req)
	if err != nil {
		if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			u.metrics.upstreamError(label(u), 0, networkKind(err))
		}
		return nil, &upstreamError{err: err, msg: fmt.Sprintf("upstream %s unreachable", u.base.Host)}
	}
	if s := resp.StatusCode; s >= 500 || s == http.StatusTooManyRequests || s == http.StatusForbidden {
		u.metrics.upstreamError(label(u), s, "status")
	}
	if u.metrics != nil {
		name := label(u)
		resp.Body = &countingBody{ReadCloser: resp.Body, add: func(n int) { u.metrics.fromUpstream(name, n) }}
	}
	return resp, nil
}

// fetchToken runs the token dance: GET realm?service=&scope= with Basic
// credentials when configured, and caches the token for scope and for the
// scope the request was made with (alias), so the next request for the
// same repository sends it at once.
func (u *upstream) fetchToken(ctx context.Context, ch *challenge, scope, alias string) error {
	realm := ch.params["realm"]
	ru, err := url.Parse(realm)
	if err != nil || (ru.Scheme != "http" && ru.Scheme != "https") || ru.Host == "" {
		return &upstreamError{status: http.StatusUnauthorized, msg: fmt.Sprintf("upstream's token realm %q is not an http(s) URL", realm)}
	}
	q := ru.Query()
	if s := ch.params["service"]; s != "" {
		q.Set("service", s)
	}
	if scope != "" {
		q.Set("scope", scope)
	}
	ru.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ru.String(), nil)
	if err != nil {
		return fmt.Errorf("build token request: %w", err)
	}
	req.Header.Set("User-Agent", "wharf-cache")
	if u.username != "" {
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.username+":"+u.password)))
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return &upstreamError{err: err, msg: fmt.Sprintf("upstream token service %s unreachable", ru.Host)}
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		msg := fmt.Sprintf("upstream token service answered %d", resp.StatusCode)
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			msg += " (check username/password in [site.cache])"
		}
		return &upstreamError{status: resp.StatusCode, msg: msg}
	}
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
		IssuedAt    string `json:"issued_at"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return &upstreamError{status: http.StatusBadGateway, msg: fmt.Sprintf("upstream token service sent invalid JSON: %v", err)}
	}
	t := body.Token
	if t == "" {
		t = body.AccessToken
	}
	if t == "" {
		return &upstreamError{status: http.StatusBadGateway, msg: "upstream token service sent no token"}
	}
	life := time.Duration(body.ExpiresIn) * time.Second
	if life <= 0 {
		life = 60 * time.Second // the token spec's default
	}
	// Renew a little early so a token does not expire in flight.
	margin := life / 10
	if margin > 30*time.Second {
		margin = 30 * time.Second
	}
	tok := token{value: t, expires: time.Now().Add(life - margin)}
	u.tokenMu.Lock()
	if len(u.tokens) > maxTokens {
		now := time.Now()
		for k, v := range u.tokens {
			if now.After(v.expires) {
				delete(u.tokens, k)
			}
		}
	}
	u.tokens[scope] = tok
	u.tokens[alias] = tok
	u.tokenMu.Unlock()
	return nil
}

// parseChallenge picks the first Bearer or Basic challenge.
func parseChallenge(vals []string) *challenge {
	var found *challenge
	for _, v := range vals {
		c := parseOneChallenge(v)
		if c == nil {
			continue
		}
		if c.scheme == "bearer" {
			return c
		}
		if found == nil {
			found = c
		}
	}
	return found
}

// parseOneChallenge parses `Scheme k="v", k2=v2`.
func parseOneChallenge(v string) *challenge {
	v = strings.TrimSpace(v)
	i := strings.IndexAny(v, " \t")
	scheme := v
	rest := ""
	if i >= 0 {
		scheme, rest = v[:i], v[i+1:]
	}
	if scheme == "" {
		return nil
	}
	c := &challenge{scheme: strings.ToLower(scheme), params: map[string]string{}}
	for {
		rest = strings.TrimLeft(rest, " \t,")
		if rest == "" {
			break
		}
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			break
		}
		key := strings.ToLower(strings.TrimSpace(rest[:eq]))
		rest = strings.TrimLeft(rest[eq+1:], " \t")
		var val string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			j := 1
			for ; j < len(rest); j++ {
				ch := rest[j]
				if ch == '\\' && j+1 < len(rest) {
					j++
					b.WriteByte(rest[j])
					continue
				}
				if ch == '"' {
					break
				}
				b.WriteByte(ch)
			}
			val = b.String()
			if j < len(rest) {
				j++
			}
			rest = rest[j:]
		} else {
			j := strings.IndexByte(rest, ',')
			if j < 0 {
				j = len(rest)
			}
			val = strings.TrimSpace(rest[:j])
			rest = rest[j:]
		}
		c.params[key] = val
	}
	return c
}

// upstreamError is a failure to get an answer from the upstream: a
// network error or timeout (err set) or an unusable status.
type upstreamError struct {
	status int // upstream status, 0 for network errors
	err    error
	msg    string
}

func (e *upstreamError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *upstreamError) Unwrap() error { return e.err }

// timeout reports whether the upstream did not answer in time.
func (e *upstreamError) timeout() bool {
	if e.err == nil {
		return false
	}
	var ne net.Error
	return errors.Is(e.err, context.DeadlineExceeded) || (errors.As(e.err, &ne) && ne.Timeout())
}

// statusError builds the upstreamError for an unexpected status.
func statusError(resp *http.Response, what string) *upstreamError {
	return &upstreamError{status: resp.StatusCode, msg: fmt.Sprintf("upstream answered %d %s for %s", resp.StatusCode, http.StatusText(resp.StatusCode), what)}
}

// drain reads a little of an unwanted body so the connection can be
// reused, then closes it.
func drain(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}
