package main

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/wharf-dev/wharf/bench/internal/load"
	"github.com/wharf-dev/wharf/bench/internal/regclient"
)

// loadCmd runs the load generator alone: one request, repeated on -c
// keep-alive connections for -d, after logging in like a registry client
// when -user is given (Basic, or the Bearer token dance).
func loadCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	method := fs.String("method", "HEAD", "HTTP method")
	conns := fs.Int("c", 16, "keep-alive connections")
	dur := fs.Duration("d", 5*time.Second, "duration")
	user := fs.String("user", "", "user name (login through /v2/ of the URL's host)")
	pass := fs.String("pass", "", "password")
	cafile := fs.String("cacert", "", "PEM file of the CA to trust")
	h2 := fs.Bool("http2", false, "HTTP/2 instead of HTTP/1.1 (TLS only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("usage: wharfbench load [flags] URL")
	}
	target := fs.Arg(0)
	o := regclient.Options{HTTP2: *h2, Conns: 1, User: *user, Password: *pass}
	if *cafile != "" {
		pem, err := os.ReadFile(*cafile)
		if err != nil {
			return fmt.Errorf("read -cacert: %w", err)
		}
		o.RootCAs = x509.NewCertPool()
		if !o.RootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("-cacert %s: no certificate found", *cafile)
		}
	}
	h := http.Header{"Accept": {regclient.AcceptManifests}}
	if *user != "" {
		c, err := regclient.New(regclient.Options{Base: target, RootCAs: o.RootCAs, HTTP2: *h2, User: *user, Password: *pass})
		if err != nil {
			return err
		}
		scheme, err := c.Login(ctx, repoOf(c.Base().Path)...)
		if err != nil {
			return err
		}
		fmt.Printf("login: %s\n", scheme)
		if a := c.AuthHeader(); a != "" {
			h.Set("Authorization", a)
		}
		c.Close()
	}
	res, err := load.Run(ctx, load.Config{Method: *method, URL: target, Header: h, Conns: *conns, Duration: *dur,
		NewTransport: func() http.RoundTripper { return regclient.NewTransport(o) }})
	if err != nil {
		return err
	}
	fmt.Printf("%s %s: %d requests in %.2f s = %.0f req/s, p50 %.3f ms, p99 %.3f ms, %d errors %s\n",
		*method, target, res.Requests, res.Elapsed.Seconds(), res.RPS(),
		float64(res.P50)/1e6, float64(res.P99)/1e6, res.Errors, res.FirstError)
	return nil
}

// repoOf extracts the repository from a /v2/<repo>/manifests/... path, for
// the token's scope.
func repoOf(path string) []string {
	const pre = "/v2/"
	if len(path) <= len(pre) || path[:len(pre)] != pre {
		return nil
	}
	rest := path[len(pre):]
	for _, sep := range []string{"/manifests/", "/blobs/", "/tags/"} {
		for i := 0; i+len(sep) <= len(rest); i++ {
			if rest[i:i+len(sep)] == sep {
				return []string{rest[:i]}
			}
		}
	}
	return nil
}
