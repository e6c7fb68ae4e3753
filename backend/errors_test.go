package backend

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestWriteErrorHeaders: an error's own headers (a 401's challenge, a
// 429's Retry-After) leave with it, next to the API version; HEAD gets
// the headers without a body.
func TestWriteErrorHeaders(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		e := Errorf(http.StatusTooManyRequests, CodeTooManyRequests, "slow down")
		e.Header = http.Header{"Retry-After": {"7"}}
		w := httptest.NewRecorder()
		WriteError(w, httptest.NewRequest(method, "/v2/", nil), e)
		h := w.Result().Header
		if w.Code != 429 || h.Get("Retry-After") != "7" || h.Get("Docker-Distribution-Api-Version") != APIVersion {
			t.Errorf("%s: %d %v", method, w.Code, h)
		}
		if body := w.Body.String(); (method == http.MethodHead) != (body == "") {
			t.Errorf("%s: body %q", method, body)
		}
	}
}
