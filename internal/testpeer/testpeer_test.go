package testpeer

import "testing"

type recordTB struct {
	testing.TB
	fatal, skip bool
}

func (r *recordTB) Helper()                        {}
func (r *recordTB) Fatalf(format string, a ...any) { r.fatal = true }
func (r *recordTB) Skipf(format string, a ...any)  { r.skip = true }

func TestMissing(t *testing.T) {
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		r := &recordTB{TB: t}
		Missing(r, "x")
		if want := ci != ""; r.fatal != want || r.skip == want {
			t.Errorf("CI=%q: fatal=%v skip=%v", ci, r.fatal, r.skip)
		}
	}
}
