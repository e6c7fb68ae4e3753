package harness

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bounds for waiting on peers. They guard against hangs; they are not
// assertions about speed.
const (
	readyTimeout = 60 * time.Second
	stopTimeout  = 30 * time.Second
)

// Process is a long-running server started by a test: wharf, docker-registry,
// later nginx or pebble. It can be stopped, killed and started again with the
// same command line, so a restart keeps ports and data. All output of every
// run goes to one log file, printed with t.Log when the test fails.
type Process struct {
	// Name labels log lines ("wharf", "docker-registry").
	Name string
	// Path and Args are the command line.
	Path string
	Args []string
	// Dir is the working directory; empty means the current one.
	Dir string
	// Env is added to the test's environment.
	Env []string
	// ReadyAddrs are TCP addresses that must accept connections before Start
	// returns.
	ReadyAddrs []string
	// Ready, if set, must also return nil before Start returns (for servers
	// that listen on a unix socket).
	Ready func() error
	// LogPath is the file that collects stdout and stderr.
	LogPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	runs    int
}

// StartProcess starts p, waits until it is ready, and arranges for it to be
// stopped (and its log shown on failure) when t ends.
func StartProcess(t testing.TB, p *Process) *Process {
	t.Helper()
	if p.LogPath == "" {
		p.LogPath = filepath.Join(t.TempDir(), p.Name+".log")
	}
	t.Cleanup(func() {
		if pid := p.PID(); pid != 0 {
			if exited, _ := p.Exited(); !exited {
				if n, err := procStatusBytes(pid, "VmHWM"); err == nil {
					t.Logf("%s peak RSS %.1f MiB", p.Name, float64(n)/(1<<20))
				}
			}
		}
		if running, err := p.stop(t, syscall.SIGTERM); running && err != nil {
			t.Errorf("%s did not exit cleanly on SIGTERM at the end of the test: %v", p.Name, err)
		}
		if strings.Contains(p.Log(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race (see its log)", p.Name)
		}
		if t.Failed() || os.Getenv("WHARF_E2E_LOGS") != "" {
			t.Logf("----- %s log (%s), last 64 KiB -----\n%s", p.Name, p.LogPath, p.LogTail(64<<10))
		}
	})
	p.Start(t)
	return p
}

// Start runs the command (again) and waits until every ReadyAddr accepts
// connections. It fails the test if the process exits first.
func (p *Process) Start(t testing.TB) {
	t.Helper()
	if err := p.start(); err != nil {
		t.Fatalf("start %s: %v\n%s", p.Name, err, p.LogTail(16<<10))
	}
	deadline := time.Now().Add(readyTimeout)
	for _, addr := range p.ReadyAddrs {
		for !dialable(addr) {
			if exited, err := p.Exited(); exited {
				t.Fatalf("%s exited before listening on %s: %v\n%s", p.Name, addr, err, p.LogTail(16<<10))
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not listening on %s after %s\n%s", p.Name, addr, readyTimeout, p.LogTail(16<<10))
			}
			time.Sleep(25 * time.Millisecond)
		}
	}
	if p.Ready == nil {
		return
	}
	for {
		err := p.Ready()
		if err == nil {
			return
		}
		if exited, werr := p.Exited(); exited {
			t.Fatalf("%s exited before it was ready (%v): %v\n%s", p.Name, err, werr, p.LogTail(16<<10))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %s: %v\n%s", p.Name, readyTimeout, err, p.LogTail(16<<10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *Process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("already running as pid %d", p.cmd.Process.Pid)
		}
	}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	p.runs++
	fmt.Fprintf(logf, "===== %s run %d: %s %s =====\n", p.Name, p.runs, p.Path, strings.Join(p.Args, " "))
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Dir = p.Dir
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Own process group, so signals from the terminal do not hit it twice,
	// and die with the test binary if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("exec %s: %w", p.Path, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.waitErr = cmd, done, nil
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// PID returns the process id of the current run, or 0 if never started.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Exited reports whether the current run has ended, and how.
func (p *Process) Exited() (bool, error) {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return true, errors.New("never started")
	}
	select {
	case <-done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.waitErr
	default:
		return false, nil
	}
}

// Signal sends sig to the running process.
func (p *Process) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil {
		t.Fatalf("signal %s: %s was never started", sig, p.Name)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s to %s: %v", sig, p.Name, err)
	}
}

// Stop sends SIGTERM and waits for the process to exit (SIGKILL after
// 30 s). It returns the exit error of the run (nil for exit status 0).
func (p *Process) Stop(t testing.TB) error {
	t.Helper()
	_, err := p.stop(t, syscall.SIGTERM)
	return err
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Process) Kill(t testing.TB) {
	t.Helper()
	p.stop(t, syscall.SIGKILL)
}

// Restart stops the process gracefully and starts it again.
func (p *Process) Restart(t testing.TB) {
	t.Helper()
	if err := p.Stop(t); err != nil {
		t.Errorf("%s did not exit cleanly on SIGTERM: %v", p.Name, err)
	}
	p.Start(t)
}

// stop signals the current run and waits for it to end. running says
// whether it was still running; err is its exit error (nil after SIGKILL).
func (p *Process) stop(t testing.TB, sig syscall.Signal) (running bool, err error) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return false, nil
	}
	select {
	case <-done:
	default:
		running = true
		start := time.Now()
		defer func() {
			t.Logf("%s exited %s after %s (%v)", p.Name, time.Since(start).Round(time.Millisecond), sig, err)
		}()
		_ = cmd.Process.Signal(sig)
		select {
		case <-done:
		case <-time.After(stopTimeout):
			t.Errorf("%s ignored %s for %s; killing it", p.Name, sig, stopTimeout)
			_ = cmd.Process.Kill()
			<-done
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if sig == syscall.SIGKILL {
		return running, nil
	}
	return running, p.waitErr
}

// PeakRSS returns the peak resident set size (VmHWM) of the running process
// in bytes.
func (p *Process) PeakRSS(t testing.TB) int64 {
	t.Helper()
	pid := p.PID()
	if pid == 0 {
		t.Fatalf("PeakRSS: %s not started", p.Name)
	}
	n, err := procStatusBytes(pid, "VmHWM")
	if err != nil {
		t.Fatalf("PeakRSS of %s: %v", p.Name, err)
	}
	return n
}

// CPUTime returns the user plus system CPU time the running process has
// used so far (from /proc/PID/stat), for CPU-per-GiB figures.
func (p *Process) CPUTime(t testing.TB) time.Duration {
	t.Helper()
	pid := p.PID()
	if pid == 0 {
		t.Fatalf("CPUTime: %s not started", p.Name)
	}
	d, err := procCPUTime(pid)
	if err != nil {
		t.Fatalf("CPUTime of %s: %v", p.Name, err)
	}
	return d
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times; 100 on every
// Linux architecture Go supports.
const clockTicks = 100

func procCPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read stat: %w", err)
	}
	// The command name (field 2) may hold spaces; fields after ")" are fixed.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse cpu time %q: %w", s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// procStatusBytes reads a "kB" field of /proc/PID/status.
func procStatusBytes(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read status: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		num := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB"))
		kb, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse %s %q: %w", field, rest, err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("scan status: %w", err)
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// Log returns everything the process has written so far, over all runs.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// LogTail returns at most the last n bytes of the log.
func (p *Process) LogTail(n int64) string {
	f, err := os.Open(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if st.Size() > n {
		if _, err := f.Seek(st.Size()-n, io.SeekStart); err != nil {
			return fmt.Sprintf("(seek log: %v)", err)
		}
	}
	b, _ := io.ReadAll(f)
	if st.Size() > n {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}
