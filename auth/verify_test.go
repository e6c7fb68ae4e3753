package auth

import (
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func testUsers(t testing.TB) Users {
	return Users{"alice": []byte(hash(t, "apw", "$2y$")), "bob": []byte(hash(t, "bpw", "$2a$"))}
}

func TestVerifierCache(t *testing.T) {
	v := newVerifier(16, time.Hour)
	v.setUsers(testUsers(t))
	steps := []struct {
		user, pw string
		ok       bool
		bcrypts  int64 // total after the step
	}{
		{"alice", "apw", true, 1},
		{"alice", "apw", true, 1}, // cached
		{"alice", "wrong", false, 2},
		{"alice", "wrong", false, 3}, // failures are not cached
		{"alice", "apw", true, 3},
		{"bob", "bpw", true, 4},
		{"bob", "apw", false, 5},
		{"nobody", "apw", false, 6}, // unknown users pay bcrypt too (no timing oracle)
		{"alice", "", false, 7},
		{"alic", "eapw", false, 8}, // the cache key separates user and password
	}
	for i, st := range steps {
		if got := v.verify(st.user, []byte(st.pw)); got != st.ok {
			t.Fatalf("step %d: verify(%q, %q) = %v", i, st.user, st.pw, got)
		}
		if n := v.bcrypts.Load(); n != st.bcrypts {
			t.Fatalf("step %d: %d bcrypt checks, want %d", i, n, st.bcrypts)
		}
	}
	if !v.cached("alice", []byte("apw")) || v.cached("alice", []byte("wrong")) {
		t.Fatal("cached() disagrees")
	}
	// A reload empties the cache: a removed user is out at once.
	v.setUsers(Users{"bob": testUsers(t)["bob"]})
	if v.cached("alice", []byte("apw")) || v.verify("alice", []byte("apw")) {
		t.Fatal("removed user still accepted after reload")
	}
}

func TestVerifierConcurrentOneBcrypt(t *testing.T) {
	// A pull starts several layer requests at once with the same
	// credentials: they must share one bcrypt check.
	h, _ := bcrypt.GenerateFromPassword([]byte("apw"), 8)
	v := newVerifier(16, time.Hour)
	v.setUsers(Users{"alice": h})
	var wg sync.WaitGroup
	fails := make(chan int, 30)
	for i := 0; i < 30; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !v.verify("alice", []byte("apw")) {
				fails <- 1
			}
		}()
	}
	wg.Wait()
	close(fails)
	if len(fails) > 0 {
		t.Fatalf("%d verifications failed", len(fails))
	}
	if n := v.bcrypts.Load(); n != 1 {
		t.Fatalf("%d bcrypt checks for 30 concurrent requests, want 1", n)
	}
}

func TestVerifierBounded(t *testing.T) {
	v := newVerifier(2, time.Hour)
	v.setUsers(testUsers(t))
	v.verify("alice", []byte("apw"))
	v.verify("bob", []byte("bpw"))
	for i := 0; i < 5; i++ {
		v.verify("alice", []byte("x")) // failures do not evict
	}
	if v.cache.Len() != 2 {
		t.Fatalf("cache has %d entries", v.cache.Len())
	}
	v.setUsers(testUsers(t))
	if v.cache.Len() != 0 {
		t.Fatal("setUsers did not purge the cache")
	}
}

func TestThrottle(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	th := newThrottle(Throttle{UserFree: 3, AddrFree: 5, Backoff: time.Second, MaxBackoff: 4 * time.Second}, clock)
	steps := []struct {
		op        string // fail, ok, wait
		addr      string
		user      string
		advance   time.Duration
		wantBlock time.Duration // result of fail, or of blocked() for "check"
	}{
		{op: "fail", addr: "1.1.1.1", user: "alice"},
		{op: "fail", addr: "1.1.1.1", user: "alice"},
		{op: "check", addr: "1.1.1.1", user: "alice"},
		{op: "fail", addr: "1.1.1.1", user: "alice"},
		{op: "fail", addr: "1.1.1.1", user: "alice", wantBlock: time.Second},     // 4th > 3 free
		{op: "check", addr: "9.9.9.9", user: "alice", wantBlock: time.Second},    // per user, any address
		{op: "check", addr: "1.1.1.1", user: "bob", wantBlock: 0},                // address not blocked yet
		{op: "fail", addr: "2.2.2.2", user: "alice", wantBlock: 2 * time.Second}, // doubles
		{op: "fail", addr: "2.2.2.2", user: "alice", wantBlock: 4 * time.Second}, // doubles
		{op: "fail", addr: "2.2.2.2", user: "alice", wantBlock: 4 * time.Second}, // capped
		{op: "check", addr: "3.3.3.3", user: "alice", advance: 5 * time.Second},  // time passes
		{op: "fail", addr: "1.1.1.1", user: "carol"},                             // addr: 5th fail, still free
		{op: "fail", addr: "1.1.1.1", user: "dave", wantBlock: time.Second},      // addr: 6th
		{op: "check", addr: "1.1.1.1", user: "erin", wantBlock: time.Second},     // per address, any user
		{op: "ok", addr: "5.5.5.5", user: "alice"},                               // success clears the user
		{op: "fail", addr: "4.4.4.4", user: "alice", advance: 2 * time.Second},   // counting starts again
	}
	for i, st := range steps {
		now = now.Add(st.advance)
		var got time.Duration
		switch st.op {
		case "fail":
			got = th.fail(st.addr, st.user)
		case "check":
			got = th.blocked(st.addr, st.user)
		case "ok":
			th.succeed(st.addr, st.user)
			continue
		}
		if got != st.wantBlock {
			t.Fatalf("step %d (%s %s %s): block %v, want %v", i, st.op, st.addr, st.user, got, st.wantBlock)
		}
	}
}
