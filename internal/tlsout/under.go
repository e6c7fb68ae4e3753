package tlsout

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
)

// TLS record framing (RFC 8446, section 5).
const (
	recordHeader  = 5
	maxPlaintext  = 16 << 10
	typeAlert     = 21
	typeHandshake = 22
	typeAppData   = 23
	// maxCapture bounds the encrypted handshake records kept to count the
	// sequence number; a server flight is a few KiB (the certificate chain).
	maxCapture = 64 << 10
)

// errTaken is what crypto/tls gets if it tries to write after Conn took
// over the sending half (a KeyUpdate answer, an alert): the connection
// then fails rather than sending records out of sequence.
var errTaken = errors.New("tlsout: the sending half belongs to tlsout.Conn")

// under is the net.Conn crypto/tls runs on. During the handshake it keeps
// a copy of every encrypted record the server writes, so that after the
// handshake each can be attributed to the handshake or the application key
// and the application key's next sequence number is known exactly, never
// guessed. Once Conn has taken over, writes from crypto/tls are refused.
type under struct {
	net.Conn
	log secretLog

	mu       sync.Mutex
	state    int // underScanning, underPassing or underTaken
	hdr      [recordHeader]byte
	nhdr     int    // header bytes seen of the current record
	need     int    // body bytes still to come of the current record
	body     []byte // copy of the current record (encrypted records only)
	records  [][]byte
	kept     int
	overflow bool
}

const (
	underScanning = iota
	underPassing
	underTaken
)

func (u *under) Write(p []byte) (int, error) {
	u.mu.Lock()
	switch u.state {
	case underTaken:
		u.mu.Unlock()
		return 0, errTaken
	case underScanning:
		u.scan(p)
	}
	u.mu.Unlock()
	return u.Conn.Write(p)
}

// scan follows the record framing of what crypto/tls writes, across
// writes, and keeps the encrypted records; u.mu is held.
func (u *under) scan(p []byte) {
	for len(p) > 0 && !u.overflow {
		if u.nhdr < recordHeader {
			n := copy(u.hdr[u.nhdr:], p)
			u.nhdr += n
			p = p[n:]
			if u.nhdr < recordHeader {
				return
			}
			u.need = int(binary.BigEndian.Uint16(u.hdr[3:]))
			u.body = nil
			if u.hdr[0] == typeAppData {
				if u.kept+recordHeader+u.need > maxCapture {
					u.overflow = true
					return
				}
				u.body = append(make([]byte, 0, recordHeader+u.need), u.hdr[:]...)
			}
		}
		n := min(u.need, len(p))
		if u.body != nil {
			u.body = append(u.body, p[:n]...)
		}
		u.need -= n
		p = p[n:]
		if u.need == 0 {
			if u.body != nil {
				u.records = append(u.records, u.body)
				u.kept += len(u.body)
				u.body = nil
			}
			u.nhdr = 0
		}
	}
}

// pass stops scanning: crypto/tls keeps the whole connection.
func (u *under) pass() {
	u.mu.Lock()
	u.state = underPassing
	u.records, u.body = nil, nil
	u.mu.Unlock()
}

// take attributes the kept records to the two server write keys and, if
// every one of them is accounted for, hands the sending half to the
// caller: it returns the application key's next sequence number. On any
// doubt it returns an error and crypto/tls keeps the connection.
func (u *under) take(s suite) (uint64, []byte, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	records := u.records
	u.records, u.body = nil, nil
	if u.state != underScanning {
		return 0, nil, errors.New("not scanning")
	}
	u.state = underPassing
	if u.overflow || u.nhdr != 0 {
		return 0, nil, errors.New("handshake records not followed to the end")
	}
	hsSecret, appSecret := u.log.secrets()
	if hsSecret == nil || appSecret == nil {
		return 0, nil, errors.New("no server traffic secrets logged")
	}
	hs, err := s.keys(hsSecret)
	if err != nil {
		return 0, nil, err
	}
	app, err := s.keys(appSecret)
	if err != nil {
		return 0, nil, err
	}
	var hsSeq, appSeq uint64
	for _, rec := range records {
		switch {
		case appSeq == 0 && hs.open(rec, hsSeq):
			hsSeq++
		case app.open(rec, appSeq):
			appSeq++
		default:
			return 0, nil, errors.New("a handshake record opens under neither server key")
		}
	}
	if hsSeq == 0 {
		return 0, nil, errors.New("no encrypted handshake record seen")
	}
	u.state = underTaken
	return appSeq, appSecret, nil
}
