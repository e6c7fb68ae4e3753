package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wharf-dev/wharf/acme/acmetest"
	"github.com/wharf-dev/wharf/auth"
)

// checkServeCase is one config fed to `wharf check` and `wharf serve`.
// In toml, DIR is the fixture folder (htpasswd, cert.pem, key.pem,
// other.pem); want is a piece of the expected message, "" = valid.
type checkServeCase struct {
	name, toml, want string
}

const (
	csData   = "data_dir = \"data\"\n"
	csListen = "[listen]\nhttp = \"127.0.0.1:0\"\n"
	csHead   = csData + csListen
	csSite   = "[[site]]\nhost = \"a.example\"\nbackend = \"registry\"\ntls = \"off\"\n"
	csAuth   = "[auth]\nhtpasswd = \"DIR/htpasswd\"\n"
	// csS3 is a registry site on S3 (lines 4-13).
	csS3 = csSite + "[site.registry]\nstorage = \"s3\"\n[site.registry.s3]\nbucket = \"wharf\"\nendpoint = \"http://127.0.0.1:1\"\npath_style = true\n"
)

// cacheSite and proxySite are a site of that kind with the given
// upstream.
func cacheSite(up string) string {
	return fmt.Sprintf("[[site]]\nhost = \"m.example\"\nbackend = \"cache\"\ntls = \"off\"\n[site.cache]\nupstream = %q\n", up)
}

func proxySite(up string) string {
	return fmt.Sprintf("[[site]]\nhost = \"p.example\"\nbackend = \"proxy\"\ntls = \"off\"\n[site.proxy]\nupstream = %q\n", up)
}

func tlsSite(extra string) string {
	return "[[site]]\nhost = \"t.example\"\nbackend = \"registry\"\n" + extra
}

func policy(hosts, users, allow string) string {
	return fmt.Sprintf("[[policy]]\nhosts = [%s]\nusers = [%s]\nallow = [%s]\n", hosts, users, allow)
}

var checkServeCases = []checkServeCase{
	// decoding: keys, types, syntax
	{"unknown top key", "foo = 1\n" + csHead + csSite, `gw.toml:1: unknown key "foo"`},
	{"unknown site key", csHead + csSite + "hots = \"x\"\n", `gw.toml:8: unknown key "site.hots"`},
	{"unknown cache key", csHead + cacheSite("https://r.example") + "upstreem = \"x\"\n", `unknown key "site.cache.upstreem"`},
	{"wrong type data_dir", "data_dir = 5\n" + csSite, "gw.toml:1: incompatible types"},
	{"wrong type max_conns", csHead + "max_conns = \"many\"\n" + csSite, "gw.toml:4: incompatible types"},
	{"wrong type delete", csHead + csSite + "[site.registry]\ndelete = \"yes\"\n", "gw.toml:9: incompatible types"},
	{"syntax error", csHead + "[listen\n" + csSite, "expected '.' or ']' to end table name"},
	{"bad duration", csHead + cacheSite("https://r.example") + "ttl = \"7 days\"\n", `gw.toml:10: invalid duration "7 days"`},
	{"negative duration", csHead + cacheSite("https://r.example") + "max_age = \"-1h\"\n", `gw.toml:10: negative duration "-1h"`},
	{"bare number duration", csHead + "idle_timeout = \"5\"\n" + csSite, `gw.toml:4: invalid duration "5"`},
	// enums fail while decoding and name the allowed values
	{"unknown backend", csHead + "[[site]]\nhost = \"a.example\"\nbackend = \"nginx\"\n", `gw.toml:6: invalid backend "nginx": want "registry", "cache" or "proxy"`},
	{"missing backend", csHead + "[[site]]\nhost = \"a.example\"\ntls = \"off\"\n", `gw.toml:4: site has no backend: want "registry", "cache" or "proxy"`},
	{"unknown tls", csHead + tlsSite("tls = \"letsencrypt\"\n"), `gw.toml:7: invalid tls "letsencrypt": want "acme", "manual" or "off"`},
	{"unknown auth", csHead + csAuth + csSite + "auth = \"oauth\"\n", `gw.toml:10: invalid auth "oauth": want "token" or "basic"`},
	{"unknown anonymous", csHead + csAuth + csSite + "anonymous = \"push\"\n", `gw.toml:10: invalid anonymous "push": want "pull" or ""`},
	{"unknown log level", csData + "[log]\nlevel = \"verbose\"\n" + csListen + csSite, `gw.toml:3: invalid log level "verbose"`},
	{"unknown log format", csData + "[log]\nformat = \"xml\"\n" + csListen + csSite, `gw.toml:3: invalid log format "xml"`},
	{"unknown challenge", csData + "[acme]\nchallenges = [\"dns-01\"]\n" + csListen + csSite, `gw.toml:3: invalid ACME challenge "dns-01"`},
	// hosts and roots
	{"duplicate hosts", csHead + csSite + csSite, `gw.toml:9: host "a.example" is already served by the site on line 5`},
	{"duplicate hosts case and dot", csHead + csSite + strings.Replace(csSite, "a.example", "A.Example.", 1), `host "a.example" is already served`},
	{"site without host", csHead + "[[site]]\nbackend = \"registry\"\ntls = \"off\"\n", "gw.toml:4: site has no host"},
	{"invalid host", csHead + strings.Replace(csSite, "a.example", "a_b.example", 1), `gw.toml:5: invalid host "a_b.example"`},
	{"host with port", csHead + strings.Replace(csSite, "a.example", "a.example:443", 1), `invalid host "a.example:443"`},
	{"no site", csHead, "no [[site]]"},
	{"overlapping roots", csHead + csSite + "[site.registry]\nroot = \"r\"\n" + strings.Replace(csSite, "a.example", "b.example", 1) + "[site.registry]\nroot = \"r/b\"\n", "overlaps the root"},
	{"cache shares registry root", csHead + csSite + "[site.registry]\nroot = \"shared\"\n" + cacheSite("https://r.example") + "root = \"shared\"\n", "is also the root of registry site a.example"},
	{"data_dir is a file", "data_dir = \"DIR/garbage\"\n" + csListen + csSite, "gw.toml:1: data_dir: DIR/garbage exists and is not a directory"},
	{"root below a file", csHead + csSite + "[site.registry]\nroot = \"DIR/garbage/r\"\n", "gw.toml:9: storage root: cannot create DIR/garbage/r: DIR/garbage is not a directory"},
	// upstream URLs
	{"cache upstream path", csHead + cacheSite("https://registry.example.com/library"), `gw.toml:9: upstream "https://registry.example.com/library": no path allowed`},
	{"cache upstream query", csHead + cacheSite("https://r.example?x=1"), "no query or fragment allowed"},
	{"cache upstream user-info", csHead + cacheSite("https://u:p@r.example"), "put credentials in username/password"},
	{"cache upstream scheme", csHead + cacheSite("ftp://r.example"), "scheme must be http or https"},
	{"cache upstream no scheme", csHead + cacheSite("registry-1.docker.io"), "scheme must be http or https"},
	{"cache without upstream", csHead + "[[site]]\nhost = \"m.example\"\nbackend = \"cache\"\ntls = \"off\"\n", `gw.toml:4: backend = "cache" needs [site.cache] upstream`},
	{"proxy upstream path", csHead + proxySite("http://127.0.0.1:5000/v2/x"), "only scheme://host[:port] is allowed"},
	{"proxy upstream query", csHead + proxySite("http://127.0.0.1:5000?a=b"), "only scheme://host[:port] is allowed"},
	{"proxy upstream user-info", csHead + proxySite("http://u:p@127.0.0.1:5000"), "only scheme://host[:port] is allowed"},
	{"proxy upstream scheme", csHead + proxySite("unix:///run/registry.sock"), "scheme must be http or https"},
	{"proxy without upstream", csHead + "[[site]]\nhost = \"p.example\"\nbackend = \"proxy\"\ntls = \"off\"\n", `backend = "proxy" needs [site.proxy] upstream`},
	{"table of another backend", csHead + csSite + "[site.cache]\nupstream = \"https://r.example\"\n", `[site.cache] given for a site with backend = "registry"`},
	{"password without username", csHead + cacheSite("https://r.example") + "password = \"x\"\n", "gw.toml:10: password without username"},
	// secrets
	{"password and password_file", csHead + cacheSite("https://r.example") + "username = \"u\"\npassword = \"p\"\npassword_file = \"DIR/secret\"\n", "gw.toml:12: password and password_file both set"},
	{"password_file missing", csHead + cacheSite("https://r.example") + "username = \"u\"\npassword_file = \"DIR/nope\"\n", "gw.toml:11: cannot read secret file"},
	{"password_file empty", csHead + cacheSite("https://r.example") + "username = \"u\"\npassword_file = \"DIR/empty\"\n", "is empty"},
	{"password_file without username", csHead + cacheSite("https://r.example") + "password_file = \"DIR/secret\"\n", "password_file without username"},
	{"password env unset", csHead + cacheSite("https://r.example") + "username = \"u\"\npassword = \"${WHARF_TEST_UNSET}\"\n", "gw.toml:11: environment variable WHARF_TEST_UNSET is not set"},
	{"password env malformed", csHead + cacheSite("https://r.example") + "username = \"u\"\npassword = \"${WHARF TEST}\"\n", "malformed ${...} reference"},
	// TLS
	{"acme on an IP", "[listen]\nhttp = \":0\"\nhttps = \":0\"\n[[site]]\nhost = \"127.0.0.1\"\nbackend = \"registry\"\n", `tls = "acme": host "127.0.0.1": an IP address cannot get an ACME certificate; use tls = "manual" or "off"`},
	{"acme without a dot", "[listen]\nhttp = \":0\"\nhttps = \":0\"\n[[site]]\nhost = \"registry\"\nbackend = \"registry\"\n", "ACME certificates need a fully qualified domain name"},
	{"acme without https", csHead + tlsSite(""), `tls = "acme" needs [listen] https`},
	{"manual without cert", csHead + "https = \":0\"\n" + tlsSite("tls = \"manual\"\n"), `tls = "manual" needs cert and key`},
	{"manual cert missing", csHead + "https = \":0\"\n" + tlsSite("tls = \"manual\"\ncert = \"DIR/nope.pem\"\nkey = \"DIR/key.pem\"\n"), "gw.toml:9: cannot read cert"},
	{"manual mismatch", csHead + "https = \":0\"\n" + tlsSite("tls = \"manual\"\ncert = \"DIR/other.pem\"\nkey = \"DIR/key.pem\"\n"), "gw.toml:9: host \"t.example\": loading cert"},
	{"cert with tls off", csHead + csSite + "cert = \"DIR/cert.pem\"\n", `cert and key are only used with tls = "manual"`},
	// auth and policy
	{"htpasswd missing", csData + "[auth]\nhtpasswd = \"DIR/nope\"\n" + csListen + csSite, "gw.toml:3: cannot read htpasswd file"},
	{"htpasswd bad line", csData + "[auth]\nhtpasswd = \"DIR/bad-htpasswd\"\n" + csListen + csSite, "bad-htpasswd:1"},
	{"anonymous without htpasswd", csHead + csSite + "anonymous = \"pull\"\n", "anonymous only means something with logins"},
	{"policy unknown group", csHead + csAuth + csSite + policy(`"a.example"`, `"@nobody"`, `"pull"`), "nobody"},
	{"policy host of no site", csHead + csAuth + csSite + policy(`"b.example"`, `"alice"`, `"pull"`), `"b.example" is not the host of any [[site]]`},
	{"policy glob of no site", csHead + csAuth + csSite + policy(`"*.other.example"`, `"alice"`, `"pull"`), `"*.other.example" is not the host of any [[site]]`},
	{"policy unknown action", csHead + csAuth + csSite + policy(`"a.example"`, `"alice"`, `"write"`), "write"},
	{"policy without htpasswd", csHead + csSite + policy(`"a.example"`, `"alice"`, `"pull"`), "[[policy]] needs users"},
	// a cache site on S3: the registry's [site.registry.s3] rules
	{"cache s3 no bucket", csHead + cacheSite("https://r.example") + "storage = \"s3\"\n[site.cache.s3]\nregion = \"eu-west-1\"\n", "gw.toml:11: storage = \"s3\" needs [site.cache.s3] bucket"},
	{"cache s3 no table", csHead + cacheSite("https://r.example") + "storage = \"s3\"\n", "needs [site.cache.s3] bucket"},
	{"cache s3 bad bucket", csHead + cacheSite("https://r.example") + "storage = \"s3\"\n[site.cache.s3]\nbucket = \"Wharf_Cache\"\n", `gw.toml:12: invalid bucket name "Wharf_Cache"`},
	{"cache s3 bad endpoint", csHead + cacheSite("https://r.example") + "storage = \"s3\"\n[site.cache.s3]\nbucket = \"wharf\"\nendpoint = \"s3.example\"\n", `gw.toml:13: invalid endpoint "s3.example"`},
	{"cache s3 one key file", csHead + cacheSite("https://r.example") + "storage = \"s3\"\n[site.cache.s3]\nbucket = \"wharf\"\naccess_key_file = \"DIR/secret\"\n", "set both access_key_file and secret_key_file"},
	{"cache s3 key file missing", csHead + cacheSite("https://r.example") + "storage = \"s3\"\n[site.cache.s3]\nbucket = \"wharf\"\naccess_key_file = \"DIR/secret\"\nsecret_key_file = \"DIR/nope\"\n", "gw.toml:14: cannot read secret file"},
	{"cache s3 bad sse", csHead + cacheSite("https://r.example") + "storage = \"s3\"\n[site.cache.s3]\nbucket = \"wharf\"\nsse = \"aes256\"\n", `invalid sse "aes256"`},
	{"cache s3 table without storage", csHead + cacheSite("https://r.example") + "[site.cache.s3]\nbucket = \"wharf\"\n", `[site.cache.s3] is set but storage is "filesystem": add storage = "s3"`},
	{"cache bad storage", csHead + cacheSite("https://r.example") + "storage = \"gcs\"\n", `gw.toml:10: invalid storage "gcs"`},
	{"cache s3 misspelt", csHead + cacheSite("https://r.example") + "storage = \"s3\"\n[site.cache.s3]\nbucket = \"wharf\"\npathstyle = true\n", `unknown key "site.cache.s3.pathstyle"`},
	{"cache shares a registry's bucket prefix", csHead + csSite + "[site.registry]\nstorage = \"s3\"\n[site.registry.s3]\nbucket = \"wharf\"\nprefix = \"data\"\n" + cacheSite("https://r.example") + "storage = \"s3\"\n[site.cache.s3]\nbucket = \"wharf\"\nprefix = \"data/\"\n", "bucket prefix s3://wharf/data is also the prefix of registry site a.example (line 4)"},
	{"cache bucket prefix inside a registry's", csHead + csSite + "[site.registry]\nstorage = \"s3\"\n[site.registry.s3]\nbucket = \"wharf\"\nprefix = \"data\"\n" + cacheSite("https://r.example") + "storage = \"s3\"\n[site.cache.s3]\nbucket = \"wharf\"\nprefix = \"data/cache\"\n", "bucket prefix s3://wharf/data/cache overlaps the prefix s3://wharf/data of site a.example"},
	// listen and acme
	{"bad listen address", "[listen]\nhttp = \"80\"\n" + csSite, `gw.toml:2: invalid listen address "80"`},
	{"http and https same", "[listen]\nhttp = \":8080\"\nhttps = \":8080\"\n" + csSite, "http and https listen on the same address"},
	{"negative max_header_bytes", csHead + "max_header_bytes = -1\n" + csSite, "gw.toml:4: must be positive"},
	{"acme ca not https", csData + "[acme]\nca = \"http://ca.example/dir\"\n" + csListen + csSite, "gw.toml:3: invalid ACME directory URL"},
	{"acme ca_root missing", csData + "[acme]\nca_root = \"DIR/nope.pem\"\n" + csListen + csSite, "gw.toml:3: cannot read ACME CA root"},
	// [site.registry.s3] next to storage = "filesystem": the target of
	// wharf migrate-storage, checked as with storage = "s3"
	{"migration target bad bucket", csHead + csSite + "[site.registry]\n[site.registry.s3]\nbucket = \"Bad_Bucket\"\n", `gw.toml:10: invalid bucket name "Bad_Bucket"`},
	{"migration target one key file", csHead + csSite + "[site.registry]\n[site.registry.s3]\nbucket = \"wharf\"\naccess_key_file = \"DIR/secret\"\n", "set both access_key_file and secret_key_file"},
	{"acme ca_root not pem", csData + "[acme]\nca_root = \"DIR/garbage\"\n" + csListen + csSite, "holds no PEM certificate"},
	// S3 storage (issue #15): sse, redirect (valid S3 configs are not
	// here: serve would contact the bucket)
	{"s3 bad sse", csHead + csS3 + "sse = \"aes256\"\n", `gw.toml:14: invalid sse "aes256"`},
	{"s3 kms key without kms", csHead + csS3 + "sse = \"AES256\"\nsse_kms_key_id = \"k\"\n", `gw.toml:15: sse_kms_key_id is set but sse is "AES256"`},
	{"s3 redirect_expiry too long", csHead + csS3 + "redirect = true\nredirect_expiry = \"200h\"\n", "gw.toml:15: redirect_expiry 200h0m0s out of range"},
	{"s3 redirect on a cache", csHead + cacheSite("https://r.example") + "storage = \"s3\"\n[site.cache.s3]\nbucket = \"wharf\"\nredirect = true\n", "redirect is only for registry sites"},
	{"s3 redirect not bool", csHead + csS3 + "redirect = \"yes\"\n", "gw.toml:14: incompatible types"},

	// valid: both accept, including the two configs of issue #10
	{"ok minimal", csHead + csSite, ""},
	{"ok cache upstream /v2/", csHead + cacheSite("https://registry-1.docker.io/v2/"), ""},
	{"ok policy host glob", csHead + csAuth + strings.Replace(csSite, "a.example", "a.example.com", 1) + policy(`"*.example.com"`, `"alice"`, `"pull"`), ""},
	{"ok registries share a root", csHead + csSite + "[site.registry]\nroot = \"r\"\n" + strings.Replace(csSite, "a.example", "b.example", 1) + "[site.registry]\nroot = \"r\"\n", ""},
	{"ok manual tls", csHead + "https = \":0\"\n" + tlsSite("tls = \"manual\"\ncert = \"DIR/cert.pem\"\nkey = \"DIR/key.pem\"\n"), ""},
	{"ok migration target (serve does not contact it)", csHead + csSite + "[site.registry]\n[site.registry.s3]\nbucket = \"wharf\"\nendpoint = \"http://127.0.0.1:9\"\npath_style = true\n", ""},
	{"ok proxy", csHead + proxySite("http://127.0.0.1:5000"), ""},
	{"ok password_file", csHead + cacheSite("https://r.example") + "username = \"u\"\npassword_file = \"DIR/secret\"\n", ""},
	{"ok password from env", csHead + cacheSite("https://r.example") + "username = \"u\"\npassword = \"${WHARF_TEST_SECRET}\"\n", ""},
}

// checkServeFixture writes the files the cases name under DIR.
func checkServeFixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cert, key, _ := acmetest.SelfSigned(t, dir, "", "t.example")
	other, _, _ := acmetest.SelfSigned(t, dir, "o-", "t.example")
	for from, to := range map[string]string{cert: "cert.pem", key: "key.pem", other: "other.pem"} {
		if filepath.Join(dir, to) != from {
			if err := os.Rename(from, filepath.Join(dir, to)); err != nil {
				t.Fatal(err)
			}
		}
	}
	line, err := auth.PasswdLine("alice", []byte("s3cret-pass"))
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"htpasswd":     line + "\n",
		"bad-htpasswd": "alice:plaintext\n",
		"garbage":      "not pem\n",
		"secret":       "s3cret\n",
		"empty":        "",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// writeCase writes a case's config as DIR/<n>/gw.toml (each its own
// data_dir) and returns its path.
func writeCase(t *testing.T, dir string, n int, c checkServeCase) string {
	t.Helper()
	sub := filepath.Join(dir, fmt.Sprint(n))
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(sub, "gw.toml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(c.toml, "DIR", dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCheckAgreesWithServe feeds every case to `wharf check` and to what
// `wharf serve` runs before binding its ports (startGateway: load,
// validate, build every site): both accept, or both refuse with the same
// message.
func TestCheckAgreesWithServe(t *testing.T) {
	if n := len(checkServeCases); n < 50 {
		t.Fatalf("only %d cases", n)
	}
	t.Setenv("WHARF_TEST_SECRET", "s3cret")
	dir := checkServeFixture(t)
	for i, c := range checkServeCases {
		t.Run(c.name, func(t *testing.T) {
			path := writeCase(t, dir, i, c)
			var out, checkErr bytes.Buffer
			code := run([]string{"check", "-config", path}, nil, &out, &checkErr)

			var serveErr bytes.Buffer
			_, g, _, serveCode := startGateway(context.Background(), path, &serveErr)
			if g != nil {
				g.Close()
			}
			if c.want == "" {
				if code != 0 || serveCode != 0 {
					t.Fatalf("valid config: check exit %d %q, serve exit %d %q", code, checkErr.String(), serveCode, serveErr.String())
				}
				return
			}
			if code != 1 || serveCode != 1 {
				t.Fatalf("check exit %d, serve exit %d; want 1 and 1 (stderr %q)", code, serveCode, checkErr.String())
			}
			if checkErr.String() != serveErr.String() {
				t.Fatalf("check and serve disagree:\ncheck: %s\nserve: %s", checkErr.String(), serveErr.String())
			}
			if want := strings.ReplaceAll(c.want, "DIR", dir); !strings.Contains(checkErr.String(), want) {
				t.Fatalf("message %q does not contain %q", checkErr.String(), want)
			}
			if !strings.HasPrefix(checkErr.String(), path+":") && !strings.HasPrefix(checkErr.String(), path+": ") {
				t.Fatalf("message %q does not start with the file name %s", checkErr.String(), path)
			}
		})
	}
}

// TestCheckServeBinary runs the real wharf binary for a sample of the
// broken cases: `wharf serve` exits 1 with exactly `wharf check`'s
// message, before binding any port.
func TestCheckServeBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "wharf")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := checkServeFixture(t)
	for i, c := range checkServeCases {
		if c.want == "" || i%4 != 0 {
			continue
		}
		path := writeCase(t, dir, i, c)
		var msgs [2]string
		for j, cmd := range []string{"check", "serve"} {
			var stderr bytes.Buffer
			p := exec.Command(bin, cmd, "-config", path)
			p.Stderr = &stderr
			err := p.Run()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Fatalf("%s: wharf %s: %v, want exit 1 (stderr %q)", c.name, cmd, err, stderr.String())
			}
			msgs[j] = stderr.String()
		}
		if msgs[0] != msgs[1] || !strings.Contains(msgs[0], strings.ReplaceAll(c.want, "DIR", dir)) {
			t.Errorf("%s: check %q, serve %q; want both the same, containing %q", c.name, msgs[0], msgs[1], c.want)
		}
	}
}

// TestCheckListsEveryProblem: past decoding, check reports every problem
// of the file, one file:line: line each, not only the first.
func TestCheckListsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gw.toml")
	text := csHead + csSite + "anonymous = \"pull\"\n" + csSite + cacheSite("https://r.example/library") + proxySite("ftp://p.example")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"check", "-config", path}, nil, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	want := []string{
		path + `:10: host "a.example" is already served by the site on line 5`,
		path + `:18: upstream "https://r.example/library": no path allowed`,
		path + `:8: anonymous only means something with logins`,
		path + `:24: invalid upstream "ftp://p.example": scheme must be http or https`,
	}
	got := strings.Split(strings.TrimSpace(errOut.String()), "\n")
	if len(got) != len(want) {
		t.Fatalf("%d problems, want %d:\n%s", len(got), len(want), errOut.String())
	}
	for _, w := range want {
		if !strings.Contains(errOut.String(), w) {
			t.Errorf("missing %q in:\n%s", w, errOut.String())
		}
	}
}
