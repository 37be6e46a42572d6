package main

import (
	"flag"
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

// opsFlags starts the flag set of an operator command (trace, dlq …), which
// talks to NATS only: the NATS connection flag group (--nats-url,
// --nats-creds, --nats-nkey-seed, --nats-tls-ca, --nats-tls-cert,
// --nats-tls-key), each defaulting to its variable, the URL else to
// defaultNATSURL. usage is printed by -h and on a usage error. After
// parsing, the returned function validates the NATS settings.
func opsFlags(name, usage string, getenv func(string) string, stderr io.Writer) (*flag.FlagSet, func() (config.NATS, error)) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	conn := config.NATSFlags(fs, getenv, defaultNATSURL)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s\n\nflags:\n", usage)
		fs.PrintDefaults()
	}
	return fs, conn
}

// parseInterspersed parses args with fs, letting flags come after the
// positional arguments too (`trace acme/spring --follow`), and returns the
// positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// usageError reports a bad command line after printing fs's usage.
func usageError(fs *flag.FlagSet, format string, a ...any) error {
	fs.Usage()
	return fmt.Errorf(format, a...)
}

// connectOps connects an operator command to NATS and JetStream with the
// settings of its flag group (opsFlags).
func connectOps(conn func() (config.NATS, error), name string) (*nats.Conn, jetstream.JetStream, error) {
	c, err := conn()
	if err != nil {
		return nil, nil, err
	}
	nc, err := connect.NATS(c, name, nats.MaxReconnects(3))
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
