// Package servers starts the programs under test (wharf, docker-registry,
// registry:3, nginx) in their own temporary folders, waits until they
// answer, names the processes to measure, and stops them.
package servers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wharf-dev/wharf/bench/internal/procstat"
)

// Proc is one started program (with its process group).
type Proc struct {
	Name string
	Log  string // path of the combined stdout/stderr log
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start runs argv in dir with output to dir/<name>.log, in its own process
// group so that Stop reaches every process it forks.
func Start(name, dir string, argv ...string) (*Proc, error) {
	logPath := filepath.Join(dir, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout = lf
	cmd.Stderr = lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, argv[0], err)
	}
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

// PID returns the pid of the started process.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Group returns the process and its direct children (nginx's workers).
func (p *Proc) Group() procstat.Group {
	g := procstat.Group{p.PID()}
	if kids, err := procstat.Children(p.PID()); err == nil {
		g = append(g, kids...)
	}
	return g
}

// LogTail returns the last n lines of the process's log, for error reports.
func (p *Proc) LogTail(n int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Stop sends SIGTERM to the process group, then SIGKILL after 5 s.
func (p *Proc) Stop() {
	if p.Exited() {
		return
	}
	_ = syscall.Kill(-p.PID(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
		<-p.done
	}
	// Reap anything left in the group (workers of a killed master).
	_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
}

// WaitHTTP polls url until it answers with any HTTP status, the process
// exits, or the timeout passes.
func (p *Proc) WaitHTTP(ctx context.Context, hc *http.Client, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if p.Exited() {
			return fmt.Errorf("%s exited (%v): %s", p.Name, p.err, oneLine(p.LogTail(3)))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", p.Name, err)
		}
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		last = err
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer %s within %s: %v; log: %s", p.Name, url, timeout, last, oneLine(p.LogTail(3)))
}

// oneLine joins log lines for an error message; JSON log lines (zerolog)
// are shortened to their message and error.
func oneLine(s string) string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		var j struct {
			Message string `json:"message"`
			Error   string `json:"error"`
		}
		if strings.HasPrefix(l, "{") && json.Unmarshal([]byte(l), &j) == nil && (j.Message != "" || j.Error != "") {
			l = strings.TrimSuffix(j.Message+": "+j.Error, ": ")
		}
		out = append(out, l)
	}
	return strings.Join(out, " | ")
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreeAddr returns "127.0.0.1:<free port>".
func FreeAddr() (string, error) {
	p, err := FreePort()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(p), nil
}

// ErrUnavailable marks a server that could not be started because the
// program lacks a feature (wharf while it is being built).
var ErrUnavailable = errors.New("not available yet")
