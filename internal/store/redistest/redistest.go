// Package redistest runs a real redis-server for tests: a child process on a
// loopback port, which a test can stop and start again on the same port to
// simulate an outage. It is for tests only and never used by the service.
package redistest

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// startTimeout bounds how long redis-server may take to answer PING, and
// stopTimeout how long it may take to exit.
const (
	startTimeout = 10 * time.Second
	stopTimeout  = 10 * time.Second
)

// Start returns the URL of a Redis server for tb and a function that stops
// it (also called by tb.Cleanup). When the REDIS_URL environment variable is
// set it returns that server and stop does nothing: such a server is shared,
// so give the store a random key prefix (Prefix) and never FLUSHDB it.
// Otherwise it starts a private redis-server (see New).
func Start(tb testing.TB) (url string, stop func()) {
	tb.Helper()
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u, func() {}
	}
	s := New(tb)
	return s.URL(), s.kill
}

// Prefix returns a random Redis key prefix ("test-<hex>"), so that tests
// sharing one server never see each other's keys.
func Prefix(tb testing.TB) string {
	tb.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatalf("redistest: random prefix: %v", err)
	}
	return "test-" + hex.EncodeToString(b[:])
}

// Server is a redis-server child process listening on 127.0.0.1 on a port
// that stays the same across Stop and Start. It runs without persistence
// except that Stop saves a snapshot which Start loads (an orderly outage);
// Crash loses everything (a restart without persistence). Its methods call
// tb.Fatal on failure, so call them from the test's goroutine.
type Server struct {
	tb   testing.TB
	bin  string
	dir  string
	port int
	args []string // extra redis-server arguments (NewWith)

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// New starts a private redis-server on a free loopback port and kills it in
// tb.Cleanup. It ignores REDIS_URL: a Server must be able to stop. It fails
// the test if redis-server is not installed.
func New(tb testing.TB) *Server {
	tb.Helper()
	return NewWith(tb)
}

// NewWith is New with extra redis-server arguments (an ACL user, a TLS port,
// cluster mode …), given after the defaults so that they win. The server
// counts as up when PING answers PONG or NOAUTH (the default user may need
// a password).
func NewWith(tb testing.TB, args ...string) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if _, serr := os.Stat("/usr/bin/redis-server"); serr != nil {
			tb.Fatalf("redistest: redis-server not found (%v): install it (apt-get install redis-server) "+
				"or set REDIS_URL for tests that can use a shared server", err)
		}
		bin = "/usr/bin/redis-server"
	}
	s := &Server{tb: tb, bin: bin, dir: tb.TempDir(), args: args}
	tb.Cleanup(s.kill)
	var lastErr error
	for range 5 { // a free port can be taken by someone else before redis-server binds it
		if s.port, err = freePort(); err != nil {
			tb.Fatalf("redistest: %v", err)
		}
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	tb.Fatalf("redistest: %v", lastErr)
	return nil
}

// URL returns the server's redis:// URL (database 0).
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Addr returns the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Start starts the server again on the same port after Stop or Crash, and
// returns once it answers PING. It does nothing if the server runs.
func (s *Server) Start() {
	s.tb.Helper()
	if err := s.start(); err != nil {
		s.tb.Fatalf("redistest: %v", err)
	}
}

// Stop shuts the server down after saving its data (SHUTDOWN SAVE), which
// the next Start loads. Clients see connection errors until then.
func (s *Server) Stop() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	// The server closes the connection as it exits: no answer is expected.
	_ = send(s.Addr(), "SHUTDOWN", "SAVE")
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		_ = s.cmd.Process.Kill()
		<-s.done
		s.cmd = nil
		s.tb.Fatalf("redistest: redis-server on %s did not shut down within %s\n%s", s.Addr(), stopTimeout, s.logTail())
	}
	s.cmd = nil
}

// Crash kills the server (SIGKILL) and deletes its saved data: the next
// Start begins empty, as Redis does after a restart without persistence.
func (s *Server) Crash() {
	s.tb.Helper()
	s.kill()
	if err := os.Remove(filepath.Join(s.dir, "dump.rdb")); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.tb.Fatalf("redistest: %v", err)
	}
}

// kill kills the process if it runs and waits for it.
func (s *Server) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	cmd := exec.Command(s.bin, append([]string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no",
		"--dir", s.dir, "--dbfilename", "dump.rdb",
		"--logfile", filepath.Join(s.dir, "redis.log"),
		"--daemonize", "no"}, s.args...)...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	deadline := time.Now().Add(startTimeout)
	for {
		reply, err := roundTrip(s.Addr(), "PING")
		if err == nil && (reply == "+PONG" || strings.HasPrefix(reply, "-NOAUTH")) {
			s.cmd, s.done = cmd, done
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server on port %d exited at start-up\n%s", s.port, s.logTail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("redis-server on port %d does not answer PING after %s (last: %q, %v)\n%s",
				s.port, startTimeout, reply, err, s.logTail())
		}
	}
}

// logTail returns the end of the server's log, for failure messages.
func (s *Server) logTail() string {
	b, err := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	if err != nil {
		return "(no redis-server log: " + err.Error() + ")"
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Dir is the server's working directory (its log is redis.log there).
func (s *Server) Dir() string { return s.dir }

// FreePort returns a loopback TCP port that was free a moment ago (for a
// second listener of a server: --tls-port, --cluster-port).
func FreePort(tb testing.TB) int {
	tb.Helper()
	p, err := freePort()
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	return p
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	return port, nil
}

// encode writes args as a RESP array of bulk strings.
func encode(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

// send writes one command and does not wait for an answer.
func send(addr string, args ...string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(encode(args...))); err != nil {
		return err
	}
	// Wait for the server to close the connection (or answer an error).
	_, _ = bufio.NewReader(c).ReadString('\n')
	return nil
}

// roundTrip sends one command and returns the first line of the answer.
func roundTrip(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(encode(args...))); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}
