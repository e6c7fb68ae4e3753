package tlsout

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"testing"
)

// discardConn is a net.Conn whose writes go nowhere.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }

// under follows the record framing of what crypto/tls writes however the
// bytes are split across writes, and keeps exactly the encrypted records.
func TestUnderScanSplits(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 200; round++ {
		var stream []byte
		var want [][]byte
		for i := 0; i < 1+rng.IntN(8); i++ {
			typ := []byte{20, 21, 22, 23}[rng.IntN(4)]
			n := rng.IntN(3000)
			if rng.IntN(10) == 0 {
				n = 0
			}
			rec := make([]byte, recordHeader+n)
			rec[0], rec[1], rec[2] = typ, 3, 3
			binary.BigEndian.PutUint16(rec[3:], uint16(n))
			for j := recordHeader; j < len(rec); j++ {
				rec[j] = byte(rng.IntN(256))
			}
			stream = append(stream, rec...)
			if typ == typeAppData {
				want = append(want, rec)
			}
		}
		u := &under{Conn: discardConn{}}
		for rest := stream; len(rest) > 0; {
			k := 1 + rng.IntN(len(rest))
			if _, err := u.Write(rest[:k]); err != nil {
				t.Fatal(err)
			}
			rest = rest[k:]
		}
		if u.nhdr != 0 || u.need != 0 || u.overflow {
			t.Fatalf("round %d: scanner not at a record boundary after whole records (nhdr %d need %d overflow %v)", round, u.nhdr, u.need, u.overflow)
		}
		if len(u.records) != len(want) {
			t.Fatalf("round %d: kept %d records, want %d", round, len(u.records), len(want))
		}
		for i := range want {
			if !bytes.Equal(u.records[i], want[i]) {
				t.Fatalf("round %d: record %d differs", round, i)
			}
		}
	}
}

// More than maxCapture bytes of encrypted records: under gives up keeping
// them, and take refuses, so crypto/tls keeps the connection.
func TestUnderOverflowRefusesTakeOver(t *testing.T) {
	u := &under{Conn: discardConn{}}
	rec := make([]byte, recordHeader+maxPlaintext)
	rec[0], rec[1], rec[2] = typeAppData, 3, 3
	binary.BigEndian.PutUint16(rec[3:], maxPlaintext)
	for i := 0; i <= maxCapture/maxPlaintext; i++ {
		_, _ = u.Write(rec)
	}
	if !u.overflow {
		t.Fatal("no overflow after more than maxCapture bytes")
	}
	if _, _, err := u.take(suites[0x1301]); err == nil {
		t.Fatal("take succeeded after an overflow")
	}
	if _, err := u.Write([]byte{1}); err != nil {
		t.Fatalf("crypto/tls can no longer write after a refused take-over: %v", err)
	}
}

// After a take-over, writes from crypto/tls are refused.
func TestUnderRefusesWritesAfterTakeOver(t *testing.T) {
	u := &under{Conn: discardConn{}, state: underTaken}
	if _, err := u.Write([]byte("alert")); err != errTaken {
		t.Fatalf("write after take-over: %v, want errTaken", err)
	}
}
