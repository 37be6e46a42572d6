// Command orchestrator runs Campaign Orchestrator and its operator tools.
//
//	orchestrator serve [--role all|ingress|worker] [flags]   run the service
//	orchestrator streams apply [flags]                        create or update streams and consumer
//	orchestrator token hash <token>                           print the hash to put in API_TOKENS_FILE
//	orchestrator trace <tenant>/<campaign> [--follow]         a campaign's timeline from CAMPAIGN_EVENTS
//	orchestrator dlq list [--json]                            the dead letters of CAMPAIGN_DLQ
//	orchestrator dlq replay <seq>|--all [--purge]             send dead letters back with their command ids
//	orchestrator bench [flags] [--baseline]                   load test: campaigns through the service, beside the bare pipeline
//	orchestrator dashboard [--addr ADDR] [--api URL]           the web dashboard
//
// Every setting is an environment variable and a flag (`orchestrator serve -h`).
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
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
	"github.com/campaign-orchestrator/orchestrator/internal/connect"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/httpapi"
	"github.com/campaign-orchestrator/orchestrator/streams"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "orchestrator:", err)
		}
		os.Exit(1)
	}
}

const usage = `usage:
  orchestrator serve [--role all|ingress|worker] [flags]   run the service (see serve -h)
  orchestrator streams apply [flags]                        create or update the streams and the consumer
  orchestrator token hash <token>                           print a token's hash for API_TOKENS_FILE
  orchestrator trace <tenant>/<campaign> [--follow]         a campaign's timeline from CAMPAIGN_EVENTS
  orchestrator dlq list [--json]                            the dead letters of CAMPAIGN_DLQ
  orchestrator dlq replay <seq>|--all [--purge]             send dead letters back with their command ids
  orchestrator bench [flags] [--baseline]                   load test: campaigns through the service, beside the bare pipeline (see bench -h)
  orchestrator dashboard [--addr ADDR] [--api URL]           the web dashboard (default 127.0.0.1:3000, API http://localhost:8000)
  (trace and dlq talk to NATS only: --nats-url, default $NATS_URL or nats://127.0.0.1:4222)
`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], getenv, stderr)
	case "streams":
		if len(args) < 2 || args[1] != "apply" {
			fmt.Fprint(stderr, usage)
			return errors.New("streams: want `streams apply`")
		}
		return streamsApply(ctx, args[2:], getenv, stdout, stderr)
	case "token":
		if len(args) != 3 || args[1] != "hash" {
			fmt.Fprint(stderr, usage)
			return errors.New("token: want `token hash <token>`")
		}
		fmt.Fprintln(stdout, httpapi.HashToken(args[2]))
		return nil
	case "trace":
		return trace(ctx, args[1:], getenv, stdout, stderr)
	case "dlq":
		return dlq(ctx, args[1:], getenv, stdout, stderr)
	case "bench":
		return benchCmd(ctx, args[1:], stdout, stderr)
	case "dashboard":
		return dashboardCmd(ctx, args[1:], stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// newLogger logs JSON unless stderr is a terminal.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			return slog.New(slog.NewTextHandler(w, opts))
		}
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func serve(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := config.Load(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogLevel)
	stopTracing, err := setupTracing(ctx, getenv, log)
	if err != nil {
		return err
	}
	defer stopTracing()
	app, err := NewApp(ctx, cfg, log, Options{})
	if err != nil {
		return err
	}
	log.Info("campaign orchestrator running", "role", cfg.Role, "http", app.HTTPAddr(), "nats", app.NATSURLRedacted())
	runErr := app.Run(ctx)
	log.Info("shutting down")
	closeErr := app.Close()
	return errors.Join(runErr, closeErr)
}

func streamsApply(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.Load(args, getenv, stderr)
	if err != nil {
		return err
	}
	if cfg.NATSURL == "" {
		return errors.New("NATS_URL (--nats-url): required by `streams apply`")
	}
	nc, err := connect.NATS(cfg.NATS, "orchestrator-streams-apply", nats.MaxReconnects(3))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	specs, err := events.LoadSpecs(streams.FS)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := specs.Apply(actx, js, events.Overrides{DuplicateWindow: cfg.DuplicateWindow, Replicas: cfg.StreamReplicas}); err != nil {
		return err
	}
	for _, s := range specs.Streams {
		fmt.Fprintf(stdout, "stream %s: applied\n", s.Name)
	}
	fmt.Fprintf(stdout, "consumer %s on %s: applied\n", specs.Consumer.Durable, events.StreamCommands)
	return nil
}
