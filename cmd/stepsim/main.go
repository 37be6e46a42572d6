// Command stepsim is a stand-in for the step services of the built-in
// workflow, for `make run` and demos: it answers POST /<step> for any step
// name with plausible JSON after a configurable latency, fails or resets a
// configurable share of calls, and replays the first answer for a repeated
// Idempotency-Key (kept in memory).
//
// It is a development tool, outside the product: nothing in the orchestrator
// imports it.
//
// Settings (flag, else environment variable, else default):
//
//	-addr        STEPSIM_ADDR        127.0.0.1:8081  listen address
//	-latency     STEPSIM_LATENCY     0s              mean added latency, ±50 % jitter
//	-fail-rate   STEPSIM_FAIL_RATE   0               share of calls answered 500 (0..1)
//	-reset-rate  STEPSIM_RESET_RATE  0               share of connections reset unanswered (0..1)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "stepsim:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends, then shuts down gracefully.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	addr, opts, err := parseSettings(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	opts.Logger = logger

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: NewHandler(opts), ReadHeaderTimeout: 10 * time.Second}
	// HTTP/1.1, and HTTP/2 without TLS for an orchestrator with STEP_PROTOCOL=h2c.
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Info("stepsim listening", "addr", ln.Addr().String(), "latency", opts.Latency,
		"fail_rate", opts.FailRate, "reset_rate", opts.ResetRate)

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("stepsim shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// parseSettings reads the flags, with defaults from the environment.
func parseSettings(args []string, getenv func(string) string, stderr io.Writer) (string, Options, error) {
	var (
		opts Options
		addr string
		errs []error
	)
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	envDuration := func(name string) time.Duration {
		v := env(name, "0s")
		d, err := time.ParseDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not a duration", name, v))
		}
		return d
	}
	envRate := func(name string) float64 {
		v := env(name, "0")
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not a number", name, v))
		}
		return f
	}

	fs := flag.NewFlagSet("stepsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&addr, "addr", env("STEPSIM_ADDR", "127.0.0.1:8081"), "listen address (STEPSIM_ADDR)")
	fs.DurationVar(&opts.Latency, "latency", envDuration("STEPSIM_LATENCY"), "mean added latency, ±50% jitter (STEPSIM_LATENCY)")
	fs.Float64Var(&opts.FailRate, "fail-rate", envRate("STEPSIM_FAIL_RATE"), "share of calls answered 500, 0..1 (STEPSIM_FAIL_RATE)")
	fs.Float64Var(&opts.ResetRate, "reset-rate", envRate("STEPSIM_RESET_RATE"), "share of connections reset unanswered, 0..1 (STEPSIM_RESET_RATE)")
	if err := fs.Parse(args); err != nil {
		return "", Options{}, err
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if opts.Latency < 0 {
		errs = append(errs, fmt.Errorf("-latency (STEPSIM_LATENCY): %s is negative", opts.Latency))
	}
	for _, r := range []struct {
		name string
		v    float64
	}{{"-fail-rate (STEPSIM_FAIL_RATE)", opts.FailRate}, {"-reset-rate (STEPSIM_RESET_RATE)", opts.ResetRate}} {
		if r.v < 0 || r.v > 1 {
			errs = append(errs, fmt.Errorf("%s: %v is not between 0 and 1", r.name, r.v))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return "", Options{}, fmt.Errorf("settings: %w", err)
	}
	return addr, opts, nil
}
