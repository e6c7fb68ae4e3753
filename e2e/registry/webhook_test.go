package registry_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wharf-dev/wharf/e2e/harness"
	"github.com/wharf-dev/wharf/webhook"
)

// hookSink is a real HTTP endpoint on loopback that records the events
// wharf POSTs and checks each envelope's signature and Content-Type.
type hookSink struct {
	t      *testing.T
	secret []byte
	mu     sync.Mutex
	events []webhook.Event
	bad    []string
	more   chan struct{}
}

func (s *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Header.Get("Content-Type") != webhook.MediaType {
		s.bad = append(s.bad, "content type "+r.Header.Get("Content-Type"))
	}
	if !webhook.Verify(s.secret, body, r.Header.Get(webhook.SignatureHeader)) {
		s.bad = append(s.bad, "signature "+r.Header.Get(webhook.SignatureHeader))
	}
	var env webhook.Envelope
	if err := json.Unmarshal(body, &env); err != nil {
		s.bad = append(s.bad, "body "+err.Error())
	}
	s.events = append(s.events, env.Events...)
	select {
	case s.more <- struct{}{}:
	default:
	}
}

// waitFor waits until an event matches ok; the bound only turns a hang
// into a failure.
func (s *hookSink) waitFor(what string, ok func(webhook.Event) bool) webhook.Event {
	s.t.Helper()
	deadline := time.After(2 * time.Minute)
	for {
		s.mu.Lock()
		for _, e := range s.events {
			if ok(e) {
				s.mu.Unlock()
				return e
			}
		}
		n := len(s.events)
		s.mu.Unlock()
		select {
		case <-s.more:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			s.t.Fatalf("no %s event among %d received", what, n)
		}
	}
}

// TestWebhookDockerPush: docker pushes and pulls an image through wharf
// with two [[webhook]] endpoints, one up and one down. The push is not
// held up by the down one; the up one receives registry:2-style push and
// pull events with the digest docker printed, signed with the shared
// secret; once the down endpoint starts listening its queued events
// arrive too.
func TestWebhookDockerPush(t *testing.T) {
	if !harness.WharfEnabled(t) {
		t.Skip("wharf is not among WHARF_E2E_TARGETS")
	}
	docker := harness.Docker(t)
	secret := "e2e-webhook-secret"
	dir := t.TempDir()
	secretPath := filepath.Join(dir, "hook.secret")
	if err := os.WriteFile(secretPath, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	up := &hookSink{t: t, secret: []byte(secret), more: make(chan struct{}, 1)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: up}
	go srv.Serve(ln)
	defer srv.Close()
	downAddr := harness.FreeAddr(t) // nothing listens there yet

	repo := repoName(t, "app")
	w := harness.StartWharf(t, harness.RegistryConfig+`
[[webhook]]
url = "http://`+ln.Addr().String()+`/events"
secret_file = "`+secretPath+`"
actions = ["push", "pull"]
repos = ["e2e/*"]

[[webhook]]
url = "http://`+downAddr+`/events"
secret_file = "`+secretPath+`"
actions = ["push"]
timeout = "2s"
`)
	img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 512<<10)
	src := "wharf-e2e.test/" + repo + ":v1"
	docker.Must(t, "load", "-i", harness.WriteDockerArchive(t, img, src))
	dst := w.Addr() + "/" + repo + ":v1"
	docker.Must(t, "tag", src, dst)
	out := docker.Must(t, "push", dst)
	m := pushDigestRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("docker push printed no digest:\n%s", out)
	}
	pushed := m[1]

	push := up.waitFor("push", func(e webhook.Event) bool { return e.Action == "push" })
	tg := push.Target
	if tg.Digest != pushed || tg.Tag != "v1" || tg.Repository != repo || tg.MediaType != "application/vnd.docker.distribution.manifest.v2+json" || tg.Size == 0 || tg.Length != tg.Size {
		t.Errorf("push target %+v; docker pushed %s", tg, pushed)
	}
	if tg.URL != "http://"+w.Addr()+"/v2/"+repo+"/manifests/"+pushed {
		t.Errorf("push url %s", tg.URL)
	}
	if push.Request.Method != "PUT" || !strings.Contains(push.Request.UserAgent, "docker") || push.Request.ID == "" || push.Source.InstanceID == "" || push.ID == "" || push.Timestamp.IsZero() {
		t.Errorf("push event %+v", push)
	}

	docker.Must(t, "rmi", dst, src)
	docker.Must(t, "pull", dst)
	pull := up.waitFor("pull", func(e webhook.Event) bool { return e.Action == "pull" && e.Target.Digest == pushed })
	if pull.Target.Repository != repo || pull.Request.Method != "GET" {
		t.Errorf("pull event %+v", pull)
	}
	up.mu.Lock()
	if len(up.bad) > 0 {
		t.Errorf("bad envelopes: %v", up.bad)
	}
	up.mu.Unlock()

	// the endpoint that was down comes up and gets the push it missed
	down := &hookSink{t: t, secret: []byte(secret), more: make(chan struct{}, 1)}
	ln2, err := net.Listen("tcp", downAddr)
	if err != nil {
		t.Fatalf("listen on the down endpoint's address: %v", err)
	}
	srv2 := &http.Server{Handler: down}
	go srv2.Serve(ln2)
	defer srv2.Close()
	late := down.waitFor("late push", func(e webhook.Event) bool { return e.Action == "push" })
	if late.Target.Digest != pushed || late.Target.Repository != repo {
		t.Errorf("late event %+v", late.Target)
	}
	down.mu.Lock()
	if len(down.bad) > 0 {
		t.Errorf("bad envelopes at the late endpoint: %v", down.bad)
	}
	down.mu.Unlock()
}

// TestWebhookPushLatency is a measurement, not run by default
// (WHARF_E2E_BENCH=1): the median wall time of 20 small crane pushes to a
// wharf with two [[webhook]] endpoints, one up and one down, against 20
// to a wharf without any, pushes alternating between the two. It fails
// only if events are missing, never on timing.
//
//	WHARF_E2E_BENCH=1 go test -run TestWebhookPushLatency -v ./e2e/registry/
func TestWebhookPushLatency(t *testing.T) {
	if os.Getenv("WHARF_E2E_BENCH") == "" {
		t.Skip("a measurement: set WHARF_E2E_BENCH=1")
	}
	crane := harness.Crane(t)
	dir := t.TempDir()
	secretPath := filepath.Join(dir, "hook.secret")
	os.WriteFile(secretPath, []byte("s\n"), 0o600)
	up := &hookSink{t: t, secret: []byte("s"), more: make(chan struct{}, 1)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: up}
	go srv.Serve(ln)
	defer srv.Close()
	plain := harness.StartWharf(t, harness.RegistryConfig)
	hooked := harness.StartWharf(t, harness.RegistryConfig+`
[[webhook]]
url = "http://`+ln.Addr().String()+`/events"
secret_file = "`+secretPath+`"
[[webhook]]
url = "http://`+harness.FreeAddr(t)+`/events"
secret_file = "`+secretPath+`"
`)
	const n = 20
	var tPlain, tHooked []time.Duration
	for i := 0; i < n; i++ {
		img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 1, 64<<10)
		archive := harness.WriteDockerArchive(t, img, "wharf-e2e.test/lat:x")
		for _, c := range []struct {
			w   *harness.Wharf
			out *[]time.Duration
		}{{plain, &tPlain}, {hooked, &tHooked}} {
			start := time.Now()
			crane.Must(t, "push", "--insecure", archive, c.w.Addr()+"/lat/app:"+strconv.Itoa(i))
			*c.out = append(*c.out, time.Since(start))
		}
	}
	up.waitFor("the last push", func(e webhook.Event) bool { return e.Target.Tag == strconv.Itoa(n-1) })
	median := func(d []time.Duration) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	t.Logf("crane push median over %d pushes: no webhook %v, two webhooks (one down) %v", n, median(tPlain), median(tHooked))
	fmt.Printf("webhook push latency: median of %d crane pushes: none %v, two endpoints (one down) %v\n", n, median(tPlain).Round(time.Millisecond), median(tHooked).Round(time.Millisecond))
}
