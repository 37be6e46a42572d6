package main

import (
	"fmt"
	"io"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
	"github.com/campaign-orchestrator/orchestrator/internal/connect"
)

// defaultNATSURL is where the operator commands connect without --nats-url
// or NATS_URL: the embedded server's default address (EMBEDDED_NATS_ADDR).
const defaultNATSURL = "nats://127.0.0.1:4222"

// opsCommand starts the command line of an operator command (trace, dlq …),
// which talks to NATS only: its settings are the NATS connection's
// (--nats-url, defaulting to NATS_URL, else NATS_CONTEXT's url, else
// defaultNATSURL; the security settings), nothing else.
func opsCommand(name, synopsis, help string, getenv func(string) string, stdout, stderr io.Writer) (*command, *config.NATS) {
	c := newCommand(name, synopsis, help, stdout, stderr)
	return c, config.NATSFlags(c.settings(getenv), defaultNATSURL)
}

// connectOps connects an operator command to NATS and JetStream with the
// settings of its flag group (config.NATSFlags).
func connectOps(c *config.NATS, name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := connect.NATS(*c, name, nats.MaxReconnects(3))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}
