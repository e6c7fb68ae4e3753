package cache

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/backend/storage"
	"github.com/wharf-dev/wharf/backend/storage/localfs"
	"github.com/wharf-dev/wharf/backend/storage/s3store"
	"github.com/wharf-dev/wharf/internal/conf"
)

// Config is the [site.cache] table of a gateway.toml site with
// backend = "cache". It is the only place this section's keys, defaults
// and rules live; New takes what it describes as valid.
type Config struct {
	// Upstream is the mirrored registry's base URL, scheme://host[:port].
	Upstream string `toml:"upstream"`
	// TTL is how long a tag->digest answer is trusted; default DefaultTTL.
	TTL conf.Duration `toml:"ttl"`
	// Username and Password are the upstream credentials; empty means
	// anonymous. Password may be "${ENV_NAME}"; PasswordFile names a file
	// holding it instead (relative to the config file's folder).
	Username     string      `toml:"username"`
	Password     conf.Secret `toml:"password"`
	PasswordFile string      `toml:"password_file"`
	// Storage is where the cached data lives: "filesystem" (default,
	// below Root) or "s3" (the [site.cache.s3] bucket, with the same keys
	// and rules as [site.registry.s3]).
	Storage string `toml:"storage"`
	// Root is the storage root, relative to data_dir unless absolute;
	// default "cache/<host>". Unused with storage = "s3".
	Root string `toml:"root"`
	// S3 is the bucket of storage = "s3".
	S3 *s3store.Config `toml:"s3"`
	// MaxAge: `wharf gc` evicts cached tags, manifests and blobs not used
	// for this long. Zero (the default) never evicts anything.
	MaxAge conf.Duration `toml:"max_age"`
	// MaxSize is the disk budget for cached content ("200GiB"), held by
	// the serving process; 0 (the default) = none.
	MaxSize Size `toml:"max_size"`
	// Upstreams maps registry names ("docker.io", "ghcr.io") to further
	// upstreams on the same host, chosen by containerd's ?ns=<name> or a
	// "<name>/" prefix of the repository; with it, Upstream may be empty.
	Upstreams map[string]string `toml:"upstreams"`
	// Credentials logs in to entries of Upstreams, by the same names.
	Credentials map[string]Credential `toml:"credentials"`
}

// SetDefaults fills in what the user left out for the site named host.
func (c *Config) SetDefaults(host string) {
	if c.TTL == 0 {
		c.TTL = conf.Duration(DefaultTTL)
	}
	if c.Root == "" {
		c.Root = filepath.Join("cache", host)
	}
	s3store.SetStorageDefaults(&c.Storage, &c.S3, host)
}

// Local reports whether the cached data lives on the local file system
// (below Root).
func (c *Config) Local() bool { return c.Storage != s3store.StorageS3 }

// uploadTTL: the cache never resumes a download, so an upload session
// left by a crash is garbage after an hour (an active one is written to
// all the time). On S3 a session's age is its last acknowledged chunk and
// the start of its multipart upload, which a download in progress does
// not refresh: there the store's default (24 h) applies, so that a long
// download of a big layer is not expired under it.
const uploadTTL = time.Hour

// OpenStore opens the storage the section describes, as the cache and
// `wharf gc` use it: the local file system below root (already resolved
// against data_dir) or the S3 bucket, which this contacts (a wrong
// bucket or key fails here, saying which).
func (c *Config) OpenStore(ctx context.Context, env conf.Env, root string, log zerolog.Logger) (storage.Store, error) {
	if c.Local() {
		return localfs.New(localfs.Options{Root: root, UploadTTL: uploadTTL, Logger: log})
	}
	o, err := c.S3.Options(env)
	if err != nil {
		return nil, err
	}
	o.Logger = log
	return s3store.New(ctx, o)
}

// UpstreamPassword is the upstream password: password, or the content
// of password_file.
func (c *Config) UpstreamPassword(env conf.Env) (string, error) {
	if c.PasswordFile != "" {
		return conf.ReadSecretFile(env, c.PasswordFile)
	}
	return c.Password.Reveal(), nil
}

// Validate reports every problem of the section (keys relative to it).
func (c *Config) Validate(env conf.Env) conf.Problems {
	ps := s3store.ValidateStorage(c.Storage, c.S3, "site.cache", env)
	if c.S3 != nil && c.S3.Redirect {
		// A cache serves blobs it may still be fetching; only the
		// registry answers with pre-signed URLs.
		ps.Add("s3.redirect", "redirect is only for registry sites; remove it from [site.cache.s3]")
	}
	if c.Upstream == "" && len(c.Upstreams) == 0 {
		ps.Add("upstream", "backend = \"cache\" needs [site.cache] upstream (or [site.cache.upstreams])")
	} else if c.Upstream != "" {
		if _, err := parseUpstream(c.Upstream); err != nil {
			ps.Add("upstream", "%v", err)
		}
	}
	probs := ValidateUpstreams(c.Upstream, c.Upstreams, c.Credentials)
	delete(probs, "upstream") // reported above
	for _, k := range sortedKeys(probs) {
		ps.Add(k, "%v", probs[k])
	}
	for _, name := range sortedKeys(c.Credentials) {
		if cr := c.Credentials[name]; cr.PasswordFile != "" && probs["credentials."+name] == nil {
			if _, err := cr.Secret(env); err != nil {
				ps.Add("credentials."+name+".password_file", "%v", err)
			}
		}
	}
	switch {
	case c.Password != "" && c.PasswordFile != "":
		ps.Add("password_file", "password and password_file both set: keep one")
	case c.PasswordFile != "":
		if _, err := c.UpstreamPassword(env); err != nil {
			ps.Add("password_file", "%v", err)
		} else if c.Username == "" {
			ps.Add("password_file", "password_file without username: set both, or neither for anonymous pulls")
		}
	case c.Password != "" && c.Username == "":
		ps.Add("password", "password without username: set both, or neither for anonymous pulls")
	}
	if c.TTL < 0 {
		ps.Add("ttl", "negative ttl %v", c.TTL.Std())
	}
	if c.MaxSize < 0 {
		ps.Add("max_size", "negative max_size")
	}
	if c.MaxAge < 0 {
		ps.Add("max_age", "negative max_age %v: want a duration such as \"720h\", or 0 to never evict", c.MaxAge.Std())
	}
	return ps
}

// UpstreamTable is Upstreams with their credentials resolved (password
// files read through env), as New takes it.
func (c *Config) UpstreamTable(env conf.Env) (map[string]Upstream, error) {
	out := make(map[string]Upstream, len(c.Upstreams))
	for name, u := range c.Upstreams {
		cu := Upstream{URL: u}
		if cr, ok := c.Credentials[name]; ok {
			pw, err := cr.Secret(env)
			if err != nil {
				return nil, fmt.Errorf("credentials.%s: %w", name, err)
			}
			cu.Username, cu.Password = cr.Username, pw
		}
		out[name] = cu
	}
	return out, nil
}

// Size is a number of bytes written with a unit: "200GiB", "500MB", "1.5TiB",
// "4096" (bytes). Binary units are KiB, MiB, GiB, TiB; decimal ones KB, MB,
// GB, TB; "B" or no unit is bytes. Zero means "no limit".
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   float64
}{
	// longest suffixes first so "GiB" is not read as "B"
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

// ParseSize reads a Size; "" is 0 (no limit).
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, nil
	}
	mult := 1.0
	num := t
	for _, u := range sizeUnits {
		if strings.HasSuffix(strings.ToLower(t), strings.ToLower(u.suffix)) {
			mult = u.mult
			num = strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || num == "" || strings.ContainsAny(num, "eExXpP_") {
		return 0, fmt.Errorf("invalid size %q: want a number with a unit such as \"200GiB\", \"500MB\" (KiB MiB GiB TiB, KB MB GB TB)", s)
	}
	if v < 0 || math.IsNaN(v) {
		return 0, fmt.Errorf("invalid size %q: negative", s)
	}
	b := v * mult
	if b >= math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return Size(b), nil
}

// UnmarshalText lets TOML decode "200GiB" (and a bare integer as bytes
// through UnmarshalTOML below).
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// UnmarshalTOML accepts a string ("200GiB") or an integer (bytes).
func (s *Size) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		return s.UnmarshalText([]byte(x))
	case int64:
		if x < 0 {
			return fmt.Errorf("invalid size %d: negative", x)
		}
		*s = Size(x)
		return nil
	}
	return fmt.Errorf("invalid size %v: want a string such as \"200GiB\"", v)
}

// String writes s with the largest binary unit that divides it.
func (s Size) String() string {
	for i := 3; i >= 0; i-- {
		u := sizeUnits[i]
		if m := int64(u.mult); s != 0 && int64(s)%m == 0 {
			return strconv.FormatInt(int64(s)/m, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// Credential is [site.cache.credentials."<registry name>"]: how to log in
// to one upstream of the table. PasswordFile (its content, trailing
// newline dropped) keeps the secret out of gateway.toml; give one of
// Password and PasswordFile.
type Credential struct {
	Username     string      `toml:"username"`
	Password     conf.Secret `toml:"password"`
	PasswordFile string      `toml:"password_file"`
}

// Secret returns the password, reading PasswordFile (relative to the
// config file's folder) when set.
func (c Credential) Secret(env conf.Env) (string, error) {
	if c.PasswordFile == "" {
		return c.Password.Reveal(), nil
	}
	return conf.ReadSecretFile(env, c.PasswordFile)
}

// Validate checks one credential entry.
func (c Credential) Validate() error {
	switch {
	case c.Username == "":
		return errors.New("username is empty")
	case c.Password != "" && c.PasswordFile != "":
		return errors.New("give password or password_file, not both")
	case c.Password == "" && c.PasswordFile == "":
		return errors.New("password or password_file is needed")
	}
	return nil
}

// Upstream is one entry of the upstream table as the cache gets it.
type Upstream struct {
	URL                string
	Username, Password string
}

// ValidateNamespace checks a key of [site.cache.upstreams]: a registry
// host name as containerd sends it in ?ns= ("docker.io", "ghcr.io",
// "registry.k8s.io", "registry.example.com:5000"). It must also work as
// the first component of a repository name, which is how records,
// policy and the catalog see the upstream (a port's ':' becomes '-').
func ValidateNamespace(name string) error {
	if name == "" {
		return errors.New("empty registry name")
	}
	if name != strings.ToLower(name) {
		return fmt.Errorf("registry name %q: use lower case", name)
	}
	host, port, hasPort := strings.Cut(name, ":")
	if hasPort {
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
			return fmt.Errorf("registry name %q: bad port", name)
		}
	}
	if !strings.Contains(host, ".") && host != "localhost" {
		return fmt.Errorf("registry name %q: want a host name with a dot (\"docker.io\", \"ghcr.io\") or localhost, as containerd sends it in ?ns=", name)
	}
	if e := backend.ValidateName(NamespacePrefix(name) + "/x"); e != nil {
		return fmt.Errorf("registry name %q: not usable as a repository prefix: %s", name, e.Message)
	}
	return nil
}

// NamespacePrefix is the first repository-name component under which
// the upstream called name keeps its records: the name itself, with a
// port's ':' written as '-' ("localhost:5000" -> "localhost-5000").
func NamespacePrefix(name string) string {
	return strings.ReplaceAll(strings.ToLower(name), ":", "-")
}

// ValidateUpstreams checks the upstream table and the credentials table
// of one cache site. def is the default upstream (may be empty when the
// table is not). Every problem is returned, keyed by the config key
// below [site.cache] ("upstreams.ghcr.io", "credentials.quay.io").
func ValidateUpstreams(def string, ups map[string]string, creds map[string]Credential) map[string]error {
	probs := map[string]error{}
	if def == "" && len(ups) == 0 {
		probs["upstream"] = errors.New("no upstream: set upstream (the default) or [site.cache.upstreams]")
	}
	if def != "" {
		if _, err := parseUpstream(def); err != nil {
			probs["upstream"] = err
		}
	}
	prefixes := map[string]string{}
	for _, name := range sortedKeys(ups) {
		key := "upstreams." + name
		if err := ValidateNamespace(name); err != nil {
			probs[key] = err
			continue
		}
		if _, err := parseUpstream(ups[name]); err != nil {
			probs[key] = err
		}
		p := NamespacePrefix(name)
		if other, dup := prefixes[p]; dup {
			probs[key] = fmt.Errorf("registry names %q and %q both keep records under %q", other, name, p)
		}
		prefixes[p] = name
	}
	for _, name := range sortedKeys(creds) {
		key := "credentials." + name
		if _, ok := ups[name]; !ok {
			probs[key] = fmt.Errorf("credentials for %q, which is not in [site.cache.upstreams] (the default upstream uses username/password of [site.cache])", name)
			continue
		}
		if err := creds[name].Validate(); err != nil {
			probs[key] = err
		}
	}
	return probs
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
