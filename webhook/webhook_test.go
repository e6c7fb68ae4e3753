package webhook

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/wharf-dev/wharf/internal/conf"
	"github.com/wharf-dev/wharf/internal/testlog"
)

func init() { firstBackoff = 20 * time.Millisecond }

// sink is a real HTTP endpoint that records envelopes and checks their
// signature and content type.
type sink struct {
	t      *testing.T
	secret []byte
	mu     sync.Mutex
	events []Event
	got    chan struct{}
	fail   int // answer 503 to this many POSTs first
}

func newSink(t *testing.T, secret string) (*sink, *httptest.Server) {
	s := &sink{t: t, got: make(chan struct{}, 1000)}
	if secret != "" {
		s.secret = []byte(secret)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail > 0 {
		s.fail--
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if r.Header.Get("Content-Type") != MediaType {
		s.t.Errorf("content type %q", r.Header.Get("Content-Type"))
	}
	if s.secret != nil && !Verify(s.secret, body, r.Header.Get(SignatureHeader)) {
		s.t.Errorf("bad signature %q", r.Header.Get(SignatureHeader))
	}
	var env Envelope
	if err := json.Unmarshal(body, &env); err != nil {
		s.t.Errorf("envelope: %v", err)
	}
	s.events = append(s.events, env.Events...)
	for range env.Events {
		s.got <- struct{}{}
	}
}

func (s *sink) wait(n int) []Event {
	s.t.Helper()
	deadline := time.After(30 * time.Second) // turns a hang into a failure
	for i := 0; i < n; i++ {
		select {
		case <-s.got:
		case <-deadline:
			s.t.Fatalf("only %d of %d events arrived", i, n)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.events...)
}

func secretFile(t *testing.T, s string) string {
	p := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(p, []byte(s+"\n"), 0o600)
	return p
}

func ev(action, repo, tag string) Event {
	return Event{ID: NewID(), Timestamp: time.Now(), Action: action, Target: Target{Repository: repo, Tag: tag, Digest: "sha256:" + strings.Repeat("a", 64)}}
}

// TestFilterAndSign: each endpoint gets only its actions and repositories,
// signed with its secret.
func TestFilterAndSign(t *testing.T) {
	a, srvA := newSink(t, "s3cret")
	b, srvB := newSink(t, "")
	n, err := New([]Config{
		{URL: srvA.URL, SecretFile: secretFile(t, "s3cret"), Repos: []string{"team-a/*"}},
		{URL: srvB.URL, Actions: []string{"pull"}},
	}, Options{Log: testlog.New(t, zerolog.WarnLevel)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	n.Emit("r.test", ev("push", "team-a/app", "v1"))
	n.Emit("r.test", ev("push", "team-b/app", "v1"))
	n.Emit("r.test", ev("pull", "team-a/app", "v1"))
	n.Emit("r.test", ev("delete", "team-a/x/y", "old"))
	gotA := a.wait(2)
	gotB := b.wait(1)
	if len(gotA) != 2 || gotA[0].Target.Repository != "team-a/app" || gotA[0].Action != "push" || gotA[1].Action != "delete" {
		t.Errorf("endpoint a got %+v", gotA)
	}
	if len(gotB) != 1 || gotB[0].Action != "pull" {
		t.Errorf("endpoint b got %+v", gotB)
	}
	if n.Wants("r.test", "pull", "team-b/app") != true || n.Wants("r.test", "push", "team-b/app") {
		t.Errorf("Wants disagrees with the filters")
	}
}

// TestDownThenBack: events for an endpoint that answers 503 (and one
// whose port is closed) arrive, in order, once it is back; Emit never
// waits for it.
func TestDownThenBack(t *testing.T) {
	s, srv := newSink(t, "k")
	s.fail = 3
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + ln.Addr().String() + "/hook"
	ln.Close() // nothing listens there: connection refused until re-bound
	reg := prometheus.NewRegistry()
	n, err := New([]Config{{URL: srv.URL, SecretFile: secretFile(t, "k")}, {URL: closedURL}}, Options{Log: testlog.New(t, zerolog.ErrorLevel), Metrics: NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for i := 0; i < 5; i++ {
		n.Emit("h", ev("push", "app", string(rune('a'+i))))
	}
	got := s.wait(5)
	var tags []string
	for _, e := range got {
		tags = append(tags, e.Target.Tag)
	}
	if !slices.Equal(tags, []string{"a", "b", "c", "d", "e"}) {
		t.Errorf("order %v", tags)
	}
	// the closed endpoint comes back
	back, srv2 := newSink(t, "")
	srv2.Close()
	ln2, err := net.Listen("tcp", ln.Addr().String())
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", ln.Addr(), err)
	}
	go http.Serve(ln2, back)
	defer ln2.Close()
	if got := back.wait(5); len(got) != 5 {
		t.Errorf("closed endpoint got %d events", len(got))
	}
}

// TestQueueFull: a stuck endpoint with a queue of 2 makes Emit drop and
// count the rest, without blocking.
func TestQueueFull(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	reg := prometheus.NewRegistry()
	n, err := New([]Config{{URL: srv.URL, Queue: 2}}, Options{Log: testlog.New(t, zerolog.ErrorLevel), Metrics: NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		n.Emit("h", ev("push", "app", "t"))
	}
	mfs, _ := reg.Gather()
	dropped := 0.0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if mf.GetName() == "wharf_webhook_events_total" && l.GetValue() == "dropped" {
					dropped = m.GetCounter().GetValue()
				}
			}
		}
	}
	// at most one batch in flight (what was queued then) plus two queued
	if dropped < 45 {
		t.Errorf("dropped %v of 50 with a queue of 2", dropped)
	}
	release <- struct{}{}
	n.Close()
}

func TestValidate(t *testing.T) {
	sf := secretFile(t, "x")
	for _, tc := range []struct {
		c    Config
		keys string
	}{
		{Config{URL: "https://ci.example.com/wharf", SecretFile: sf, Actions: []string{"push", "delete"}, Repos: []string{"team-a/*"}}, ""},
		{Config{URL: "ftp://x"}, "url"},
		{Config{URL: "https://x", SecretFile: "/nonexistent"}, "secret_file"},
		{Config{URL: "https://x", Actions: []string{"push", "tag"}}, "actions"},
		{Config{URL: "https://x", Actions: []string{}}, "actions"},
	} {
		c := tc.c
		if c.Actions == nil {
			c.SetDefaults()
		}
		var keys []string
		for _, p := range c.Validate(conf.Env{}) {
			keys = append(keys, p.Key)
		}
		if strings.Join(keys, ",") != tc.keys {
			t.Errorf("%+v: problems %v, want %q", tc.c, keys, tc.keys)
		}
	}
}

func TestSign(t *testing.T) {
	// HMAC-SHA256 test vector (RFC 4231, case 2)
	if got := Sign([]byte("Jefe"), []byte("what do ya want for nothing?")); got != "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" {
		t.Errorf("Sign: %s", got)
	}
	if Verify([]byte("k"), []byte("a"), Sign([]byte("k"), []byte("b"))) {
		t.Errorf("Verify accepts a wrong body")
	}
}
