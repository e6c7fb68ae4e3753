package backend

import (
	"net/http/httptest"
	"slices"
	"testing"
)

func TestPaginate(t *testing.T) {
	all := []string{"a", "b", "c", "d"}
	tests := []struct {
		query, link string
		want        []string
		bad         bool
	}{
		{"", "", all, false},
		{"?n=2", `</v2/_catalog?last=b&n=2>; rel="next"`, []string{"a", "b"}, false},
		{"?n=2&last=b", "", []string{"c", "d"}, false},
		{"?n=10&last=a", "", []string{"b", "c", "d"}, false},
		{"?last=zz", "", []string{}, false},
		{"?n=0", "", []string{}, false},
		{"?n=-1", "", nil, true},
		{"?n=x", "", nil, true},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		got, err := Paginate(rec, httptest.NewRequest("GET", "/v2/_catalog"+tt.query, nil), all, "/v2/_catalog")
		if tt.bad {
			if err == nil || err.(*Error).Status != 400 {
				t.Errorf("%s: want a 400, got %v", tt.query, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) || rec.Header().Get("Link") != tt.link {
			t.Errorf("%s: got %v %v link %q; want %v link %q", tt.query, got, err, rec.Header().Get("Link"), tt.want, tt.link)
		}
	}
}
