package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Nginx is a running Debian nginx balancing plain HTTP round-robin over
// several backends, as a load balancer in front of wharf instances.
type Nginx struct {
	*Process
	// Addr is the loopback address clients use.
	Addr string
	// AccessLog lists every request with the backend that answered it
	// ("$request $status $upstream_addr").
	AccessLog string
}

// StartNginx starts nginx on a free loopback port, round-robin over
// backends (host:port), with request and response bodies streamed (no
// buffering, no size limit). Idempotent requests to a backend that
// refuses connections go to the next one (nginx's default); POST, PATCH
// and PUT are not retried by nginx, the client has to. A missing nginx
// ends the test through MissingPeer.
func StartNginx(t testing.TB, backends ...string) *Nginx {
	t.Helper()
	bin := Require(t, "nginx")
	dir := t.TempDir()
	n := &Nginx{Addr: FreeAddr(t), AccessLog: filepath.Join(dir, "access.log")}
	var ups strings.Builder
	for _, b := range backends {
		fmt.Fprintf(&ups, "    server %s max_fails=1 fail_timeout=2s;\n", b)
	}
	for _, d := range []string{"body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 512; }
http {
  log_format lb '$request $status $upstream_addr';
  access_log %[2]s lb;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  upstream wharf {
%[3]s  }
  server {
    listen %[4]s;
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_http_version 1.1;
    proxy_read_timeout 120s;
    location / {
      proxy_pass http://wharf;
      proxy_set_header Host $http_host;
      proxy_set_header Connection "";
    }
  }
}
`, dir, n.AccessLog, ups.String(), n.Addr)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-p", dir, "-c", path}
	if os.Geteuid() == 0 {
		// The master runs as root; let the worker too, so it can use the
		// temp folders created above.
		args = append(args, "-g", "user root;")
	}
	n.Process = &Process{
		Name:       "nginx",
		Path:       bin,
		Args:       args,
		Dir:        dir,
		ReadyAddrs: []string{n.Addr},
		LogPath:    filepath.Join(dir, "nginx.log"),
	}
	StartProcess(t, n.Process)
	return n
}

// Backends returns how many requests each backend answered, from the
// access log.
func (n *Nginx) Backends(t testing.TB) map[string]int {
	t.Helper()
	b, err := os.ReadFile(n.AccessLog)
	if err != nil {
		t.Fatalf("read nginx access log: %v", err)
	}
	m := map[string]int{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 {
			m[f[len(f)-1]]++
		}
	}
	return m
}
