//go:build chaos

package chaos

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Binaries are the programs the suite runs, built once per test run.
type Binaries struct {
	Orchestrator string // go build ./cmd/orchestrator
	NATSServer   string // go build github.com/nats-io/nats-server/v2
}

// BuildBinaries builds the orchestrator (when orchestrator is true) from the
// module that holds the current directory, and nats-server from the version
// go.mod requires, into dir. It runs `go build`, so the first run after a
// change takes a while.
func BuildBinaries(dir string, orchestrator bool) (Binaries, error) {
	root, err := moduleRoot()
	if err != nil {
		return Binaries{}, err
	}
	b := Binaries{
		Orchestrator: filepath.Join(dir, "orchestrator"),
		NATSServer:   filepath.Join(dir, "nats-server"),
	}
	jobs := []struct{ out, pkg string }{{b.NATSServer, "github.com/nats-io/nats-server/v2"}}
	if orchestrator {
		jobs = append(jobs, struct{ out, pkg string }{b.Orchestrator, "./cmd/orchestrator"})
	}
	for _, job := range jobs {
		cmd := exec.Command("go", "build", "-o", job.out, job.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return Binaries{}, fmt.Errorf("go build -o %s %s (in %s): %v\n%s", job.out, job.pkg, root, err, out)
		}
	}
	return b, nil
}

// moduleRoot is the directory of the go.mod of the current directory.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// tail returns the end of the file at path, for failure messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// proc is one child process whose output goes to a log file (appended to
// across restarts).
type proc struct {
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	stopped bool // SIGSTOP sent, no SIGCONT yet
}

func (p *proc) start(bin string, args, env []string, logPath string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done: // exited by itself: may start again
		default:
			return errors.New("already running")
		}
	}
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(lf, "---- %s start %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = lf, lf
	// A process group of its own: a ^C of the test does not reach it
	// first, and Cleanup kills it explicitly.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		lf.Close()
		close(done)
	}()
	p.cmd, p.done, p.stopped = cmd, done, false
	return nil
}

// running reports whether the process runs (stopped or not).
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.done
}

func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// kill sends SIGKILL (which also ends a stopped process) and waits for
// the exit.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
	p.mu.Lock()
	if p.cmd == cmd {
		p.cmd, p.stopped = nil, false
	}
	p.mu.Unlock()
}

func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return errors.New("not running")
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return err
	}
	switch sig {
	case syscall.SIGSTOP:
		p.stopped = true
	case syscall.SIGCONT:
		p.stopped = false
	}
	return nil
}

func (p *proc) isStopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopped
}

// NATSServer is a nats-server child process with JetStream on 127.0.0.1.
type NATSServer struct {
	proc
	bin, dir string
	port     int
}

// StartNATS starts nats-server with JetStream (storage in dir/jetstream) on a
// free loopback port and kills it in t.Cleanup.
func StartNATS(t testing.TB, bin, dir string) *NATSServer {
	t.Helper()
	s := &NATSServer{bin: bin, dir: dir}
	t.Cleanup(s.kill)
	var last error
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatalf("nats-server: %v", err)
		}
		s.port = port
		if last = s.startOnce(); last == nil {
			return s
		}
		s.kill()
	}
	t.Fatalf("nats-server: %v", last)
	return nil
}

func (s *NATSServer) logPath() string { return filepath.Join(s.dir, "nats-server.log") }

func (s *NATSServer) startOnce() error {
	args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(s.port), "-js", "-sd", filepath.Join(s.dir, "jetstream"),
		"-n", "chaos-nats"}
	if err := s.start(s.bin, args, []string{"PATH=" + os.Getenv("PATH")}, s.logPath()); err != nil {
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited():
			return fmt.Errorf("nats-server exited at start-up:\n%s", tail(s.logPath(), 2000))
		default:
		}
		nc, err := nats.Connect(s.URL(), nats.Timeout(500*time.Millisecond), nats.MaxReconnects(0))
		if err == nil {
			nc.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nats-server on %d not accepting connections after 15s:\n%s", s.port, tail(s.logPath(), 2000))
}

// URL is the server's client URL.
func (s *NATSServer) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(s.port) }

// Orch is one `orchestrator serve` process. Its HTTP port stays the same
// across restarts.
type Orch struct {
	proc
	Name    string
	bin     string
	env     []string
	port    int
	LogPath string
	starts  int
}

// Addr is the instance's HTTP address, host:port.
func (o *Orch) Addr() string { return "127.0.0.1:" + strconv.Itoa(o.port) }

// Pid is the process id of the running process (0 when down).
func (o *Orch) Pid() int { return o.pid() }

// Up reports whether the process runs and is not stopped.
func (o *Orch) Up() bool { return o.running() && !o.isStopped() }

// Start starts the process and waits until GET /readyz answers 200 (NATS and
// the store reachable, the worker pulling), up to 30 s.
func (o *Orch) Start() error {
	for attempt := 0; ; attempt++ {
		env := append(append([]string(nil), o.env...), "HTTP_ADDR="+o.Addr())
		if err := o.start(o.bin, []string{"serve"}, env, o.LogPath); err != nil {
			return fmt.Errorf("%s: %w", o.Name, err)
		}
		o.starts++
		err := o.waitReady(30 * time.Second)
		if err == nil {
			return nil
		}
		o.kill()
		if attempt < 3 && strings.Contains(tail(o.LogPath, 4000), "address already in use") {
			// Someone took the port: take another one.
			if p, perr := freePort(); perr == nil {
				o.port = p
				continue
			}
		}
		return fmt.Errorf("%s: %w\n%s", o.Name, err, tail(o.LogPath, 3000))
	}
}

func (o *Orch) waitReady(d time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-o.exited():
			return errors.New("exited at start-up")
		default:
		}
		resp, err := client.Get("http://" + o.Addr() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready on %s after %s", o.Addr(), d)
}

// Kill sends SIGKILL and waits for the process to exit.
func (o *Orch) Kill() { o.kill() }

// Stop sends SIGSTOP: the process is frozen, its connections stay open.
func (o *Orch) Stop() error { return o.signal(syscall.SIGSTOP) }

// Cont sends SIGCONT.
func (o *Orch) Cont() error { return o.signal(syscall.SIGCONT) }

// Cluster is one scenario's processes: nats-server (or a NATS cluster),
// redis-server, the downstream fake and the orchestrator instances.
type Cluster struct {
	t     testing.TB
	Dir   string
	NATS  string // NATS_URL: one URL, or the cluster's, comma-separated
	Redis string // redis:// URL
	Down  *Downstream
	Orchs []*Orch
	env   []string
}

// NewOrch adds an orchestrator instance (not started) with the cluster's
// settings and extra ones ("KEY=value", which win); it is killed in
// t.Cleanup.
func (c *Cluster) NewOrch(name string, extra ...string) *Orch {
	port, err := freePort()
	if err != nil {
		c.t.Fatalf("%s: %v", name, err)
	}
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + c.Dir,
		"TMPDIR=" + c.Dir,
		"NATS_URL=" + c.NATS,
		"REDIS_URL=" + c.Redis,
		"STEPS_BASE_URL=" + c.Down.URL(),
		"LOG_LEVEL=info",
		"OTEL_SDK_DISABLED=true",
	}
	env = append(env, c.env...)
	env = append(env, extra...)
	o := &Orch{Name: name, bin: orchestratorBin(c.t), env: env, port: port, LogPath: filepath.Join(c.Dir, name+".log")}
	c.Orchs = append(c.Orchs, o)
	c.t.Cleanup(o.kill)
	return o
}

// LiveAddrs are the HTTP addresses of the instances that run and are not
// stopped.
func (c *Cluster) LiveAddrs() []string {
	var out []string
	for _, o := range c.Orchs {
		if o.Up() {
			out = append(out, o.Addr())
		}
	}
	return out
}

// Owner names the instance whose socket has remoteAddr (a client address
// the downstream fake sees) as its local address, by looking the connection
// up in /proc/net/tcp and the socket inode among the instances' open files
// (/proc/<pid>/fd). It returns "" when it cannot tell (the connection
// already gone, or not one of ours).
func (c *Cluster) Owner(remoteAddr string) string {
	_, portStr, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return ""
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return ""
	}
	inode := socketInode(port, c.Down.Port())
	if inode == "" {
		return ""
	}
	want := "socket:[" + inode + "]"
	for _, o := range c.Orchs {
		pid := o.Pid()
		if pid == 0 {
			continue
		}
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && l == want {
				return fmt.Sprintf("%s(pid %d)", o.Name, pid)
			}
		}
	}
	return ""
}

// socketInode finds, in /proc/net/tcp, the IPv4 socket whose local port is
// localPort and remote port is remotePort, and returns its inode.
func socketInode(localPort, remotePort int) string {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return ""
	}
	lp := fmt.Sprintf(":%04X", localPort)
	rp := fmt.Sprintf(":%04X", remotePort)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		if len(f) < 10 || !strings.HasSuffix(f[1], lp) || !strings.HasSuffix(f[2], rp) {
			continue
		}
		if f[9] != "0" {
			return f[9]
		}
	}
	return ""
}

// binaries is set by TestMain.
var binaries Binaries

func orchestratorBin(t testing.TB) string {
	if binaries.Orchestrator == "" {
		t.Fatal("chaos: binaries not built (TestMain)")
	}
	return binaries.Orchestrator
}

// waitFor polls cond every step until it holds or ctx ends.
func waitFor(ctx context.Context, step time.Duration, cond func() bool) error {
	t := time.NewTicker(step)
	defer t.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// RunTool runs `orchestrator <args>` once with the cluster's NATS and Redis
// settings and returns its combined output.
func (c *Cluster) RunTool(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, orchestratorBin(c.t), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + c.Dir, "TMPDIR=" + c.Dir,
		"NATS_URL=" + c.NATS, "REDIS_URL=" + c.Redis}, c.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("orchestrator %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}
