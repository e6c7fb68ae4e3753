package gateway

import (
	"net/http"
	"os"
	"strconv"

	"github.com/wharf-dev/wharf/backend"
	"github.com/wharf-dev/wharf/webhook"
)

// Webhook events are made here, in the gateway (serveEvents), from the
// parsed /v2/ route and the backend's answer, rather than inside the
// registry backend: the gateway already knows the route, the user and the
// request id, backends stay free of users and HTTP notifications, and the
// same events come from every backend (pulls through a cache site too).

// newNotifier starts the [[webhook]] senders of cfg (nil without any).
func (g *Gateway) newNotifier(cfg *Config) (*webhook.Notifier, error) {
	if len(cfg.Webhooks) == 0 {
		return nil, nil
	}
	return webhook.New(cfg.Webhooks, webhook.Options{
		Log:     g.log.With().Str("component", "webhook").Logger(),
		Metrics: g.webhookMetrics,
		Resolve: cfg.Path,
	})
}

// serveEvents calls serve and emits a push, delete or pull event for a
// manifest PUT (201), DELETE (202) or GET (200) that succeeded, if an
// endpoint wants it, naming user as the actor. It never delays the
// answer: Emit only queues.
func (g *Gateway) serveEvents(host string, w http.ResponseWriter, r *http.Request, rt *backend.Route, user string, serve func(http.ResponseWriter, *http.Request)) {
	n := g.hooks.Load()
	if n == nil || rt.Kind != backend.KindManifest {
		serve(w, r)
		return
	}
	var action string
	var ok int
	switch r.Method {
	case http.MethodPut:
		action, ok = webhook.ActionPush, http.StatusCreated
	case http.MethodDelete:
		action, ok = webhook.ActionDelete, http.StatusAccepted
	case http.MethodGet:
		action, ok = webhook.ActionPull, http.StatusOK
	}
	if action == "" || !n.Wants(host, action, rt.Repo) {
		serve(w, r)
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	var in *countingBody
	if action == webhook.ActionPush && r.Body != nil {
		in = &countingBody{ReadCloser: r.Body}
		r.Body = in
	}
	serve(sw, r)
	if sw.status != ok {
		return
	}
	n.Emit(host, g.event(r, rt, user, action, sw, in))
}

func (g *Gateway) event(r *http.Request, rt *backend.Route, user, action string, sw *statusWriter, in *countingBody) webhook.Event {
	h := sw.Header()
	t := webhook.Target{Repository: rt.Repo, Digest: h.Get("Docker-Content-Digest")}
	if backend.IsDigestShaped(rt.Reference) {
		if t.Digest == "" {
			t.Digest = rt.Reference
		}
		if tags := h.Values("OCI-Tag"); len(tags) > 0 {
			t.Tag = tags[0]
		}
	} else {
		t.Tag = rt.Reference
	}
	switch action {
	case webhook.ActionPush:
		t.MediaType = r.Header.Get("Content-Type")
		t.Size = in.count()
	case webhook.ActionPull:
		t.MediaType = h.Get("Content-Type")
		t.Size, _ = strconv.ParseInt(h.Get("Content-Length"), 10, 64)
		if t.Size == 0 {
			t.Size = sw.bytes
		}
	}
	t.Length = t.Size
	if t.Digest != "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		t.URL = scheme + "://" + r.Host + "/v2/" + rt.Repo + "/manifests/" + t.Digest
	}
	return webhook.Event{
		ID:        webhook.NewID(),
		Timestamp: g.now().UTC(),
		Action:    action,
		Target:    t,
		Request: webhook.Request{
			ID:        RequestID(r.Context()),
			Addr:      r.RemoteAddr,
			Host:      r.Host,
			Method:    r.Method,
			UserAgent: r.UserAgent(),
		},
		Actor:  webhook.Actor{Name: user},
		Source: g.source,
	}
}

// statusWriter notes the status and body size of a manifest answer
// (small; no need for the sendfile and flush paths of recorder).
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

// Flush passes through, for backends that stream an answer.
func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// instanceSource names this process in events: the host name and a
// random instance id, as registry:2 does.
func instanceSource() webhook.Source {
	h, _ := os.Hostname()
	return webhook.Source{Addr: h, InstanceID: webhook.NewID()}
}
