// Package transport is everything a client connection goes through
// between the kernel and wharf's handlers, in one place. In the order a
// request meets it:
//
//  1. Accept (Listener): wait for a free slot when max_conns are open;
//     the slot is given back when the connection closes.
//  2. Conn, one wrapper around the *net.TCPConn:
//     - every Write pushes the write deadline to now+progress_timeout,
//     so a client that stops reading is cut and a slow one is not;
//     - small reads are served from one large read of the socket
//     (read-ahead), so a streamed push costs one system call per
//     256 KiB instead of two per chunk;
//     - below crypto/tls only: full-size TLS records are gathered and
//     written together (gather.go), crypto/tls writing each 16 KiB
//     record with a system call of its own;
//     - plain HTTP only: ReadFrom keeps the kernel's sendfile path.
//  3. crypto/tls as it is (TLS listeners): tls.NewListener, so every TLS
//     connection net/http sees is a *tls.Conn (KeyUpdate, alerts, r.TLS).
//  4. net/http (header timeouts, keep-alive, HTTP/2).
//  5. Handler, around wharf's handler:
//     - lingering close (linger.go): an answer given before the request
//     body was read goes out first, then a bounded rest of the body is
//     read and dropped, so the client sees the answer, not a reset;
//     - progress (progress.go): request bodies get a read deadline pushed
//     forward on every read, HTTP/2 answers a write deadline pushed
//     forward on every write; bodies are copied on in large buffers.
//
// Every buffer on that path (read-ahead, gathered records, body and
// answer copies, draining) comes from one pool of BufferSize buffers.
package transport

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"
)

// Config is what the gateway's [listen] table sets for the transport.
type Config struct {
	// ProgressTimeout cuts a transfer that moves no byte for this long;
	// 0 = never.
	ProgressTimeout time.Duration
	// MaxConns bounds the open connections of one listener; 0 = no bound.
	MaxConns int
}

// Listener wraps ln (a TCP listener) as described in the package comment:
// slots, Conn, and, when tlsConfig is not nil, crypto/tls.
func Listener(ln net.Listener, cfg Config, tlsConfig *tls.Config) net.Listener {
	l := &listener{Listener: ln, timeout: cfg.ProgressTimeout, gather: tlsConfig != nil}
	if cfg.MaxConns > 0 {
		l.slots = make(chan struct{}, cfg.MaxConns)
	}
	if tlsConfig == nil {
		return l
	}
	return tls.NewListener(l, tlsConfig)
}

// Handler wraps h in the HTTP-level steps: lingering close, then progress
// deadlines. It must be the server's outermost handler.
func Handler(cfg Config, h http.Handler) http.Handler {
	return withLinger(withProgress(cfg.ProgressTimeout, h))
}

// BufferSize is the size of every pooled buffer.
const BufferSize = 256 << 10

var buffers = sync.Pool{New: func() any { b := make([]byte, BufferSize); return &b }}

// GetBuffer returns a BufferSize buffer from the one pool; give it back
// with PutBuffer.
func GetBuffer() *[]byte { return buffers.Get().(*[]byte) }

// PutBuffer returns b to the pool (at its full length).
func PutBuffer(b *[]byte) {
	if cap(*b) < BufferSize {
		return
	}
	*b = (*b)[:BufferSize]
	buffers.Put(b)
}

type listener struct {
	net.Listener
	timeout time.Duration
	gather  bool
	slots   chan struct{} // one token per open connection; nil = no limit
}

// Accept waits for a free slot, as netutil.LimitListener does, but keeps
// the connection's ReadFrom (sendfile) visible.
func (l *listener) Accept() (net.Conn, error) {
	if l.slots != nil {
		l.slots <- struct{}{}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		if l.slots != nil {
			<-l.slots
		}
		return nil, err
	}
	wc := newConn(c, l.timeout, l.gather)
	if l.slots != nil {
		wc.release = func() { <-l.slots }
	}
	return wc, nil
}
