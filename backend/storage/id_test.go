package storage

import "testing"

func TestID(t *testing.T) {
	id := NewID()
	if !ValidID(id) || NewID() == id {
		t.Fatalf("NewID %q: not valid or not random", id)
	}
	for _, bad := range []string{"", "../../etc/passwd", id[:31], id + "0", "ABCDEF0123456789ABCDEF0123456789", "g" + id[1:]} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}
