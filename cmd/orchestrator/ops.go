package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// defaultNATSURL is where the operator commands connect without --nats-url
// or NATS_URL: the embedded server's default address (EMBEDDED_NATS_ADDR).
const defaultNATSURL = "nats://127.0.0.1:4222"

// opsFlags starts the flag set of an operator command (trace, dlq …), which
// talks to NATS only: --nats-url, defaulting to NATS_URL, else
// defaultNATSURL. usage is printed by -h and on a usage error.
func opsFlags(name, usage string, getenv func(string) string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := getenv("NATS_URL")
	if def == "" {
		def = defaultNATSURL
	}
	url := fs.String("nats-url", def, "NATS server URL(s) (env NATS_URL)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s\n\nflags:\n", usage)
		fs.PrintDefaults()
	}
	return fs, url
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

// connectOps connects an operator command to NATS and JetStream.
func connectOps(url, name string) (*nats.Conn, jetstream.JetStream, error) {
	if url == "" {
		return nil, nil, errors.New("NATS_URL (--nats-url): empty")
	}
	nc, err := nats.Connect(url, nats.Name(name), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("NATS_URL (--nats-url) %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}
