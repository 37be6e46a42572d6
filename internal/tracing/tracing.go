// Package tracing owns the service's OpenTelemetry tracing: the tracer
// provider built from the standard OTEL_* environment (spans exported over
// OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set, a no-op provider
// otherwise), the W3C traceparent carried from an HTTP request onto a
// command's NATS headers, the worker's spans, the step call and the emitted
// events' headers, the attribute names of the service's spans, and the log
// fields that tie a log line to its trace.
//
// Other packages start their own spans with Tracer; this package only gives
// them the provider, the propagation helpers and the names. It never logs
// (Setup routes OpenTelemetry's own errors to the logger it is given) and
// holds no state besides what Setup installs in the otel globals.
//
// With the no-op provider a span started under a remote parent carries that
// parent's span context unchanged (the OpenTelemetry API's behaviour without
// an SDK): a traceparent received passes through to the step calls and the
// events as it came, and nothing is recorded.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ScopeName is the instrumentation scope of every span the service starts.
const ScopeName = "github.com/campaign-orchestrator/orchestrator"

// ServiceName is the default service.name resource attribute
// (OTEL_SERVICE_NAME replaces it).
const ServiceName = "campaign-orchestrator"

// Header is the W3C trace context header carried on HTTP requests and NATS
// messages (events.HdrTraceparent).
const Header = "traceparent"

// Propagator is the W3C TraceContext propagator the service uses on every hop.
var Propagator = propagation.TraceContext{}

// Attribute keys of the service's own spans. Standard ones (HTTP,
// messaging) come from the OpenTelemetry semantic conventions.
const (
	AttrTenant   = attribute.Key("campaign.tenant_id")
	AttrCampaign = attribute.Key("campaign.id")
	AttrCommand  = attribute.Key("campaign.command.id")
	AttrVerb     = attribute.Key("campaign.command.verb")
	AttrStep     = attribute.Key("campaign.step.name")
	AttrRun      = attribute.Key("campaign.step.run")
	AttrAttempt  = attribute.Key("campaign.step.attempt")
)

// Campaign returns the attributes naming a campaign and, when commandID is
// not empty, a command.
func Campaign(tenant, campaign, commandID string) []attribute.KeyValue {
	if commandID == "" {
		return []attribute.KeyValue{AttrTenant.String(tenant), AttrCampaign.String(campaign)}
	}
	return []attribute.KeyValue{AttrTenant.String(tenant), AttrCampaign.String(campaign), AttrCommand.String(commandID)}
}

// Tracer returns the service's tracer from tp, or from the global provider
// (otel.GetTracerProvider) when tp is nil.
func Tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(ScopeName)
}

// Enabled reports whether getenv asks for spans to be exported:
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set
// and OTEL_SDK_DISABLED is not "true".
func Enabled(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Setup builds the process's tracer provider and installs it, with the W3C
// TraceContext propagator, as the otel globals. When Enabled(getenv), spans
// go through a batching processor to an OTLP/HTTP exporter, which reads the
// standard variables itself (OTEL_EXPORTER_OTLP_ENDPOINT, …_HEADERS,
// …_TIMEOUT, …), as the SDK reads OTEL_TRACES_SAMPLER and the resource
// reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES. Otherwise the
// provider is a no-op: no span is recorded, traceparents pass through.
// OpenTelemetry's own errors (a failed export) are logged on log at warn.
//
// shutdown flushes the spans still buffered and stops the exporter; call it
// once, at exit, with a deadline.
func Setup(ctx context.Context, getenv func(string) string, log *slog.Logger) (tp trace.TracerProvider, shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(Propagator)
	if !Enabled(getenv) {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	if log != nil {
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("opentelemetry", "err", err) }))
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: OTLP/HTTP trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithAttributes(semconv.ServiceName(ServiceName)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		_ = exp.Shutdown(ctx)
		return nil, nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(sdk)
	return sdk, sdk.Shutdown, nil
}

// WithTraceparent returns ctx whose current span is the remote span that
// traceparent names, so that a span started from it is that span's child.
// With an empty or malformed traceparent the returned ctx has no span at
// all: a span started from it is a root, never a child of a span ctx held
// (a command drained by another command's handler is traced under its own
// traceparent, not the handler's).
func WithTraceparent(ctx context.Context, traceparent string) context.Context {
	ctx = trace.ContextWithSpanContext(ctx, trace.SpanContext{})
	if traceparent == "" {
		return ctx
	}
	return Propagator.Extract(ctx, &carrier{tp: traceparent})
}

// Traceparent returns the W3C traceparent of ctx's current span, "" when ctx
// carries no valid span context.
func Traceparent(ctx context.Context) string {
	var c carrier
	Propagator.Inject(ctx, &c)
	return c.tp
}

// TraceID returns the trace id of ctx's current span in hex, "" when ctx
// carries no valid span context.
func TraceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return sc.TraceID().String()
	}
	return ""
}

// LogAttrs returns the slog key-value pairs trace_id and span_id of ctx's
// current span, or none when ctx carries no valid span context:
// logger.With(tracing.LogAttrs(ctx)...) ties a logger's lines to the trace.
func LogAttrs(ctx context.Context) []any {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return nil
	}
	return []any{"trace_id", sc.TraceID().String(), "span_id", sc.SpanID().String()}
}

// carrier is a propagation.TextMapCarrier of the traceparent alone: NATS
// messages and inbox items carry no tracestate (CONTRACT section 4).
type carrier struct{ tp string }

func (c *carrier) Get(key string) string {
	if key == Header {
		return c.tp
	}
	return ""
}

func (c *carrier) Set(key, value string) {
	if key == Header {
		c.tp = value
	}
}

func (c *carrier) Keys() []string { return []string{Header} }

// Destination templates of the service's subjects (messaging.destination.template):
// span names carry these, never a tenant or campaign id.
const (
	CommandsTemplate = "campaign.cmd.{tenant}.{campaign}.{verb}"
	EventsTemplate   = "campaign.evt.{tenant}.{campaign}.{type}"
)

// Attributes of an apply that changes nothing (a stale advance).
const (
	AttrNoop = attribute.Key("campaign.apply.noop")
	// EventNoop is the span event of such an apply, with its reason.
	EventNoop = "no-op apply"
)

// StartProducer starts the PRODUCER span of publishing count messages on
// subject (whose template is one of CommandsTemplate, EventsTemplate), as the
// OpenTelemetry messaging conventions name it: "send <template>", with
// messaging.system nats, operation send and the destination. The messages
// published must carry Traceparent of the returned context, so that their
// consumer spans are the producer span's children; end the span once the
// publish (or the write that queues it) is done.
func StartProducer(ctx context.Context, tracer trace.Tracer, template, subject string, count int) (context.Context, trace.Span) {
	ctx, span := tracer.Start(ctx, "send "+template, trace.WithSpanKind(trace.SpanKindProducer))
	if span.IsRecording() {
		span.SetAttributes(
			semconv.MessagingSystemKey.String("nats"), semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("send"), semconv.MessagingDestinationTemplate(template),
			semconv.MessagingDestinationName(subject),
		)
		if count > 1 {
			span.SetAttributes(semconv.MessagingBatchMessageCount(count))
		}
	}
	return ctx, span
}
