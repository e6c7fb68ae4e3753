package tlsout

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"testing"
)

func TestSecretLog(t *testing.T) {
	for _, tc := range []struct {
		name          string
		lines         []string
		wantHS, wantT []byte
		wantErr       bool
	}{
		{"both, one write each", []string{
			"CLIENT_HANDSHAKE_TRAFFIC_SECRET 00aa 0102\n",
			"SERVER_HANDSHAKE_TRAFFIC_SECRET 00aa 0a0b\n",
			"CLIENT_TRAFFIC_SECRET_0 00aa 0303\n",
			"SERVER_TRAFFIC_SECRET_0 00aa ff00ff\n",
		}, []byte{0x0a, 0x0b}, []byte{0xff, 0x00, 0xff}, false},
		{"several lines in one write", []string{
			"SERVER_HANDSHAKE_TRAFFIC_SECRET 00 01\nSERVER_TRAFFIC_SECRET_0 00 02\n",
		}, []byte{1}, []byte{2}, false},
		{"TLS 1.2 line only", []string{"CLIENT_RANDOM 00aa 0102\n"}, nil, nil, false},
		{"bad hex", []string{"SERVER_TRAFFIC_SECRET_0 00 zz\n"}, nil, nil, true},
		{"short line ignored", []string{"SERVER_TRAFFIC_SECRET_0 00\n"}, nil, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l secretLog
			var err error
			for _, line := range tc.lines {
				if _, e := l.Write([]byte(line)); e != nil {
					err = e
				}
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error %v", err, tc.wantErr)
			}
			hs, tr := l.secrets()
			if !bytes.Equal(hs, tc.wantHS) || !bytes.Equal(tr, tc.wantT) {
				t.Fatalf("secrets %x %x, want %x %x", hs, tr, tc.wantHS, tc.wantT)
			}
		})
	}
}

// The key schedule against RFC 8448 (example handshake traces for TLS
// 1.3), section 3: the server application traffic secret and the write key
// and IV derived from it.
func TestTrafficKeysRFC8448(t *testing.T) {
	secret := unhex(t, "a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643")
	wantKey := unhex(t, "9f02283b6c9c07efc26bb9f2ac92e356")
	wantIV := unhex(t, "cf782b88dd83549aadf1e984")
	s := suites[tls.TLS_AES_128_GCM_SHA256]
	key, err := s.expandLabel(secret, "key", s.keyLen)
	if err != nil {
		t.Fatal(err)
	}
	iv, err := s.expandLabel(secret, "iv", 12)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(key, wantKey) || !bytes.Equal(iv, wantIV) {
		t.Fatalf("key %x iv %x, want %x %x", key, iv, wantKey, wantIV)
	}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
