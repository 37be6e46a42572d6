package worker

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/tracing"
)

// The worker's spans, one trace per command chain:
//
//	handle <verb>  consumer span of one delivery, child of the message's traceparent;
//	               the inbox item keeps its traceparent
//	apply <verb>   one inbox item applied by the lock holder, child of the item's
//	               traceparent (whoever drains it), linked to the drainer's span;
//	               a stale advance's has campaign.apply.noop=true and an event
//	send …         producer span "send campaign.evt…", child of apply, for the
//	               events of its write; the messages carry its traceparent.
//	               The next advance is parked in the inbox, never published:
//	               its apply is a child of the apply that scheduled it
//	step <name>    one run of a step, child of apply; the step client adds a
//	               client span per attempt

// verbOf is the verb of a command subject, or "command" when it is none of
// fsm.Verbs (span names stay few).
func verbOf(subject string) string {
	if v, ok := subjectVerb(subject); ok {
		return string(v)
	}
	return "command"
}

// The spans' attributes and links are set only when the span records: with
// the no-op provider (no OTEL_EXPORTER_OTLP_ENDPOINT) they cost nothing.

// startHandle starts the consumer span of one delivery of msg.
func (w *Worker) startHandle(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata) (context.Context, trace.Span) {
	ctx = tracing.WithTraceparent(ctx, msg.Headers().Get(events.HdrTraceparent))
	ctx, span := w.tracer.Start(ctx, "handle "+verbOf(msg.Subject()), trace.WithSpanKind(trace.SpanKindConsumer))
	if span.IsRecording() {
		span.SetAttributes(
			semconv.MessagingSystemKey.String("nats"), semconv.MessagingOperationTypeProcess,
			semconv.MessagingDestinationName(msg.Subject()), semconv.MessagingConsumerGroupName(events.ConsumerName),
			semconv.MessagingMessageID(events.BoundReason(msg.Headers().Get("Nats-Msg-Id"))), // the publisher's: bounded
			attribute.Int("messaging.nats.delivery_count", int(meta.NumDelivered)),
		)
	}
	return ctx, span
}

// startApply starts the span of applying inbox item it of campaign k: a
// child of the item's own traceparent, not of the span of the handler that
// drains it, which becomes a link.
func (w *Worker) startApply(ctx context.Context, k store.Key, it events.InboxItem) (context.Context, trace.Span) {
	drainer := trace.SpanContextFromContext(ctx)
	ctx, span := w.tracer.Start(tracing.WithTraceparent(ctx, it.Traceparent), "apply "+verbOf(it.Subject))
	if span.IsRecording() {
		span.SetAttributes(tracing.Campaign(k.Tenant, k.Campaign, it.ID)...)
		span.SetAttributes(tracing.AttrVerb.String(verbOf(it.Subject)))
		if drainer.IsValid() {
			span.AddLink(trace.Link{SpanContext: drainer})
		}
	}
	return ctx, span
}

// startStep starts the span of one run of step of campaign k.
func (w *Worker) startStep(ctx context.Context, k store.Key, cmdID, step string, run, attempt int) (context.Context, trace.Span) {
	ctx, span := w.tracer.Start(ctx, "step "+step)
	if span.IsRecording() {
		span.SetAttributes(tracing.Campaign(k.Tenant, k.Campaign, cmdID)...)
		span.SetAttributes(tracing.AttrStep.String(step), tracing.AttrRun.Int(run), tracing.AttrAttempt.Int(attempt))
	}
	return ctx, span
}

// noopSpan marks an apply span whose item changed nothing (a stale
// advance), so that a trace tells it from the apply that did the work.
func noopSpan(span trace.Span, reason string) {
	if span.IsRecording() {
		span.SetAttributes(tracing.AttrNoop.Bool(true))
		span.AddEvent(tracing.EventNoop, trace.WithAttributes(attribute.String("reason", reason)))
	}
}

// sampledTraceID is the trace id of ctx's span when the trace is sampled
// (so that a metric's exemplar leads to a recorded trace), else "".
func sampledTraceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() && sc.IsSampled() {
		return sc.TraceID().String()
	}
	return ""
}

// failSpan marks span failed with err (nothing when err is nil).
func failSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
}
