// Command wharf is a self-hosted container registry gateway: one process
// that terminates TLS with ACME certificates, checks logins, and routes by
// host name to an embedded registry, a pull-through cache or a proxy.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/auth"
	"github.com/wharf-dev/wharf/gateway"
)

// version and commit are set at build time with -ldflags "-X
// main.version=... -X main.commit=..." (make build, make dist, make image).
var (
	version = ""
	commit  = ""
)

const usage = `wharf - a container registry gateway

Usage:
  wharf serve [-config gateway.toml]   serve (no config: dev registry on http://127.0.0.1:5000)
  wharf check -config gateway.toml     validate the config; exit 1 with file:line: messages
  wharf passwd USER                    read a password from stdin, print a bcrypt htpasswd line
  wharf gc -config gateway.toml        garbage-collect registry sites, evict cache entries unused for
                                       max_age (safe while serving)
        [-dry-run] [-delete-untagged] [-grace 1h]
  wharf import -from DIR -config gateway.toml -site HOST [-dry-run]
                                       take over a registry:2/registry:3 storage root
  wharf migrate-storage -config gateway.toml -site HOST -to s3|filesystem [-workers 4]
                                       copy a registry site between its root and its
                                       [site.registry.s3] bucket, while serving
  wharf healthcheck -config gateway.toml
                                       exit 0 when the admin listener's /healthz answers 200
  wharf version                        print version, commit and Go version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return cmdServe(args[1:], stdout, stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "passwd":
		return cmdPasswd(args[1:], stdin, stdout, stderr)
	case "gc":
		return cmdGC(args[1:], stdout, stderr)
	case "import":
		return cmdImport(args[1:], stdout, stderr)
	case "migrate-storage":
		return cmdMigrateStorage(args[1:], stdout, stderr)
	case "healthcheck":
		return cmdHealthcheck(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		return cmdVersion(stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "wharf: unknown command %q\n\n%s", args[0], usage)
	return 2
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", ""
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if rev != "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			return "dev-" + rev + dirty
		}
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
	}
	return "dev"
}

func loadFlags(name string, args []string, stderr io.Writer, needConfig bool, more ...func(*flag.FlagSet)) (string, *flag.FlagSet, bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	for _, m := range more {
		m(fs)
	}
	path := fs.String("config", "", "path to gateway.toml")
	if err := fs.Parse(args); err != nil {
		return "", fs, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "wharf %s: unexpected argument %q\n", name, fs.Arg(0))
		return "", fs, false
	}
	if needConfig && *path == "" {
		fmt.Fprintf(stderr, "wharf %s: -config is required\n", name)
		return "", fs, false
	}
	return *path, fs, true
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	path, _, ok := loadFlags("check", args, stderr, true)
	if !ok {
		return 2
	}
	cfg, err := gateway.LoadConfig(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// Every site is built as serve builds it, short of binding ports,
	// creating storage or contacting a CA or upstream.
	plans := cfg.Plan()
	fmt.Fprintf(stdout, "%s: ok (%d sites)\n", path, len(plans))
	return 0
}

func newLogger(cfg *gateway.Config, out io.Writer) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(string(cfg.Log.Level))
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	if cfg.Log.Format == "console" {
		out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger()
}

func cmdServe(args []string, stdout, stderr io.Writer) int {
	path, _, ok := loadFlags("serve", args, stderr, false)
	if !ok {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cfg, g, log, code := startGateway(ctx, path, stderr)
	if g == nil {
		return code
	}
	if path != "" {
		// SIGHUP reloads the config; a bad one is logged and ignored.
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					if err := g.ReloadFile(ctx, path); err != nil {
						log.Error().Err(err).Msg("reload rejected; the running config stays")
					}
				}
			}
		}()
	}
	if path == "" {
		log.Info().Msgf("dev registry on http://%s (data in ./%s, no auth). Try: docker tag alpine %s/alpine && docker push %s/alpine",
			cfg.Listen.HTTP, cfg.DataDir, cfg.Listen.HTTP, cfg.Listen.HTTP)
	}
	if err := g.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error().Err(err).Msg("stopped")
		return 1
	}
	log.Info().Msg("stopped")
	return 0
}

// startGateway is `wharf serve` up to binding its ports: load and
// validate the config (or the dev config for path ""), make the logger,
// and build every site with the gateway's site factory. On failure it
// writes the reason to stderr and returns a nil gateway and the exit code.
// `wharf check` runs the same load and factory, so the two agree.
func startGateway(ctx context.Context, path string, stderr io.Writer) (*gateway.Config, *gateway.Gateway, zerolog.Logger, int) {
	var cfg *gateway.Config
	if path == "" {
		cfg = gateway.DevConfig()
	} else {
		var err error
		if cfg, err = gateway.LoadConfig(path); err != nil {
			fmt.Fprintln(stderr, err)
			return nil, nil, zerolog.Nop(), 1
		}
	}
	log := newLogger(cfg, stderr)
	g, err := gateway.New(ctx, cfg, log)
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return nil, nil, log, 1
	}
	return cfg, g, log, 0
}

// cmdPasswd prints "USER:<bcrypt>" for an htpasswd file, replacing
// `docker run httpd htpasswd -Bbn USER PASSWORD`.
func cmdPasswd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: wharf passwd USER   (the password is read from stdin: echo 'secret' | wharf passwd alice >> htpasswd)")
		return 2
	}
	if f, ok := stdin.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			fmt.Fprint(stderr, "password (echoed; end with Enter): ")
		}
	}
	pw, err := auth.ReadPassword(stdin)
	if err != nil {
		fmt.Fprintln(stderr, "wharf passwd:", err)
		return 1
	}
	line, err := auth.PasswdLine(args[0], pw)
	if err != nil {
		fmt.Fprintln(stderr, "wharf passwd:", err)
		return 1
	}
	fmt.Fprintln(stdout, line)
	return 0
}
