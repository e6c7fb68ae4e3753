package s3store

import (
	"fmt"

	"github.com/minio/minio-go/v7/pkg/encrypt"
)

// serverSide turns sse and sse_kms_key_id into the encryption every
// write of the store asks for (PutObject, the start of a multipart
// upload, the destination of CopyObject and ComposeObject); nil leaves
// it to the bucket's default. SSE-C (customer keys) is not offered: wharf
// would have to keep the key and send it with every read, pre-signed
// URLs included.
func serverSide(c Config) (encrypt.ServerSide, error) {
	switch c.SSE {
	case "":
		return nil, nil
	case SSES3:
		return encrypt.NewSSE(), nil
	case SSEKMS:
		sse, err := encrypt.NewSSEKMS(c.SSEKMSKeyID, nil)
		if err != nil {
			return nil, fmt.Errorf("s3: sse_kms_key_id: %w", err)
		}
		return sse, nil
	}
	return nil, fmt.Errorf("s3: invalid sse %q", c.SSE)
}
