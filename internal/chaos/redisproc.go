//go:build chaos

package chaos

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RedisAOF is a redis-server child process with the append-only file on and
// fsynced before every acknowledgement (appendonly yes, appendfsync
// always), on a loopback port that stays the same across Kill and Start: a
// kill -9 loses nothing Redis acknowledged. (redistest.Server persists only
// through SHUTDOWN SAVE, an orderly stop.)
type RedisAOF struct {
	proc
	bin, dir string
	port     int
}

// StartRedisAOF starts redis-server with its data in dir/redis and kills it
// in t.Cleanup.
func StartRedisAOF(t testing.TB, dir string) *RedisAOF {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		bin = "/usr/bin/redis-server"
	}
	r := &RedisAOF{bin: bin, dir: filepath.Join(dir, "redis")}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.kill)
	var last error
	for range 5 {
		if r.port, err = freePort(); err != nil {
			t.Fatal(err)
		}
		if last = r.Start(); last == nil {
			return r
		}
		r.kill()
	}
	t.Fatalf("redis-server: %v", last)
	return nil
}

// Addr is host:port.
func (r *RedisAOF) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// URL is the redis:// URL (database 0).
func (r *RedisAOF) URL() string { return "redis://" + r.Addr() + "/0" }

func (r *RedisAOF) logPath() string { return filepath.Join(r.dir, "redis.log") }

// Start starts the server (loading its append-only file) and waits until it
// answers PING with PONG (not LOADING), up to 20 s.
func (r *RedisAOF) Start() error {
	args := []string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "yes", "--appendfsync", "always", "--dir", r.dir, "--logfile", "", "--daemonize", "no"}
	if err := r.start(r.bin, args, []string{"PATH=" + os.Getenv("PATH")}, r.logPath()); err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-r.exited():
			return fmt.Errorf("redis-server exited at start-up:\n%s", tail(r.logPath(), 2000))
		default:
		}
		if ping(r.Addr()) == "+PONG" {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("redis-server on %d not answering PING after 20s:\n%s", r.port, tail(r.logPath(), 2000))
}

// Kill sends SIGKILL and waits for the exit.
func (r *RedisAOF) Kill() { r.kill() }

// ping sends PING and returns the first line of the answer ("" on error).
func ping(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return ""
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimRight(line, "\r\n")
}

// Wipe removes the server's data files (the append-only file and any
// snapshot), keeping its log: the next Start begins empty. The server must
// be stopped.
func (r *RedisAOF) Wipe() error {
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		return fmt.Errorf("wipe %s: %w", r.dir, err)
	}
	for _, e := range entries {
		if e.Name() == filepath.Base(r.logPath()) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(r.dir, e.Name())); err != nil {
			return fmt.Errorf("wipe %s: %w", r.dir, err)
		}
	}
	return nil
}
