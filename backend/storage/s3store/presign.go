package s3store

import (
	"context"
	"fmt"

	digest "github.com/opencontainers/go-digest"

	"github.com/wharf-dev/wharf/backend/storage"
)

var _ storage.Redirector = (*Store)(nil)

// RedirectURL pre-signs a GET of blob d's object, valid for
// redirect_expiry (default 20 minutes). Signing is local: no request
// goes to S3, and the URL works only while the credentials that signed
// it do (a temporary session token ends it sooner).
func (s *Store) RedirectURL(ctx context.Context, d digest.Digest) (string, error) {
	exp := s.redirectExpiry
	if exp <= 0 {
		exp = DefaultRedirectExpiry
	}
	u, err := s.c.PresignedGetObject(ctx, s.bucket, s.blobKey(d), exp, nil)
	if err != nil {
		return "", fmt.Errorf("pre-sign blob %s: %w", d, err)
	}
	return u.String(), nil
}
