package storage

import (
	"context"

	digest "github.com/opencontainers/go-digest"
)

// Redirector is implemented by stores whose blobs a client can fetch
// straight from the storage (s3store: a pre-signed GET URL), so that a
// pull's bytes need not pass through wharf. The registry uses it only
// when the site enables it (redirect = true) and only for blob GETs,
// after its own authorization and record checks.
type Redirector interface {
	// RedirectURL returns a URL that serves blob d's content to anyone
	// holding it, for a limited time. It does not check that d exists.
	RedirectURL(ctx context.Context, d digest.Digest) (string, error)
}
