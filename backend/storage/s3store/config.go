package s3store

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/wharf-dev/wharf/internal/conf"
)

// Config is the [site.registry.s3] table: where in which bucket a site's
// data lives and how to reach it. It is the only place these keys,
// defaults and rules live.
type Config struct {
	// Bucket must exist; wharf never creates buckets.
	Bucket string `toml:"bucket"`
	// Prefix is the key prefix of everything the site stores; default
	// the site's host, so several sites can share one bucket.
	Prefix string `toml:"prefix"`
	// Region is the bucket's region; default "us-east-1".
	Region string `toml:"region"`
	// Endpoint is the S3 server's URL (http:// or https://); default AWS.
	Endpoint string `toml:"endpoint"`
	// PathStyle addresses the bucket as endpoint/bucket instead of
	// bucket.endpoint (MinIO, versitygw, Ceph RGW, Garage want it);
	// an endpoint given as an IP address always uses it.
	PathStyle bool `toml:"path_style"`
	// AccessKeyFile and SecretKeyFile hold static credentials; without
	// them the AWS environment (AWS_ACCESS_KEY_ID, ...), the shared
	// credentials file and instance roles are used.
	AccessKeyFile string `toml:"access_key_file"`
	SecretKeyFile string `toml:"secret_key_file"`
	// SSE asks for server-side encryption of every object wharf writes
	// (puts, multipart uploads, server-side copies): "" (the bucket's
	// default), "AES256" (SSE-S3) or "aws:kms" (SSE-KMS).
	SSE string `toml:"sse"`
	// SSEKMSKeyID is the KMS key of sse = "aws:kms"; empty: the
	// account's default key for S3 (aws/s3).
	SSEKMSKeyID string `toml:"sse_kms_key_id"`
	// Redirect answers a blob GET with 307 Temporary Redirect to a
	// pre-signed URL of the object, after the usual authorization and
	// checks, so the bytes flow from S3 to the client and not through
	// wharf. Off by default (as in distribution): the client must be
	// able to reach the endpoint.
	Redirect bool `toml:"redirect"`
	// RedirectExpiry is how long a pre-signed URL stays valid; default
	// 20 minutes, at most 7 days (the SigV4 limit).
	RedirectExpiry conf.Duration `toml:"redirect_expiry"`
}

// Server-side encryption modes of sse.
const (
	SSES3  = "AES256"
	SSEKMS = "aws:kms"
)

// DefaultRedirectExpiry is the validity of a pre-signed blob URL.
const DefaultRedirectExpiry = 20 * time.Minute

// maxRedirectExpiry is the longest validity SigV4 allows.
const maxRedirectExpiry = 7 * 24 * time.Hour

// SetDefaults fills in what the user left out for the site named host.
func (c *Config) SetDefaults(host string) {
	if c.Prefix == "" {
		c.Prefix = host
	}
	if c.Region == "" {
		c.Region = "us-east-1"
	}
	if c.Endpoint == "" {
		c.Endpoint = "https://s3." + c.Region + ".amazonaws.com"
	}
	if c.RedirectExpiry == 0 {
		c.RedirectExpiry = conf.Duration(DefaultRedirectExpiry)
	}
}

// bucketName follows the S3 rules (3-63 lower-case letters, digits, dots
// and hyphens; starts and ends with a letter or digit).
var bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// Validate reports every problem of the section (keys relative to it).
// It reads the key files but does not contact the server: `wharf check`
// stays offline; start-up (New) says whether the bucket and the
// credentials work.
//
// Its messages name the registry's table; ValidateStorage names the
// table of the section it checks ([site.cache.s3]).
func (c *Config) Validate(env conf.Env) conf.Problems { return c.validate(env, "site.registry.s3") }

// validate is Validate naming the table ("site.cache.s3") in messages.
func (c *Config) validate(env conf.Env, table string) conf.Problems {
	var ps conf.Problems
	switch {
	case c.Bucket == "":
		ps.Add("bucket", "storage = \"s3\" needs [%s] bucket", table)
	case !bucketName.MatchString(c.Bucket):
		ps.Add("bucket", "invalid bucket name %q (3-63 lower-case letters, digits, '.' and '-')", c.Bucket)
	}
	if strings.HasPrefix(c.Prefix, "/") || strings.Contains(c.Prefix, "//") || strings.Contains(c.Prefix, "..") {
		ps.Add("prefix", "invalid prefix %q: no leading '/', no empty or '..' components", c.Prefix)
	}
	if c.Endpoint != "" {
		if _, _, err := parseEndpoint(c.Endpoint); err != nil {
			ps.Add("endpoint", "%v", err)
		}
	}
	if (c.AccessKeyFile == "") != (c.SecretKeyFile == "") {
		ps.Add("access_key_file", "set both access_key_file and secret_key_file, or neither (then the AWS environment is used)")
	}
	for key, f := range map[string]string{"access_key_file": c.AccessKeyFile, "secret_key_file": c.SecretKeyFile} {
		if f == "" {
			continue
		}
		if _, err := conf.ReadSecretFile(env, f); err != nil {
			ps.Add(key, "%v", err)
		}
	}
	switch c.SSE {
	case "", SSES3, SSEKMS:
	default:
		ps.Add("sse", "invalid sse %q: want %s (\"\": the bucket's default)", c.SSE, conf.OneOf("", SSES3, SSEKMS))
	}
	if c.SSEKMSKeyID != "" && c.SSE != SSEKMS {
		ps.Add("sse_kms_key_id", "sse_kms_key_id is set but sse is %q: set sse = %q", c.SSE, SSEKMS)
	}
	if e := c.RedirectExpiry.Std(); e != 0 && (e < time.Second || e > maxRedirectExpiry) {
		ps.Add("redirect_expiry", "redirect_expiry %s out of range: want 1s to %s", e, maxRedirectExpiry)
	}
	return ps
}

// parseEndpoint splits an endpoint URL into host[:port] and whether it
// uses TLS.
func parseEndpoint(s string) (host string, secure bool, err error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || (u.Path != "" && u.Path != "/") {
		return "", false, fmt.Errorf("invalid endpoint %q: want http(s)://host[:port]", s)
	}
	return u.Host, u.Scheme == "https", nil
}

// Storage kinds: the storage key of every site section that keeps data
// ([site.registry], [site.cache]; backend/registry has the same names).
const (
	StorageFilesystem = "filesystem"
	StorageS3         = "s3"
)

// SetStorageDefaults is the defaults step of a site section's storage
// choice: kind "" becomes filesystem; with s3, a missing table is created
// (Validate then names its missing bucket) and filled in for host.
func SetStorageDefaults(kind *string, c **Config, host string) {
	if *kind == "" {
		*kind = StorageFilesystem
	}
	if *kind == StorageS3 {
		if *c == nil {
			*c = &Config{}
		}
		(*c).SetDefaults(host)
	}
}

// ValidateStorage checks a site section's storage key and its s3 table
// together (keys relative to the section); section is its TOML name
// ("site.cache"). Every section that keeps data shares these rules.
func ValidateStorage(kind string, c *Config, section string, env conf.Env) conf.Problems {
	var ps conf.Problems
	switch kind {
	case StorageFilesystem, "":
		if c != nil {
			ps.Add("s3", "[%s.s3] is set but storage is %q: add storage = \"s3\"", section, kind)
		}
	case StorageS3:
		if c == nil {
			ps.Add("s3", "storage = \"s3\" needs a [%s.s3] table", section)
			break
		}
		ps.Merge("s3", c.validate(env, section+".s3"))
	default:
		ps.Add("storage", "invalid storage %q: want %s", kind, conf.OneOf(StorageFilesystem, StorageS3))
	}
	return ps
}

// Options are the store options the table describes, with the static
// credentials read from the key files (through env) when they are set.
// The caller adds what is not configuration (Logger, UploadTTL).
func (c *Config) Options(env conf.Env) (Options, error) {
	o := Options{Config: *c}
	if c.AccessKeyFile == "" {
		return o, nil
	}
	var err error
	if o.AccessKey, err = conf.ReadSecretFile(env, c.AccessKeyFile); err != nil {
		return o, fmt.Errorf("s3: access_key_file: %w", err)
	}
	if o.SecretKey, err = conf.ReadSecretFile(env, c.SecretKeyFile); err != nil {
		return o, fmt.Errorf("s3: secret_key_file: %w", err)
	}
	return o, nil
}
