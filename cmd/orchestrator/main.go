// Command orchestrator runs Campaign Orchestrator and its operator tools.
//
//	orchestrator serve [--role all|ingress|worker] [flags]   run the service
//	orchestrator streams apply [flags]                        create or update streams and consumer
//	orchestrator token hash < token                           print the hash to put in API_TOKENS_FILE
//	orchestrator trace <tenant>/<campaign> [--follow]         a campaign's timeline from CAMPAIGN_EVENTS
//	orchestrator dlq list [--json]                            the dead letters of CAMPAIGN_DLQ
//	orchestrator dlq replay <seq>|--all [--purge] [--new-id]  send dead letters back
//	orchestrator rebuild [--tenant T] [--campaign C] [--dry-run]  rebuild campaigns whose state Redis lost
//	orchestrator bench [flags] [--baseline]                   load test: campaigns through the service, beside the bare pipeline
//	orchestrator dashboard [--addr ADDR] [--api URL]           the web dashboard
//	orchestrator version                                      version, commit, Go and dependency versions
//	orchestrator completion bash|zsh                          shell completion script
//
// Every subcommand has its own flags (`orchestrator <command> --help`); every
// setting is an environment variable and a flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
	"github.com/campaign-orchestrator/orchestrator/internal/connect"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/streams"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := runIO(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode is 0 for success and --help, 2 for a bad command line, 1 for any
// other error (printed on w).
func exitCode(err error, w io.Writer) int {
	var usage *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &usage):
		fmt.Fprintln(w, "orchestrator:", err)
		return 2
	}
	fmt.Fprintln(w, "orchestrator:", err)
	return 1
}

// subcommand is one entry of the command table: its words ("dlq replay"),
// one line of summary and what runs it (with the arguments after its words).
type subcommand struct {
	path, synopsis, summary string
	run                     func(ctx context.Context, e *cmdEnv, args []string) error
}

// cmdEnv is what a subcommand reads and writes besides its arguments.
type cmdEnv struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// subcommands is the command table: usage, dispatch and completion read it
// (set in init: completion reads the table).
var subcommands []subcommand

func init() { subcommands = commandTable() }

func commandTable() []subcommand {
	return []subcommand{
		{"serve", "[--role all|ingress|worker] [flags]", "run the service", func(ctx context.Context, e *cmdEnv, args []string) error {
			return serve(ctx, args, e)
		}},
		{"streams apply", "[flags]", "create or update the streams and the consumer", func(ctx context.Context, e *cmdEnv, args []string) error {
			return streamsApply(ctx, args, e)
		}},
		{"token hash", "[flags] < token", "print a token's hash for API_TOKENS_FILE (reads the token from stdin)", func(ctx context.Context, e *cmdEnv, args []string) error {
			return tokenHash(args, e)
		}},
		{"trace", "<tenant>/<campaign> [--follow] [flags]", "a campaign's timeline from CAMPAIGN_EVENTS", func(ctx context.Context, e *cmdEnv, args []string) error {
			return trace(ctx, args, e.getenv, e.stdout, e.stderr)
		}},
		{"dlq list", "[--json] [flags]", "the dead letters of CAMPAIGN_DLQ", func(ctx context.Context, e *cmdEnv, args []string) error {
			return dlqList(ctx, args, e.getenv, e.stdout, e.stderr)
		}},
		{"dlq replay", "<seq>|--all [--purge] [--new-id] [flags]", "send dead letters back to their subjects", func(ctx context.Context, e *cmdEnv, args []string) error {
			return dlqReplay(ctx, args, e.getenv, e.stdout, e.stderr)
		}},
		{"rebuild", "[--tenant T] [--campaign C] [--dry-run] [flags]", "rebuild from CAMPAIGN_EVENTS the campaigns whose state Redis lost", func(ctx context.Context, e *cmdEnv, args []string) error {
			return rebuildCmd(ctx, args, e)
		}},
		{"bench", "[flags] [-- serve flags]", "load test: campaigns through the service, beside the bare pipeline", func(ctx context.Context, e *cmdEnv, args []string) error {
			return benchCmd(ctx, args, e.stdout, e.stderr)
		}},
		{"dashboard", "[--addr 127.0.0.1:3000] [--api http://localhost:8000]", "the web dashboard", func(ctx context.Context, e *cmdEnv, args []string) error {
			return dashboardCmd(ctx, args, e)
		}},
		{"version", "[--json]", "version, commit, Go version and the versions of nats-server, nats.go, go-redis and echo", func(ctx context.Context, e *cmdEnv, args []string) error {
			return versionCmd(args, e)
		}},
		{"completion", "bash|zsh", "print a shell completion script", func(ctx context.Context, e *cmdEnv, args []string) error {
			return completionCmd(ctx, args, e)
		}},
	}
}

// usage is the top-level usage text, built from the command table.
func usage() string {
	var b strings.Builder
	b.WriteString("usage: orchestrator <command> [flags]   (orchestrator <command> --help for its flags)\n\ncommands:\n")
	for _, c := range subcommands {
		fmt.Fprintf(&b, "  %-16s %s\n", c.path, c.summary)
	}
	b.WriteString("\n  --version        the same as orchestrator version\n")
	b.WriteString("\ntrace, dlq and streams apply talk to NATS only: --nats-url, default $NATS_URL or " + defaultNATSURL +
		",\nor a natscli context (--nats-context, $NATS_CONTEXT)\n")
	return b.String()
}

// run runs the command line args with nothing on stdin.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return runIO(ctx, args, getenv, strings.NewReader(""), stdout, stderr)
}

// runIO finds args' subcommand in the table and runs it.
func runIO(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := &cmdEnv{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage())
		return &usageError{errors.New("no command")}
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage())
		return nil
	case "-version", "--version":
		return versionCmd(args[1:], e)
	}
	// The longest path whose words start args.
	var found *subcommand
	var group []string
	for i := range subcommands {
		c := &subcommands[i]
		words := strings.Fields(c.path)
		if words[0] != args[0] {
			continue
		}
		group = append(group, c.path)
		if len(words) <= len(args) && strings.Join(args[:len(words)], " ") == c.path {
			found = c
		}
	}
	if found != nil {
		return found.run(ctx, e, args[len(strings.Fields(found.path)):])
	}
	if len(group) > 0 { // "dlq" alone, or "dlq purge"
		for _, p := range group {
			fmt.Fprintf(stderr, "usage: orchestrator %s\n", p)
		}
		if len(args) > 1 && (args[1] == "-h" || args[1] == "--help" || args[1] == "-help") {
			return nil
		}
		return &usageError{fmt.Errorf("%s: want %s", args[0], "`"+strings.Join(group, "` or `")+"`")}
	}
	fmt.Fprint(stderr, usage())
	return &usageError{fmt.Errorf("unknown command %q", args[0])}
}

// newLogger logs JSON unless stderr is a terminal. Durations are logged as
// Go duration strings ("30s", "1.2ms") in both forms, not JSON's integer
// nanoseconds.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: durationString}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			return slog.New(slog.NewTextHandler(w, opts))
		}
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

const serveHelp = `
Runs the service: the HTTP ingress, the workers, or both (--role), with an
embedded NATS server when NATS_URL is empty and the in-process store when
REDIS_URL is empty. Every flag is also an environment variable (shown beside
it); a flag given wins over its variable. A setting that makes no sense
stops start-up with a message naming it.`

func serve(ctx context.Context, args []string, e *cmdEnv) error {
	c := newCommand("serve", "[--role all|ingress|worker] [flags]", serveHelp, e.stdout, e.stderr)
	cfg := config.ServeFlags(c.settings(e.getenv))
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return c.usageErr("unexpected arguments: %v", pos)
	}
	log := newLogger(e.stderr, cfg.LogLevel)
	stopTracing, err := setupTracing(ctx, e.getenv, log)
	if err != nil {
		return err
	}
	defer stopTracing()
	app, err := NewApp(ctx, *cfg, log, Options{})
	if err != nil {
		return err
	}
	log.Info("campaign orchestrator running", "role", cfg.Role, "http", app.HTTPAddr(), "nats", app.NATSURLRedacted(), "version", buildVersion().Version)
	runErr := app.Run(ctx)
	log.Info("shutting down")
	closeErr := app.Close()
	return errors.Join(runErr, closeErr)
}

const streamsApplyHelp = `
Creates or updates the streams (CAMPAIGN_COMMANDS, CAMPAIGN_EVENTS,
CAMPAIGN_DLQ) and the consumer from the files under streams/, as serve does
at start-up, on the NATS server of --nats-url (or --nats-context).`

func streamsApply(ctx context.Context, args []string, e *cmdEnv) error {
	c := newCommand("streams apply", "[flags]", streamsApplyHelp, e.stdout, e.stderr)
	set := c.settings(e.getenv)
	nc := config.NATSFlags(set, defaultNATSURL)
	st := config.StreamFlags(set)
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return c.usageErr("unexpected arguments: %v", pos)
	}
	conn, err := connect.NATS(*nc, "orchestrator-streams-apply", nats.MaxReconnects(3))
	if err != nil {
		return err
	}
	defer conn.Close()
	js, err := jetstream.New(conn)
	if err != nil {
		return err
	}
	specs, err := events.LoadSpecs(streams.FS)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := specs.Apply(actx, js, events.Overrides{DuplicateWindow: st.DuplicateWindow, Replicas: st.Replicas}); err != nil {
		return err
	}
	for _, s := range specs.Streams {
		fmt.Fprintf(e.stdout, "stream %s: applied\n", s.Name)
	}
	fmt.Fprintf(e.stdout, "consumer %s on %s: applied\n", specs.Consumer.Durable, events.StreamCommands)
	return nil
}

// durationString is the slog.HandlerOptions.ReplaceAttr that writes a
// duration as its String.
func durationString(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}
