package harness

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Registry is a registry server under test: wharf or the reference
// docker-registry. Start/Stop/Kill/Restart keep its address and data.
type Registry interface {
	// Name is "wharf" or "docker-registry".
	Name() string
	// Addr is the registry host for image references ("127.0.0.1:port").
	Addr() string
	// URL is the base URL ("http://127.0.0.1:port").
	URL() string
	// Start starts it again after Stop or Kill.
	Start(t testing.TB)
	// Stop shuts it down with SIGTERM and returns the exit error.
	Stop(t testing.TB) error
	// Kill sends SIGKILL.
	Kill(t testing.TB)
	// Restart is Stop then Start.
	Restart(t testing.TB)
	// PeakRSS is the server's peak resident memory in bytes.
	PeakRSS(t testing.TB) int64
}

// Target is one kind of registry the push/pull suite runs against.
type Target struct {
	// Name is used as the subtest name.
	Name string
	// Start starts a fresh, empty registry server for one test.
	Start func(t testing.TB) Registry
	// Broken lists features the server is known to get wrong, with the
	// reason; tests of those features skip on it (see SkipIfBroken).
	Broken map[string]string
}

// Features a reference server may lack, for Target.Broken.
const (
	// FeatureReferrers is the OCI 1.1 referrers API.
	FeatureReferrers = "referrers"
	// FeatureConcurrentSameBlob is pushing one blob to one repository
	// from several clients at once.
	FeatureConcurrentSameBlob = "concurrent-same-blob"
	// FeatureDeleteTag is DELETE /v2/<name>/manifests/<tag> (OCI 1.1).
	FeatureDeleteTag = "delete-tag"
	// FeatureLexicalTags is listing tags in lexical order.
	FeatureLexicalTags = "lexical-tags"
)

// Works reports whether the target is not known to lack feature, for
// tests that check the feature as one step among others.
func (tg Target) Works(feature string) bool {
	_, broken := tg.Broken[feature]
	return !broken
}

// SkipIfBroken skips the test if the target is known to lack feature. Only
// reference servers list broken features; wharf lists none.
func (tg Target) SkipIfBroken(t testing.TB, feature string) {
	t.Helper()
	if why, ok := tg.Broken[feature]; ok {
		t.Skipf("%s: known not to work on %s: %s", feature, tg.Name, why)
	}
}

// WharfTarget is wharf serving RegistryConfig.
var WharfTarget = Target{
	Name:  "wharf",
	Start: func(t testing.TB) Registry { return StartWharf(t, RegistryConfig) },
}

// DockerRegistryTarget is Debian's docker-registry (distribution 2.8).
var DockerRegistryTarget = Target{
	Name:  "docker-registry",
	Start: func(t testing.TB) Registry { return StartDockerRegistry(t, "") },
	Broken: map[string]string{
		FeatureReferrers: "registry 2.8 has no OCI 1.1 referrers API",
		FeatureConcurrentSameBlob: "registry 2.8 sometimes fails one of two concurrent pushes of a blob " +
			"to one repository (manifest PUT: DIGEST_INVALID / MANIFEST_BLOB_UNKNOWN)",
		FeatureDeleteTag:   "registry 2.8 deletes manifests by digest only",
		FeatureLexicalTags: "registry 2.8 lists tags in its own order, not lexical",
	},
}

// ProxyConfig is a wharf config with one plain-HTTP proxy site for host
// 127.0.0.1 in front of the upstream in .Vars.upstream.
const ProxyConfig = `data_dir = "{{.DataDir}}"

[listen]
http  = "{{.HTTP}}"
https = ""
admin = ""

[[site]]
host    = "127.0.0.1"
backend = "proxy"
tls     = "off"
[site.proxy]
upstream = "{{.Vars.upstream}}"
`

// proxiedRegistry is wharf's proxy site in front of a docker-registry.
// Start, Stop, Kill and Restart act on wharf; the data lives upstream.
type proxiedRegistry struct {
	*Wharf
	Upstream *DockerRegistry
}

func (p proxiedRegistry) Name() string { return "wharf-proxy" }

// WharfProxyTarget is wharf's proxy backend in front of Debian's
// docker-registry (issue #3: the same push/pull tests pass through it). It
// inherits the upstream's gaps.
var WharfProxyTarget = Target{
	Name: "wharf-proxy",
	Start: func(t testing.TB) Registry {
		up := StartDockerRegistry(t, "")
		w := StartWharf(t, ProxyConfig, WithVars(map[string]any{"upstream": up.URL()}))
		return proxiedRegistry{Wharf: w, Upstream: up}
	},
	Broken: DockerRegistryTarget.Broken,
}

// S3Config is RegistryConfig with the registry site on S3: the bucket
// .Vars.bucket of the versitygw at .Vars.endpoint.
const S3Config = `data_dir = "{{.DataDir}}"

[listen]
http  = "{{.HTTP}}"
https = ""
admin = ""

[[site]]
host    = "127.0.0.1"
backend = "registry"
tls     = "off"
[site.registry]
storage = "s3"
delete  = true
[site.registry.s3]
bucket          = "{{.Vars.bucket}}"
endpoint        = "{{.Vars.endpoint}}"
path_style      = true
access_key_file = "{{.Vars.accessFile}}"
secret_key_file = "{{.Vars.secretFile}}"
{{if index .Vars "redirect"}}redirect        = true
{{end}}`

// s3Registry is wharf with its registry site on versitygw.
type s3Registry struct {
	*Wharf
	S3       *VersityGW
	redirect bool
}

func (r s3Registry) Name() string {
	if r.redirect {
		return "wharf-s3-redirect"
	}
	return "wharf-s3"
}

// StartWharfS3 starts versitygw with a bucket and wharf serving S3Config
// on it.
func StartWharfS3(t testing.TB) (*Wharf, *VersityGW) {
	t.Helper()
	return startWharfS3(t, false)
}

// startWharfS3 is StartWharfS3, with redirect = true if redirect.
func startWharfS3(t testing.TB, redirect bool) (*Wharf, *VersityGW) {
	t.Helper()
	gw := StartVersityGW(t, "wharf")
	dir := t.TempDir()
	vars := map[string]any{"bucket": "wharf", "endpoint": gw.Endpoint, "redirect": redirect,
		"accessFile": filepath.Join(dir, "access"), "secretFile": filepath.Join(dir, "secret")}
	for f, v := range map[string]string{"access": gw.AccessKey, "secret": gw.SecretKey} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return StartWharf(t, S3Config, WithVars(vars)), gw
}

// WharfS3Target is wharf's registry on S3 (issue #15): the same push/pull
// suite against a real S3 server. Not in the default targets (it adds
// the suite's time again); WHARF_E2E_TARGETS=wharf-s3 or all.
var WharfS3Target = Target{
	Name: "wharf-s3",
	Start: func(t testing.TB) Registry {
		w, gw := StartWharfS3(t)
		return s3Registry{Wharf: w, S3: gw}
	},
}

// WharfS3RedirectTarget is WharfS3Target with [site.registry.s3]
// redirect = true: every blob GET of the suite is answered 307 to a
// pre-signed versitygw URL. Opt-in: WHARF_E2E_TARGETS=wharf-s3-redirect
// or all.
var WharfS3RedirectTarget = Target{
	Name: "wharf-s3-redirect",
	Start: func(t testing.TB) Registry {
		w, gw := startWharfS3(t, true)
		return s3Registry{Wharf: w, S3: gw, redirect: true}
	},
}

// Targets returns the registries named in WHARF_E2E_TARGETS, a comma list
// of "wharf", "wharf-proxy" (wharf's proxy site in front of
// docker-registry) and "docker-registry", or "all". The default is
// "wharf,wharf-proxy"; WHARF_E2E_TARGETS=docker-registry checks the suite
// itself against the reference registry.
func Targets(t testing.TB) []Target {
	t.Helper()
	v := strings.TrimSpace(os.Getenv("WHARF_E2E_TARGETS"))
	if v == "" {
		v = "wharf,wharf-proxy"
	}
	var out []Target
	for _, n := range strings.Split(v, ",") {
		switch strings.TrimSpace(n) {
		case "wharf":
			out = append(out, WharfTarget)
		case "wharf-proxy":
			out = append(out, WharfProxyTarget)
		case "docker-registry":
			out = append(out, DockerRegistryTarget)
		case "wharf-s3":
			out = append(out, WharfS3Target)
		case "wharf-s3-redirect":
			out = append(out, WharfS3RedirectTarget)
		case "all":
			out = append(out, WharfTarget, WharfProxyTarget, DockerRegistryTarget, WharfS3Target, WharfS3RedirectTarget)
		case "":
		default:
			t.Fatalf("WHARF_E2E_TARGETS: unknown target %q (want wharf, wharf-proxy, docker-registry, wharf-s3, wharf-s3-redirect or all)", n)
		}
	}
	return out
}

// ForEachTarget runs f as a subtest per target from Targets.
func ForEachTarget(t *testing.T, f func(t *testing.T, tg Target)) {
	t.Helper()
	for _, tg := range Targets(t) {
		t.Run(tg.Name, func(t *testing.T) { f(t, tg) })
	}
}

// WharfEnabled reports whether WHARF_E2E_TARGETS includes wharf, for
// wharf-only tests that have no reference counterpart.
func WharfEnabled(t testing.TB) bool {
	t.Helper()
	for _, tg := range Targets(t) {
		if tg.Name == WharfTarget.Name {
			return true
		}
	}
	return false
}
