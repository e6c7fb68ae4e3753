// Package tlsout serves TLS with the sending half of HTTP/1.1 connections
// sealed by wharf itself. crypto/tls does every handshake and keeps the
// receiving half; for TLS 1.3 connections that did not negotiate HTTP/2,
// records leave 16 at a time in one write, and files are read straight
// into the records' places (what the kernel's TLS offload would do, on
// machines without it). Every other connection stays a plain *tls.Conn.
package tlsout

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"
)

// Config configures a Listener.
type Config struct {
	// TLS is the server configuration (certificates, ALPN, versions).
	TLS *tls.Config
	// HandshakeTimeout bounds each handshake (default 10 s), so that a
	// client that never finishes one is cut.
	HandshakeTimeout time.Duration
	// Log receives handshake failures (scanners, unknown names); may be nil.
	Log func(error)
	// Plain turns the own sending half off: every connection is a *tls.Conn.
	Plain bool
}

// Listener accepts TLS connections. Handshakes run off the accept loop,
// one goroutine each, so a slow client holds up nobody; Accept returns a
// *Conn or, for HTTP/2, TLS 1.2 and anything unexpected, a *tls.Conn whose
// handshake is complete.
type Listener struct {
	inner   net.Listener
	cfg     Config
	tlsCfg  *tls.Config // cfg.TLS with the per-connection key log hook
	userGFC func(*tls.ClientHelloInfo) (*tls.Config, error)

	conns     chan net.Conn
	errs      chan error
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu      sync.Mutex
	pending map[net.Conn]struct{} // connections in their handshake
}

// NewListener wraps inner; closing the Listener closes inner.
func NewListener(inner net.Listener, cfg Config) *Listener {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	l := &Listener{
		inner:   inner,
		cfg:     cfg,
		userGFC: cfg.TLS.GetConfigForClient,
		conns:   make(chan net.Conn),
		errs:    make(chan error, 1),
		done:    make(chan struct{}),
		pending: make(map[net.Conn]struct{}),
	}
	l.tlsCfg = cfg.TLS.Clone()
	l.tlsCfg.GetConfigForClient = l.configForClient
	go l.acceptLoop()
	return l
}

// configForClient gives connections that may end up with the own sending
// half a configuration of their own whose key log feeds that connection.
func (l *Listener) configForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	var c *tls.Config
	if l.userGFC != nil {
		var err error
		if c, err = l.userGFC(hello); err != nil {
			return nil, err
		}
	}
	u, ok := hello.Conn.(*under)
	if !ok {
		return c, nil
	}
	if l.cfg.Plain || !slices.Contains(hello.SupportedVersions, tls.VersionTLS13) ||
		slices.Contains(hello.SupportedProtos, "h2") {
		u.pass() // stays a *tls.Conn: nothing to keep
		return c, nil
	}
	if c == nil {
		c = l.cfg.TLS
	}
	c = c.Clone()
	c.GetConfigForClient = nil
	c.KeyLogWriter = &u.log
	return c, nil
}

func (l *Listener) acceptLoop() {
	for {
		raw, err := l.inner.Accept()
		if err != nil {
			select {
			case l.errs <- err:
			case <-l.done:
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Like net/http: back off on other errors (too many open files).
			select {
			case <-time.After(50 * time.Millisecond):
			case <-l.done:
				return
			}
			continue
		}
		l.mu.Lock()
		select {
		case <-l.done:
			l.mu.Unlock()
			_ = raw.Close()
			return
		default:
		}
		l.pending[raw] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.handshake(raw)
	}
}

func (l *Listener) handshake(raw net.Conn) {
	defer l.wg.Done()
	defer func() {
		l.mu.Lock()
		delete(l.pending, raw)
		l.mu.Unlock()
	}()
	u := &under{Conn: raw}
	tc := tls.Server(u, l.tlsCfg)
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.HandshakeTimeout)
	_ = raw.SetDeadline(time.Now().Add(l.cfg.HandshakeTimeout))
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		l.refuse(u, err)
		return
	}
	_ = raw.SetDeadline(time.Time{})
	var c net.Conn = tc
	if fast, err := l.takeOver(tc, u); err == nil {
		c = fast
	} else {
		u.pass()
	}
	select {
	case l.conns <- c:
	case <-l.done:
		_ = c.Close()
	}
}

// takeOver returns the connection with the own sending half, or an error
// saying why it stays with crypto/tls.
func (l *Listener) takeOver(tc *tls.Conn, u *under) (*Conn, error) {
	st := tc.ConnectionState()
	if l.cfg.Plain || st.Version != tls.VersionTLS13 || (st.NegotiatedProtocol != "" && st.NegotiatedProtocol != "http/1.1") {
		return nil, errors.New("not an HTTP/1.1 connection over TLS 1.3")
	}
	s, ok := suites[st.CipherSuite]
	if !ok {
		return nil, fmt.Errorf("cipher suite %s", tls.CipherSuiteName(st.CipherSuite))
	}
	seq, secret, err := u.take(s)
	if err != nil {
		return nil, err
	}
	k, err := s.keys(secret)
	if err != nil {
		return nil, err
	}
	c := &Conn{tc: tc, u: u, state: st, s: s, secret: secret, k: k, seq: seq, firstSeq: seq, out: u.Conn.Write}
	if wt, ok := u.Conn.(interface{ WriteThrough([]byte) (int, error) }); ok {
		c.out = wt.WriteThrough
	}
	return c, nil
}

// refuse ends a failed handshake. Plain HTTP sent to the TLS port gets
// the same short answer net/http gives it.
func (l *Listener) refuse(u *under, err error) {
	var re tls.RecordHeaderError
	if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
		_ = u.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = u.Conn.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"))
	}
	_ = u.Conn.Close()
	if l.cfg.Log != nil {
		l.cfg.Log(fmt.Errorf("TLS handshake from %s: %w", u.Conn.RemoteAddr(), err))
	}
}

func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "PATCH", "DELET", "CONNE", "TRACE":
		return true
	}
	return false
}

// Accept waits for the next connection whose handshake is complete.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting, closes inner and every connection still in its
// handshake, and waits for their goroutines.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.mu.Lock()
		close(l.done)
		for c := range l.pending {
			_ = c.Close()
		}
		l.mu.Unlock()
		err = l.inner.Close()
	})
	l.wg.Wait()
	return err
}

// Addr is the listening address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }
