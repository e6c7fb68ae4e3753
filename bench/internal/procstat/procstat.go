// Package procstat reads a process's CPU time and peak resident memory from
// /proc, the two server-side figures every benchmark row reports.
package procstat

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat. It is
// 100 on every Linux architecture Go supports in practice.
const clockTicks = 100

// CPUSeconds returns utime+stime of pid in seconds.
func CPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	return parseStatCPU(b)
}

// parseStatCPU extracts utime (field 14) and stime (field 15) from the text
// of /proc/<pid>/stat. The command name (field 2) may contain spaces and
// parentheses, so fields are counted after the last ')'.
func parseStatCPU(b []byte) (float64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse stat: no ')' in %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	// After ')' field 3 (state) is f[0], so field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("parse stat: only %d fields", len(f))
	}
	ut, err := strconv.ParseUint(f[14-3], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse utime: %w", err)
	}
	st, err := strconv.ParseUint(f[15-3], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse stime: %w", err)
	}
	return float64(ut+st) / clockTicks, nil
}

// PeakRSS returns VmHWM of pid in bytes: the peak resident set size since
// the process started or since the last ResetPeak.
func PeakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read status of %d: %w", pid, err)
	}
	return parseStatusKB(b, "VmHWM:")
}

// parseStatusKB returns the value of a "Key:   123 kB" line of
// /proc/<pid>/status in bytes.
func parseStatusKB(b []byte, key string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, key) {
			continue
		}
		f := strings.Fields(line[len(key):])
		if len(f) < 1 {
			return 0, fmt.Errorf("parse %s: empty value", key)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse %s: %w", key, err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("parse status: no %s line", key)
}

// ResetPeak resets VmHWM of pid to its current RSS (clear_refs value 5), so
// that a later PeakRSS reports the peak of one phase only.
func ResetPeak(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset peak rss of %d: %w", pid, err)
	}
	return nil
}

// Children returns the pids of the direct children of pid, read from
// /proc/<pid>/task/*/children (nginx's workers are children of its master).
func Children(pid int) ([]int, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, fmt.Errorf("list tasks of %d: %w", pid, err)
	}
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		if err != nil {
			continue // task ended meanwhile
		}
		for _, f := range strings.Fields(string(b)) {
			c, err := strconv.Atoi(f)
			if err != nil {
				return nil, fmt.Errorf("parse child pid %q: %w", f, err)
			}
			out = append(out, c)
		}
	}
	return out, nil
}

// Group is a set of processes measured together (a server and its workers,
// or a whole stack such as nginx in front of docker-registry).
type Group []int

// CPUSeconds sums utime+stime over the group.
func (g Group) CPUSeconds() (float64, error) {
	var sum float64
	for _, p := range g {
		s, err := CPUSeconds(p)
		if err != nil {
			return 0, err
		}
		sum += s
	}
	return sum, nil
}

// PeakRSS sums VmHWM over the group. Peaks of different processes may have
// happened at different moments, so this is an upper bound of the group's
// simultaneous peak, which is how stacks are usually compared.
func (g Group) PeakRSS() (int64, error) {
	var sum int64
	for _, p := range g {
		s, err := PeakRSS(p)
		if err != nil {
			return 0, err
		}
		sum += s
	}
	return sum, nil
}

// ResetPeak resets VmHWM of every process in the group.
func (g Group) ResetPeak() error {
	for _, p := range g {
		if err := ResetPeak(p); err != nil {
			return err
		}
	}
	return nil
}

// Machine is a reading of the whole machine's CPU time from /proc/stat:
// busy and total jiffies summed over every CPU.
type Machine struct{ Busy, Total uint64 }

// ReadMachine reads the aggregate "cpu" line of /proc/stat.
func ReadMachine() (Machine, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return Machine{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	return parseMachine(b)
}

// parseMachine reads the first line of /proc/stat ("cpu  user nice system
// idle iowait irq softirq steal guest guest_nice"). Idle and iowait are
// idle; guest time is already inside user, so it is not added again.
func parseMachine(b []byte) (Machine, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return Machine{}, fmt.Errorf("parse /proc/stat: unexpected first line %q", line)
	}
	var m Machine
	for i, s := range f[1:9] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return Machine{}, fmt.Errorf("parse /proc/stat field %d: %w", i+1, err)
		}
		m.Total += v
		if i != 3 && i != 4 { // idle, iowait
			m.Busy += v
		}
	}
	return m, nil
}

// CoresBusy is how many CPUs were busy on average between m and later,
// over seconds of wall time.
func (m Machine) CoresBusy(later Machine, seconds float64) float64 {
	if seconds <= 0 || later.Busy < m.Busy {
		return 0
	}
	return float64(later.Busy-m.Busy) / clockTicks / seconds
}
