package bench

import (
	"context"
	"errors"
	"fmt"
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
	return startChild(ctx, "redis-server", bin, func(dir string, port, _ int) []string {
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
	return startChild(ctx, "nats-server", bin, func(dir string, port, mport int) []string {
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

// startChild starts bin with args on two free ports, and waits until ready
// answers nil (10 s at most); a port taken meanwhile makes it try again.
func startChild(ctx context.Context, name, bin string, args func(dir string, port, mport int) []string,
	ready func(ctx context.Context, c *Child, port, mport int) error) (*Child, error) {
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
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the bench
		if err := cmd.Start(); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		c := &Child{Name: name, cmd: cmd, dir: dir, done: make(chan struct{})}
		go func() { _ = cmd.Wait(); close(c.done) }()
		deadline := time.Now().Add(10 * time.Second)
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
