package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
)

// Child is a server the bench runs as a child process, on free loopback
// ports, with its data in a private temporary directory; its CPU time is
// read from /proc/<pid>/stat.
type Child struct {
	// Name is the binary's name (redis-server, nats-server).
	Name string
	// URL is its client URL (redis://… or nats://…).
	URL string
	// MonitorURL is nats-server's monitoring endpoint (http://…).
	MonitorURL string
	cmd        *exec.Cmd
	dir        string
	done       chan struct{}
}

// PID is the child's process id.
func (c *Child) PID() int { return c.cmd.Process.Pid }

// Exited is closed when the child has exited.
func (c *Child) Exited() <-chan struct{} { return c.done }

// Stop ends the child (SIGTERM, then SIGKILL after 5 s) and removes its
// directory.
func (c *Child) Stop() error {
	select {
	case <-c.done:
	default:
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	return os.RemoveAll(c.dir)
}

// FindRedisServer returns the path of redis-server on PATH (or
// /usr/bin/redis-server), or "".
func FindRedisServer() string {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/redis-server"); err == nil {
		return "/usr/bin/redis-server"
	}
	return ""
}

// StartRedis runs bin (a redis-server) without persistence on a free
// loopback port and returns once it answers PING.
func StartRedis(ctx context.Context, bin string) (*Child, error) {
	return startChild(ctx, "redis-server", bin, childOpts{}, func(dir string, port, _ int) []string {
		return []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", dir, "--daemonize", "no", "--logfile", ""}
	}, func(ctx context.Context, c *Child, port, _ int) error {
		c.URL = "redis://127.0.0.1:" + strconv.Itoa(port) + "/0"
		rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port), MaxRetries: -1})
		defer rc.Close()
		return rc.Ping(ctx).Err()
	})
}

// StartNATS runs bin (a nats-server) with JetStream on free loopback ports
// (client and monitoring) and returns once it accepts connections.
func StartNATS(ctx context.Context, bin string) (*Child, error) {
	return startChild(ctx, "nats-server", bin, childOpts{}, func(dir string, port, mport int) []string {
		return []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-m", strconv.Itoa(mport), "-js", "-sd", dir}
	}, func(ctx context.Context, c *Child, port, mport int) error {
		c.URL = "nats://127.0.0.1:" + strconv.Itoa(port)
		c.MonitorURL = "http://127.0.0.1:" + strconv.Itoa(mport)
		nc, err := nats.Connect(c.URL, nats.Timeout(time.Second))
		if err != nil {
			return err
		}
		nc.Close()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.MonitorURL+"/healthz?js-enabled-only=true", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz: %s", resp.Status)
		}
		return nil
	})
}

// childOpts are the optional settings of a child process.
type childOpts struct {
	env          []string      // its environment (nil: this process's)
	stderr       io.Writer     // its stdout and stderr (nil: discarded)
	readyTimeout time.Duration // how long it may take to be ready (0: 10 s)
}

// startChild starts bin with args on two free ports, and waits until ready
// answers nil (opts.readyTimeout, 10 s by default); a port taken meanwhile
// makes it try again.
func startChild(ctx context.Context, name, bin string, opts childOpts, args func(dir string, port, mport int) []string,
	ready func(ctx context.Context, c *Child, port, mport int) error) (*Child, error) {
	if opts.readyTimeout <= 0 {
		opts.readyTimeout = 10 * time.Second
	}
	var lastErr error
	for range 5 {
		dir, err := os.MkdirTemp("", "orchestrator-bench-"+name+"-")
		if err != nil {
			return nil, err
		}
		port, err1 := freePort()
		mport, err2 := freePort()
		if err := errors.Join(err1, err2); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		cmd := exec.Command(bin, args(dir, port, mport)...)
		cmd.Dir = dir
		cmd.Env = opts.env
		cmd.Stdout, cmd.Stderr = opts.stderr, opts.stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the bench
		if err := cmd.Start(); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		c := &Child{Name: name, cmd: cmd, dir: dir, done: make(chan struct{})}
		go func() { _ = cmd.Wait(); close(c.done) }()
		deadline := time.Now().Add(opts.readyTimeout)
		for {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			lastErr = ready(rctx, c, port, mport)
			cancel()
			if lastErr == nil {
				return c, nil
			}
			select {
			case <-c.done:
			case <-ctx.Done():
				_ = c.Stop()
				return nil, ctx.Err()
			case <-time.After(50 * time.Millisecond):
				if time.Now().Before(deadline) {
					continue
				}
			}
			break
		}
		_ = c.Stop()
		lastErr = fmt.Errorf("%s on port %d: not ready: %w", name, port, lastErr)
	}
	return nil, lastErr
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// OrchestratorSpec is an `orchestrator serve` child process.
type OrchestratorSpec struct {
	// Bin is the orchestrator binary (os.Executable() for this one).
	Bin string
	// Args follow `serve --http-addr 127.0.0.1:<free port>`: the servers,
	// STEPS_BASE_URL, --role, and any other serve flag.
	Args []string
	// Env is its environment (nil: this process's).
	Env []string
	// Output gets its stdout and stderr (nil: discarded).
	Output io.Writer
}

// StartOrchestrator runs `Bin serve` on a free loopback HTTP port and
// returns once its GET /readyz answers 200 (30 s at most); URL is then
// its base URL (http://127.0.0.1:<port>).
func StartOrchestrator(ctx context.Context, spec OrchestratorSpec) (*Child, error) {
	client := &http.Client{Timeout: time.Second}
	return startChild(ctx, "orchestrator", spec.Bin, childOpts{env: spec.Env, stderr: spec.Output, readyTimeout: 30 * time.Second},
		func(_ string, port, _ int) []string {
			return append([]string{"serve", "--http-addr", "127.0.0.1:" + strconv.Itoa(port)}, spec.Args...)
		}, func(ctx context.Context, c *Child, port, _ int) error {
			c.URL = "http://127.0.0.1:" + strconv.Itoa(port)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/readyz", nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("readyz: %s", resp.Status)
			}
			return nil
		})
}
