package regclient

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// basic encodes user:password for a Basic Authorization header.
func basic(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

// ParseChallenge splits a WWW-Authenticate value such as
// `Bearer realm="https://h/token",service="h",scope="repository:a:pull"`
// into its scheme and parameters. Quoted values may contain commas and
// backslash escapes.
func ParseChallenge(h string) (string, map[string]string) {
	h = strings.TrimSpace(h)
	scheme, rest, _ := strings.Cut(h, " ")
	params := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; {
		k, r, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		k = strings.ToLower(strings.TrimSpace(k))
		r = strings.TrimSpace(r)
		var v strings.Builder
		if strings.HasPrefix(r, `"`) {
			i := 1
			for ; i < len(r) && r[i] != '"'; i++ {
				if r[i] == '\\' && i+1 < len(r) {
					i++
				}
				v.WriteByte(r[i])
			}
			r = r[min(i+1, len(r)):]
		} else {
			end := strings.IndexByte(r, ',')
			if end < 0 {
				end = len(r)
			}
			v.WriteString(strings.TrimSpace(r[:end]))
			r = r[end:]
		}
		params[k] = v.String()
		rest = strings.TrimLeft(strings.TrimSpace(r), ",")
		rest = strings.TrimSpace(rest)
	}
	return scheme, params
}

// token fetches a Bearer token from the challenge's realm with Basic
// credentials, for pull and push on each repository.
func (c *Client) token(ctx context.Context, params map[string]string, repos []string) (string, error) {
	realm := params["realm"]
	if realm == "" {
		return "", fmt.Errorf("token: Bearer challenge without realm")
	}
	u, err := url.Parse(realm)
	if err != nil {
		return "", fmt.Errorf("token: realm %q: %w", realm, err)
	}
	u = c.base.ResolveReference(u)
	q := u.Query()
	if s := params["service"]; s != "" {
		q.Set("service", s)
	}
	for _, r := range repos {
		q.Add("scope", "repository:"+r+":pull,push")
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", fmt.Errorf("token request: %w", err)
	}
	if c.opts.User != "" {
		req.SetBasicAuth(c.opts.User, c.opts.Password)
		c.credentialed.Add(1)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", errorf(resp, "token")
	}
	defer resp.Body.Close()
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return "", fmt.Errorf("token: decode answer: %w", err)
	}
	if body.Token != "" {
		return body.Token, nil
	}
	if body.AccessToken != "" {
		return body.AccessToken, nil
	}
	return "", fmt.Errorf("token: answer carries no token")
}
