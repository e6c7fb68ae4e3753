package tlsout

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"
)

// suite is what sealing records needs to know of a TLS 1.3 cipher suite
// (RFC 8446, appendix B.4).
type suite struct {
	hash   func() hash.Hash
	keyLen int
	aead   func(key []byte) (cipher.AEAD, error)
}

var suites = map[uint16]suite{
	tls.TLS_AES_128_GCM_SHA256:       {sha256.New, 16, newGCM},
	tls.TLS_AES_256_GCM_SHA384:       {sha512.New384, 32, newGCM},
	tls.TLS_CHACHA20_POLY1305_SHA256: {sha256.New, 32, chacha20poly1305.New},
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes key: %w", err)
	}
	return cipher.NewGCM(b)
}

// expandLabel is HKDF-Expand-Label of RFC 8446, section 7.1.
func (s suite) expandLabel(secret []byte, label string, length int) ([]byte, error) {
	info := make([]byte, 0, 4+6+len(label))
	info = binary.BigEndian.AppendUint16(info, uint16(length))
	info = append(info, byte(6+len(label)))
	info = append(info, "tls13 "...)
	info = append(info, label...)
	info = append(info, 0) // empty context
	return hkdf.Expand(s.hash, secret, string(info), length)
}

// trafficKeys are the write key and nonce base derived from one traffic
// secret (RFC 8446, section 7.3).
type trafficKeys struct {
	aead cipher.AEAD
	iv   [12]byte
}

func (s suite) keys(secret []byte) (trafficKeys, error) {
	var k trafficKeys
	key, err := s.expandLabel(secret, "key", s.keyLen)
	if err != nil {
		return k, fmt.Errorf("derive key: %w", err)
	}
	iv, err := s.expandLabel(secret, "iv", len(k.iv))
	if err != nil {
		return k, fmt.Errorf("derive iv: %w", err)
	}
	copy(k.iv[:], iv)
	if k.aead, err = s.aead(key); err != nil {
		return k, err
	}
	if k.aead.NonceSize() != len(k.iv) {
		return k, errors.New("unexpected AEAD nonce size")
	}
	return k, nil
}

// nextSecret is the traffic secret after a KeyUpdate (RFC 8446, 7.2).
func (s suite) nextSecret(secret []byte) ([]byte, error) {
	return s.expandLabel(secret, "traffic upd", s.hash().Size())
}

// nonce writes the per-record nonce for seq into dst: the IV with the
// sequence number XORed into its last 8 bytes (RFC 8446, section 5.3).
func (k *trafficKeys) nonce(dst *[12]byte, seq uint64) {
	*dst = k.iv
	for i := 0; i < 8; i++ {
		dst[4+i] ^= byte(seq >> (56 - 8*i))
	}
}

// open reports whether rec (header and ciphertext) decrypts under k with
// sequence number seq. It does not change rec.
func (k *trafficKeys) open(rec []byte, seq uint64) bool {
	var n [12]byte
	k.nonce(&n, seq)
	_, err := k.aead.Open(nil, n[:], rec[recordHeader:], rec[:recordHeader])
	return err == nil
}

// secretLog receives crypto/tls's key log lines for one connection and
// keeps the server's two write secrets. The lines never leave the process.
type secretLog struct {
	mu        sync.Mutex
	handshake []byte // SERVER_HANDSHAKE_TRAFFIC_SECRET
	traffic   []byte // SERVER_TRAFFIC_SECRET_0
}

// Write takes one or more NSS key log lines ("LABEL random secret\n").
func (l *secretLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range bytes.Split(p, []byte("\n")) {
		f := bytes.Fields(line)
		if len(f) != 3 {
			continue
		}
		var dst *[]byte
		switch string(f[0]) {
		case "SERVER_HANDSHAKE_TRAFFIC_SECRET":
			dst = &l.handshake
		case "SERVER_TRAFFIC_SECRET_0":
			dst = &l.traffic
		default:
			continue
		}
		s := make([]byte, hex.DecodedLen(len(f[2])))
		if _, err := hex.Decode(s, f[2]); err != nil {
			return 0, fmt.Errorf("key log line %s: %w", f[0], err)
		}
		*dst = s
	}
	return len(p), nil
}

func (l *secretLog) secrets() (handshake, traffic []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.handshake, l.traffic
}
