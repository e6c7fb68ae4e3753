package backend

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Error codes of the OCI distribution spec, plus the ones Docker's registry
// adds (UNAUTHORIZED, DENIED, UNSUPPORTED, TOOMANYREQUESTS, UNAVAILABLE).
const (
	CodeBlobUnknown         = "BLOB_UNKNOWN"
	CodeBlobUploadInvalid   = "BLOB_UPLOAD_INVALID"
	CodeBlobUploadUnknown   = "BLOB_UPLOAD_UNKNOWN"
	CodeDigestInvalid       = "DIGEST_INVALID"
	CodeManifestBlobUnknown = "MANIFEST_BLOB_UNKNOWN"
	CodeManifestInvalid     = "MANIFEST_INVALID"
	CodeManifestUnknown     = "MANIFEST_UNKNOWN"
	CodeNameInvalid         = "NAME_INVALID"
	CodeNameUnknown         = "NAME_UNKNOWN"
	CodeSizeInvalid         = "SIZE_INVALID"
	CodeUnauthorized        = "UNAUTHORIZED"
	CodeDenied              = "DENIED"
	CodeUnsupported         = "UNSUPPORTED"
	CodeTooManyRequests     = "TOOMANYREQUESTS"
	CodeRangeInvalid        = "RANGE_INVALID"
	CodeUnavailable         = "UNAVAILABLE"
	CodeUnknown             = "UNKNOWN"
)

// APIVersion is the Docker-Distribution-Api-Version of every /v2/ answer.
const APIVersion = "registry/2.0"

// SetAPIVersion marks an answer as the distribution API's. It is the one
// place that header is written (the gateway for every /v2/ answer, the
// backends for their own answers when used without it, WriteError for
// every error).
func SetAPIVersion(h http.Header) { h.Set("Docker-Distribution-Api-Version", APIVersion) }

// Error is a distribution-spec error: an HTTP status and one entry of the
// {"errors":[...]} body. It implements error so backends can return it.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
	// Header holds headers that belong to the answer (WWW-Authenticate of
	// a 401, Retry-After of a 429), so that a part that decides on a
	// request can return its refusal and one place writes it.
	Header http.Header `json:"-"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Errorf builds an *Error with a formatted message.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// WriteError writes e in the distribution-spec JSON form. HEAD requests get
// the status and headers only. The API-version header is set here too so an
// error can never leave without it.
func WriteError(w http.ResponseWriter, r *http.Request, e *Error) {
	h := w.Header()
	for k, v := range e.Header {
		h[k] = v
	}
	SetAPIVersion(h)
	h.Set("Content-Type", "application/json")
	body, _ := json.Marshal(struct {
		Errors []*Error `json:"errors"`
	}{[]*Error{e}})
	body = append(body, '\n')
	if r != nil && r.Method == http.MethodHead {
		h.Del("Content-Type")
		w.WriteHeader(e.Status)
		return
	}
	h.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(e.Status)
	_, _ = w.Write(body)
}
