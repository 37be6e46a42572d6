package tracing_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/campaign-orchestrator/orchestrator/internal/tracing"
)

const tp1 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

func TestTraceparentRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"sampled", tp1, tp1},
		{"not sampled", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},
		{"empty", "", ""},
		{"malformed", "00-xyz-b7ad6b7169203331-01", ""},
		{"upper case", "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01", ""},
		{"zero trace id", "00-00000000000000000000000000000000-b7ad6b7169203331-01", ""},
		{"version ff", "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := tracing.WithTraceparent(context.Background(), tc.in)
			if got := tracing.Traceparent(ctx); got != tc.want {
				t.Fatalf("Traceparent(WithTraceparent(%q)) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestWithTraceparentReplacesTheCurrentSpan: a span started under
// WithTraceparent is a child of that traceparent, or a root, never of the
// span ctx held before.
func TestWithTraceparentReplacesTheCurrentSpan(t *testing.T) {
	tracer := tracing.Tracer(sdktrace.NewTracerProvider())
	holder, hs := tracer.Start(context.Background(), "holder")
	defer hs.End()

	_, own := tracer.Start(tracing.WithTraceparent(holder, tp1), "own")
	if got := own.SpanContext().TraceID().String(); got != "0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("child of tp1 in trace %s", got)
	}
	_, root := tracer.Start(tracing.WithTraceparent(holder, ""), "root")
	if root.SpanContext().TraceID() == hs.SpanContext().TraceID() {
		t.Errorf("span without a traceparent joined the holder's trace")
	}
	if got := tracing.Traceparent(tracing.WithTraceparent(holder, "")); got != "" {
		t.Errorf("Traceparent after clearing = %q", got)
	}
}

// TestNoopPassesThrough: without an SDK, a span started under a traceparent
// carries it unchanged, and without one carries none.
func TestNoopPassesThrough(t *testing.T) {
	tracer := tracing.Tracer(noop.NewTracerProvider())
	ctx, span := tracer.Start(tracing.WithTraceparent(context.Background(), tp1), "x")
	defer span.End()
	if got := tracing.Traceparent(ctx); got != tp1 {
		t.Errorf("noop span traceparent %q, want %q", got, tp1)
	}
	if span.IsRecording() {
		t.Errorf("noop span records")
	}
	ctx, _ = tracer.Start(context.Background(), "y")
	if got := tracing.Traceparent(ctx); got != "" {
		t.Errorf("noop root traceparent %q, want none", got)
	}
}

func TestLogAttrs(t *testing.T) {
	if got := tracing.LogAttrs(context.Background()); got != nil {
		t.Errorf("LogAttrs without span = %v", got)
	}
	got := tracing.LogAttrs(tracing.WithTraceparent(context.Background(), tp1))
	want := []any{"trace_id", "0af7651916cd43dd8448eb211c80319c", "span_id", "b7ad6b7169203331"}
	if len(got) != len(want) {
		t.Fatalf("LogAttrs = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("LogAttrs = %v, want %v", got, want)
		}
	}
	if id := tracing.TraceID(tracing.WithTraceparent(context.Background(), tp1)); id != "0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("TraceID = %q", id)
	}
}

func TestEnabled(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, false},
		{map[string]string{"OTEL_SERVICE_NAME": "x"}, false},
	} {
		if got := tracing.Enabled(func(k string) string { return tc.env[k] }); got != tc.want {
			t.Errorf("Enabled(%v) = %v, want %v", tc.env, got, tc.want)
		}
	}
}

// restoreGlobals undoes what Setup did to the otel globals: a provider it
// installed is replaced with a no-op one (the default global has delegated
// to it for good), and the propagator is put back.
func restoreGlobals(t *testing.T) {
	tp, prop := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	t.Cleanup(func() {
		if otel.GetTracerProvider() != tp {
			otel.SetTracerProvider(noop.NewTracerProvider())
		}
		if otel.GetTextMapPropagator() != prop {
			otel.SetTextMapPropagator(prop)
		}
	})
}

func TestSetupWithoutEndpointIsNoop(t *testing.T) {
	restoreGlobals(t)
	tp, shutdown, err := tracing.Setup(context.Background(), func(string) string { return "" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, span := tracing.Tracer(tp).Start(context.Background(), "x"); span.IsRecording() || span.SpanContext().IsValid() {
		t.Errorf("span of the provider without endpoint records or has ids")
	}
	if err := shutdown(context.Background()); err != nil {
		t.Error(err)
	}
}

// TestSetupExportsOverOTLPHTTP: with OTEL_EXPORTER_OTLP_ENDPOINT set, the
// spans reach the collector's /v1/traces as OTLP protobuf when the provider
// shuts down.
func TestSetupExportsOverOTLPHTTP(t *testing.T) {
	restoreGlobals(t)
	got := make(chan *http.Request, 4)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		got <- r
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_SERVICE_NAME", "orchestrator-test")

	tp, shutdown, err := tracing.Setup(context.Background(), func(k string) string {
		if k == "OTEL_EXPORTER_OTLP_ENDPOINT" {
			return collector.URL
		}
		return ""
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if otel.GetTracerProvider() != tp {
		t.Errorf("Setup did not install its provider globally")
	}
	ctx, span := tracing.Tracer(nil).Start(tracing.WithTraceparent(context.Background(), tp1), "exported")
	if !span.IsRecording() || trace.SpanContextFromContext(ctx).TraceID().String() != "0af7651916cd43dd8448eb211c80319c" {
		t.Fatalf("span not recording in the incoming trace")
	}
	span.End()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("export %s %s (%s), want POST /v1/traces application/x-protobuf", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
	default:
		t.Fatal("nothing exported after shutdown")
	}
}
