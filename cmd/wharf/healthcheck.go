package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/wharf-dev/wharf/gateway"
)

// cmdHealthcheck runs `wharf healthcheck -config F`: exit 0 when the admin
// listener's /healthz answers 200, 1 otherwise with a message saying why.
// It is the container image's HEALTHCHECK (a FROM scratch image has no curl).
//
// With [listen] admin off it falls back to the plain-HTTP listener, where
// any HTTP answer below 500 (a redirect, a 404 for an unknown host) proves
// the process serves; with neither it says so and exits 1.
func cmdHealthcheck(args []string, stdout, stderr io.Writer) int {
	var timeout time.Duration
	path, _, ok := loadFlags("healthcheck", args, stderr, true, func(fs *flag.FlagSet) {
		fs.DurationVar(&timeout, "timeout", 5*time.Second, "give up after this long")
	})
	if !ok {
		return 2
	}
	cfg, err := gateway.LoadConfig(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var url string
	strict := true
	switch {
	case cfg.Listen.Admin != "":
		url = "http://" + dialAddr(cfg.Listen.Admin) + "/healthz"
	case cfg.Listen.HTTP != "":
		url = "http://" + dialAddr(cfg.Listen.HTTP) + "/"
		strict = false
	default:
		fmt.Fprintf(stderr, "wharf healthcheck: %s has neither [listen] admin nor [listen] http; set admin = \"127.0.0.1:9100\" to give the health check something to ask\n", path)
		return 1
	}
	code, err := healthGet(ctx, url)
	if err != nil {
		fmt.Fprintf(stderr, "wharf healthcheck: %s: %v\n", url, err)
		return 1
	}
	if (strict && code != http.StatusOK) || code >= 500 {
		fmt.Fprintf(stderr, "wharf healthcheck: %s answered %d\n", url, code)
		return 1
	}
	if strict {
		fmt.Fprintf(stdout, "%s: ok\n", url)
	} else {
		fmt.Fprintf(stdout, "%s: answered %d ([listen] admin is off, so the http listener was asked)\n", url, code)
	}
	return 0
}

// healthGet does one GET without following redirects or using a proxy
// from the environment.
func healthGet(ctx context.Context, url string) (int, error) {
	client := &http.Client{
		Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{}, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, nil
}

// dialAddr turns a listen address into one to connect to: a wildcard or
// empty host ("":9100, "0.0.0.0:9100", "[::]:9100") becomes loopback.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}
