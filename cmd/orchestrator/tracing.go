package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/tracing"
)

// setupTracing installs the process's tracer provider (internal/tracing:
// OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set, no-op otherwise) and
// returns the function that flushes its buffered spans, within 5 s, at exit.
func setupTracing(ctx context.Context, getenv func(string) string, log *slog.Logger) (func(), error) {
	_, shutdown, err := tracing.Setup(ctx, getenv, log)
	if err != nil {
		return nil, err
	}
	if tracing.Enabled(getenv) {
		endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
		if endpoint == "" {
			endpoint = getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
		}
		log.Info("tracing: exporting spans over OTLP/HTTP", "endpoint", endpoint)
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdown(sctx); err != nil {
			log.Warn("tracing: flushing spans at exit", "err", err)
		}
	}, nil
}
