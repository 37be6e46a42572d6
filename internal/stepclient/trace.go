package stepclient

import (
	"context"
	"net/url"

	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/campaign-orchestrator/orchestrator/internal/tracing"
)

// startAttempt starts the client span of attempt n. Its parent is ctx's
// span or, when ctx carries none, the span req.Traceparent names; the
// attempt sends the client span's traceparent downstream.
func (c *Client) startAttempt(ctx context.Context, req Request, n int) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsValid() && req.Traceparent != "" {
		ctx = tracing.WithTraceparent(ctx, req.Traceparent)
	}
	ctx, span := c.tracer.Start(ctx, "POST "+req.Step.Name, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(tracing.Campaign(req.Tenant, req.Campaign, "")...)
		span.SetAttributes(semconv.HTTPRequestMethodPost, semconv.URLFull(req.Step.URL),
			tracing.AttrStep.String(req.Step.Name), tracing.AttrRun.Int(req.Run), tracing.AttrAttempt.Int(n))
		if u, err := url.Parse(req.Step.URL); err == nil {
			span.SetAttributes(semconv.ServerAddress(u.Hostname()))
		}
	}
	return ctx, span
}

// endAttempt ends an attempt's client span with its outcome.
func endAttempt(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
