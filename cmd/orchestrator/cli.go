package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
)

// The command line of every subcommand goes through a command: its own flag
// set and usage text; --help prints the usage on stdout and exits 0, a bad
// command line prints it on stderr and exits 2. A subcommand reads only the
// settings it registers (config.NATSFlags, config.StreamFlags, …).
//
//	c := newCommand("dlq list", "[--json] [flags]", "Prints the dead letters …", stdout, stderr)
//	asJSON := c.fs.Bool("json", false, "print a JSON array")
//	nats := config.NATSFlags(c.settings(getenv), defaultNATSURL)
//	args, err := c.parse(args) // then c.resolve() for the settings
//	if err != nil {
//		return err
//	}

// command is one subcommand's command line.
type command struct {
	name     string // "dlq replay"
	synopsis string // what follows the name in the usage line
	help     string // a paragraph or more, printed after the usage line
	fs       *flag.FlagSet
	set      *config.Set
	stdout   io.Writer
	stderr   io.Writer
}

// usageError is a bad command line: main exits 2 on it.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func newCommand(name, synopsis, help string, stdout, stderr io.Writer) *command {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse errors are returned, usage printed by parse
	fs.Usage = func() {}
	return &command{name: name, synopsis: synopsis, help: strings.TrimSpace(help), fs: fs, stdout: stdout, stderr: stderr}
}

// settings returns the command's configuration settings, whose groups
// (config.NATSFlags …) register their flags on its flag set.
func (c *command) settings(getenv func(string) string) *config.Set {
	if c.set == nil {
		c.set = config.NewSet(c.fs, getenv)
	}
	return c.set
}

// printUsage writes the usage line, the help and the flags.
func (c *command) printUsage(w io.Writer) {
	fmt.Fprintf(w, "usage: orchestrator %s %s\n", c.name, c.synopsis)
	if c.help != "" {
		fmt.Fprintf(w, "\n%s\n", c.help)
	}
	n := 0
	c.fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprint(w, "\nflags:\n")
		config.PrintFlags(w, c.fs)
	}
}

// parse parses args, flags before, between or after the positional
// arguments, and returns the positional ones; then it resolves the settings
// (environment, validation). --help prints the usage on stdout and returns
// flag.ErrHelp.
func (c *command) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := c.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				c.printUsage(c.stdout)
				return nil, flag.ErrHelp
			}
			return nil, c.usageErr("%v", err)
		}
		if c.fs.NArg() == 0 {
			break
		}
		pos = append(pos, c.fs.Arg(0))
		args = c.fs.Args()[1:]
	}
	if c.set != nil {
		if err := c.set.Resolve(); err != nil {
			return nil, err
		}
	}
	return pos, nil
}

// usageErr prints the usage on stderr and returns a usage error.
func (c *command) usageErr(format string, a ...any) error {
	c.printUsage(c.stderr)
	fmt.Fprintln(c.stderr)
	return &usageError{fmt.Errorf("%s: %s", c.name, fmt.Sprintf(format, a...))}
}
