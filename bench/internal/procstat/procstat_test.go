package procstat

import (
	"os"
	"testing"
)

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    float64
		wantErr bool
	}{
		{"plain", "123 (nginx) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0", 3.0, false},
		{"name with spaces and parens", "7 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 1 2 0 0", 0.03, false},
		{"no paren", "7 nginx R 1 2", 0, true},
		{"short", "7 (x) R 1 2", 0, true},
		{"bad number", "7 (x) R 1 2 3 4 5 6 7 8 9 10 zz 2 0 0", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseStatusKB(t *testing.T) {
	in := "Name:\tx\nVmPeak:\t  900 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1000 kB\n"
	got, err := parseStatusKB([]byte(in), "VmHWM:")
	if err != nil || got != 2048*1024 {
		t.Fatalf("got %d, %v; want %d", got, err, 2048*1024)
	}
	if _, err := parseStatusKB([]byte("Name: x\n"), "VmHWM:"); err == nil {
		t.Fatal("missing key: want error")
	}
}

// TestSelf reads this test process's own figures and checks they are sane.
func TestSelf(t *testing.T) {
	pid := os.Getpid()
	buf := make([]byte, 32<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	rss, err := PeakRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	if rss < int64(len(buf)) {
		t.Fatalf("peak rss %d below the %d bytes just touched", rss, len(buf))
	}
	if _, err := CPUSeconds(pid); err != nil {
		t.Fatal(err)
	}
	if err := ResetPeak(pid); err != nil {
		t.Fatal(err)
	}
	if _, err := Children(pid); err != nil {
		t.Fatal(err)
	}
	_ = buf[len(buf)-1]
}

func TestParseMachine(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		busy, tot uint64
		wantErr   bool
	}{
		{"kernel 6", "cpu  100 5 50 1000 20 3 2 7 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n", 167, 1187, false},
		{"no guest fields", "cpu  1 2 3 4 5 6 7 8\n", 27, 36, false},
		{"per-cpu line first", "cpu0 1 2 3 4 5 6 7 8 9 10\n", 0, 0, true},
		{"short", "cpu  1 2 3\n", 0, 0, true},
		{"not a number", "cpu  1 2 x 4 5 6 7 8 9 10\n", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parseMachine([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && (m.Busy != tt.busy || m.Total != tt.tot) {
				t.Fatalf("got busy %d total %d, want %d %d", m.Busy, m.Total, tt.busy, tt.tot)
			}
		})
	}
	a := Machine{Busy: 1000, Total: 5000}
	if got := a.CoresBusy(Machine{Busy: 1300, Total: 5400}, 2); got != 1.5 {
		t.Fatalf("CoresBusy = %v, want 1.5", got)
	}
	if m, err := ReadMachine(); err != nil || m.Total == 0 {
		t.Fatalf("ReadMachine = %+v, %v", m, err)
	}
}
