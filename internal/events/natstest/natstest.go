// Package natstest runs a real, in-process NATS server with JetStream for
// tests, as nats-server's own tests do: a random port, a private store
// directory, no signal handlers, and the server's warnings and errors in the
// test's log (shown when it fails). It is for _test files only.
package natstest

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Start runs an embedded NATS server with JetStream on 127.0.0.1 and a random
// port, storing in t.TempDir(), and shuts it down when the test ends.
func Start(t testing.TB) *server.Server {
	t.Helper()
	l := &testLogger{t: t}
	srv, err := run(t.TempDir(), l)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		l.stop()
	})
	return srv
}

// testLogger writes the server's warnings and errors to the test's log:
// a JetStream API error such as "error creating store for stream" names
// its cause only there. After stop (the server shut down) it drops them,
// because logging after a test has ended panics.
type testLogger struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (l *testLogger) log(level, format string, v []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Logf("nats-server %s: %s", level, fmt.Sprintf(format, v...))
	}
}

func (l *testLogger) stop() {
	l.mu.Lock()
	l.done = true
	l.mu.Unlock()
}

func (l *testLogger) Noticef(string, ...any)         {}
func (l *testLogger) Debugf(string, ...any)          {}
func (l *testLogger) Tracef(string, ...any)          {}
func (l *testLogger) Warnf(format string, v ...any)  { l.log("warning", format, v) }
func (l *testLogger) Errorf(format string, v ...any) { l.log("error", format, v) }
func (l *testLogger) Fatalf(format string, v ...any) { l.log("fatal", format, v) }

// Run is Start for a TestMain (no testing.TB): the server stores in
// storeDir, and the caller shuts it down.
func Run(storeDir string) (*server.Server, error) { return run(storeDir, nil) }

// run starts the server, logging to log from its start when not nil.
func run(storeDir string, log server.Logger) (*server.Server, error) {
	srv, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  storeDir,
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		return nil, fmt.Errorf("new server: %w", err)
	}
	if log != nil {
		srv.SetLogger(log, false, false)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("server not ready for connections after 10s")
	}
	return srv, nil
}

// Connect opens a connection to srv and a JetStream context on it; the
// connection is closed when the test ends.
func Connect(t testing.TB, srv *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatalf("natstest: connect to %s: %v", srv.ClientURL(), err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return nc, js
}

// Restartable is an embedded NATS server with JetStream that a test stops
// and starts again on the same port and store directory (a NATS outage).
type Restartable struct {
	t    testing.TB
	opts server.Options
	srv  *server.Server
}

// StartRestartable runs a Restartable server on a free loopback port,
// storing in t.TempDir(), and stops it when the test ends.
func StartRestartable(t testing.TB) *Restartable {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	r := &Restartable{t: t, opts: server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Start starts the server again (a no-op while it runs).
func (r *Restartable) Start() {
	r.t.Helper()
	if r.srv != nil {
		return
	}
	opts := r.opts
	srv, err := server.NewServer(&opts)
	if err != nil {
		r.t.Fatalf("natstest: new server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		r.t.Fatal("natstest: server not ready for connections after 10s")
	}
	r.srv = srv
}

// Stop shuts the server down and waits until it is down.
func (r *Restartable) Stop() {
	if r.srv != nil {
		r.srv.Shutdown()
		r.srv.WaitForShutdown()
		r.srv = nil
	}
}

// Server is the running server (nil while stopped).
func (r *Restartable) Server() *server.Server { return r.srv }

// URL is the server's client URL, the same across restarts.
func (r *Restartable) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", r.opts.Port) }
