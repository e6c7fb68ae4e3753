// Package webhook sends registry events (push, delete, pull of manifests)
// to HTTP endpoints in the envelope registry:2's notifications use, so
// consumers written for registry:2 work unchanged: a POST with
// Content-Type application/vnd.docker.distribution.events.v1+json and a
// body {"events":[...]}.
//
// Each endpoint has its own bounded queue and one sender: Emit never
// blocks (a full queue drops the event, counted in
// wharf_webhook_events_total{result="dropped"} and logged), events are
// sent in order, several queued ones in one envelope, and a failed POST
// (an error or a non-2xx answer) is retried with exponential back-off
// (1s doubling to 1m) until it succeeds or wharf stops, so the events of
// an endpoint that is down arrive once it is back. With secret_file, the
// header X-Wharf-Signature: sha256=<hex> carries the HMAC-SHA256 of the
// body under that secret.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// MediaType is the envelope's Content-Type, as registry:2 sends it.
const MediaType = "application/vnd.docker.distribution.events.v1+json"

// SignatureHeader carries "sha256=<hex HMAC-SHA256 of the body>".
const SignatureHeader = "X-Wharf-Signature"

// maxBatch bounds how many queued events go in one envelope.
const maxBatch = 100

// Back-off between attempts of one envelope.
var (
	firstBackoff = time.Second
	maxBackoff   = time.Minute
)

// Envelope is the body of every POST.
type Envelope struct {
	Events []Event `json:"events"`
}

// Event is one registry:2-style event.
type Event struct {
	ID        string    `json:"id"`
	Timestamp time.Time `json:"timestamp"`
	Action    string    `json:"action"`
	Target    Target    `json:"target"`
	Request   Request   `json:"request"`
	Actor     Actor     `json:"actor"`
	Source    Source    `json:"source"`
}

// Target is the manifest the event is about.
type Target struct {
	MediaType  string `json:"mediaType,omitempty"`
	Size       int64  `json:"size,omitempty"`
	Digest     string `json:"digest,omitempty"`
	Length     int64  `json:"length,omitempty"`
	Repository string `json:"repository"`
	URL        string `json:"url,omitempty"`
	Tag        string `json:"tag,omitempty"`
}

// Request describes the request that caused the event.
type Request struct {
	ID        string `json:"id"`
	Addr      string `json:"addr"`
	Host      string `json:"host"`
	Method    string `json:"method"`
	UserAgent string `json:"useragent"`
}

// Actor is who made the request ("" when anonymous or without logins).
type Actor struct {
	Name string `json:"name,omitempty"`
}

// Source is the wharf instance that saw the event.
type Source struct {
	Addr       string `json:"addr"`
	InstanceID string `json:"instanceID"`
}

// NewID returns a random UUID (version 4) for events and instances.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Metrics are the webhook series; made once per process so that a reload
// that replaces the Notifier keeps counting in the same series.
type Metrics struct {
	events *prometheus.CounterVec
	queued *prometheus.GaugeVec
}

// NewMetrics registers the webhook series with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wharf_webhook_events_total",
			Help: "Webhook events by endpoint and result: sent, dropped (queue full, or unsent at shutdown), retried (failed attempts).",
		}, []string{"endpoint", "result"}),
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wharf_webhook_queue_length", Help: "Events waiting for an endpoint.",
		}, []string{"endpoint"}),
	}
	reg.MustRegister(m.events, m.queued)
	return m
}

// Options configure a Notifier.
type Options struct {
	Log     zerolog.Logger
	Metrics *Metrics // may be nil
	// Resolve turns secret_file into the path to read.
	Resolve func(string) string
	// Client sends the POSTs; default: a client with the endpoint's timeout.
	Client *http.Client
}

// Notifier fans events out to the configured endpoints.
type Notifier struct {
	eps    []*endpoint
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type endpoint struct {
	cfg    Config
	label  string // URL without user info or query, for logs and metrics
	secret []byte
	queue  chan Event
	client *http.Client
	log    zerolog.Logger
	m      *Metrics
	drops  int64 // under dropMu
	dropMu sync.Mutex
}

// New starts one sender per endpoint; Close stops them.
func New(cfgs []Config, o Options) (*Notifier, error) {
	if o.Resolve == nil {
		o.Resolve = func(s string) string { return s }
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Notifier{cancel: cancel}
	for _, c := range cfgs {
		c.SetDefaults()
		ep := &endpoint{cfg: c, label: redact(c.URL), queue: make(chan Event, c.Queue), m: o.Metrics}
		ep.log = o.Log.With().Str("webhook", ep.label).Logger()
		if c.SecretFile != "" {
			s, err := readSecret(o.Resolve(c.SecretFile))
			if err != nil {
				cancel()
				return nil, err
			}
			ep.secret = s
		}
		ep.client = o.Client
		if ep.client == nil {
			ep.client = &http.Client{Timeout: c.Timeout.Std()}
		}
		n.eps = append(n.eps, ep)
	}
	for _, ep := range n.eps {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			ep.run(ctx)
		}()
	}
	return n, nil
}

// Close stops the senders; events still queued are counted as dropped.
func (n *Notifier) Close() {
	if n == nil {
		return
	}
	n.cancel()
	n.wg.Wait()
}

// Wants reports whether any endpoint takes action on repo of site host,
// so callers skip building events nobody wants.
func (n *Notifier) Wants(host, action, repo string) bool {
	if n == nil {
		return false
	}
	for _, ep := range n.eps {
		if ep.cfg.wants(host, action, repo) {
			return true
		}
	}
	return false
}

// Emit queues ev for every endpoint that wants it; it never blocks.
func (n *Notifier) Emit(host string, ev Event) {
	if n == nil {
		return
	}
	for _, ep := range n.eps {
		if !ep.cfg.wants(host, ev.Action, ev.Target.Repository) {
			continue
		}
		select {
		case ep.queue <- ev:
			ep.gauge()
		default:
			ep.dropped(1, "queue full")
		}
	}
}

func (ep *endpoint) gauge() {
	if ep.m != nil {
		ep.m.queued.WithLabelValues(ep.label).Set(float64(len(ep.queue)))
	}
}

func (ep *endpoint) count(result string, k int) {
	if ep.m != nil && k > 0 {
		ep.m.events.WithLabelValues(ep.label, result).Add(float64(k))
	}
}

// dropped counts lost events and logs the first and then every 100th,
// so an endpoint down for long does not flood the log.
func (ep *endpoint) dropped(k int, why string) {
	if k == 0 {
		return
	}
	ep.count("dropped", k)
	ep.dropMu.Lock()
	before := ep.drops
	ep.drops += int64(k)
	total := ep.drops
	ep.dropMu.Unlock()
	if before == 0 || before/100 != total/100 {
		ep.log.Warn().Int64("dropped_total", total).Str("reason", why).Msg("webhook: events dropped")
	}
}

func (ep *endpoint) run(ctx context.Context) {
	for {
		var batch []Event
		select {
		case <-ctx.Done():
			ep.dropped(len(ep.queue), "shutdown")
			return
		case ev := <-ep.queue:
			batch = append(batch, ev)
		}
	more:
		for len(batch) < maxBatch {
			select {
			case ev := <-ep.queue:
				batch = append(batch, ev)
			default:
				break more
			}
		}
		ep.gauge()
		if !ep.deliver(ctx, batch) {
			ep.dropped(len(batch)+len(ep.queue), "shutdown")
			return
		}
	}
}

// deliver POSTs one envelope until it is accepted (true) or ctx ends.
func (ep *endpoint) deliver(ctx context.Context, batch []Event) bool {
	body, err := json.Marshal(Envelope{Events: batch})
	if err != nil { // cannot happen with these types
		ep.log.Error().Err(err).Msg("webhook: encoding events")
		return true
	}
	wait := firstBackoff
	for attempt := 1; ; attempt++ {
		err := ep.post(ctx, body)
		if err == nil {
			ep.count("sent", len(batch))
			if attempt > 1 {
				ep.log.Info().Int("attempts", attempt).Int("events", len(batch)).Msg("webhook: delivered after retries")
			}
			return true
		}
		ep.count("retried", 1)
		if attempt == 1 || attempt%10 == 0 {
			ep.log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("webhook: delivery failed; retrying")
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		wait = min(2*wait, maxBackoff)
	}
}

func (ep *endpoint) post(ctx context.Context, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, ep.cfg.Timeout.Std())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", MediaType)
	req.Header.Set("User-Agent", "wharf-webhook")
	if ep.secret != nil {
		req.Header.Set(SignatureHeader, Sign(ep.secret, body))
	}
	res, err := ep.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return fmt.Errorf("endpoint answered %s", res.Status)
	}
	return nil
}

// Sign returns the X-Wharf-Signature value for body: "sha256=" and the
// hex HMAC-SHA256 of body under secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify checks a signature header value in constant time (for
// receivers written in Go, and tests).
func Verify(secret, body []byte, header string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(header))
}

// redact drops user info and query from a URL for logs and metric labels.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "invalid-url"
	}
	u.User = nil
	u.RawQuery = ""
	u.Fragment = ""
	return u.String()
}
