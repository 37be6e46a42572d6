// Package natstest runs a real, in-process NATS server with JetStream for
// tests, as nats-server's own tests do: a random port, a private store
// directory, no logging, no signal handlers. It is for _test files only.
package natstest

import (
	"errors"
	"fmt"
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
	srv, err := Run(t.TempDir())
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// Run is Start for a TestMain (no testing.TB): the server stores in
// storeDir, and the caller shuts it down.
func Run(storeDir string) (*server.Server, error) {
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
