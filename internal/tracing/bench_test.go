package tracing_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/campaign-orchestrator/orchestrator/internal/tracing"
)

// cpuTime is the user and system CPU time the process has used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// discard is a span exporter that drops what it is given.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// providers are the tracing set-ups compared by the benchmarks: none
// installed (the default without OTEL_EXPORTER_OTLP_ENDPOINT), every span
// recorded and batched to an exporter that drops them, and every span
// exported over OTLP/HTTP to a local collector that discards the body.
func providers() []struct {
	name string
	tp   func(b *testing.B) trace.TracerProvider
} {
	return []struct {
		name string
		tp   func(b *testing.B) trace.TracerProvider
	}{
		{"noop", func(*testing.B) trace.TracerProvider { return noop.NewTracerProvider() }},
		{"sdk-discard", func(b *testing.B) trace.TracerProvider {
			tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discard{}))
			b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			return tp
		}},
		{"sdk-otlp", func(b *testing.B) trace.TracerProvider {
			collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
			}))
			b.Cleanup(collector.Close)
			exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(collector.URL+"/v1/traces"))
			if err != nil {
				b.Fatal(err)
			}
			tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
			b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			return tp
		}},
	}
}

// BenchmarkCommandSpans measures the tracing work of one advance command as
// the worker does it, alone: extract the message's traceparent and start the
// handle span, keep its traceparent for the inbox item, start the apply span
// under it (linked to the drainer's), the step span and the step's client
// span, inject the client span's traceparent into the request headers, take
// the apply span's traceparent for the two commits' events, end the four
// spans. "none" is the same path without any tracing call (the string
// copies the code made before tracing).
func BenchmarkCommandSpans(b *testing.B) {
	const incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	b.Run("none", func(b *testing.B) {
		b.ReportAllocs()
		h := http.Header{}
		var sink string
		for b.Loop() {
			tp := incoming
			h.Set("traceparent", tp)
			sink = tp
		}
		_ = sink
	})
	for _, p := range providers() {
		b.Run(p.name, func(b *testing.B) {
			tracer := tracing.Tracer(p.tp(b))
			drainer, ds := tracer.Start(context.Background(), "drainer")
			defer ds.End()
			h := http.Header{}
			var sink string
			b.ReportAllocs()
			for b.Loop() {
				hctx, handle := tracer.Start(tracing.WithTraceparent(drainer, incoming), "handle advance", trace.WithSpanKind(trace.SpanKindConsumer))
				if handle.IsRecording() {
					handle.SetAttributes(semconv.MessagingSystemKey.String("nats"), semconv.MessagingDestinationName("campaign.cmd.acme.spring.advance"))
					handle.SetAttributes(tracing.Campaign("acme", "spring", "acme.spring.advance.3")...)
				}
				item := tracing.Traceparent(hctx)

				actx, apply := tracer.Start(tracing.WithTraceparent(drainer, item), "apply advance")
				if apply.IsRecording() {
					apply.SetAttributes(tracing.Campaign("acme", "spring", "acme.spring.advance.3")...)
					apply.AddLink(trace.Link{SpanContext: trace.SpanContextFromContext(drainer)})
				}
				sink = tracing.Traceparent(actx) // step.started commit
				sctx, step := tracer.Start(actx, "step segment")
				if step.IsRecording() {
					step.SetAttributes(tracing.AttrStep.String("segment"))
				}
				cctx, client := tracer.Start(sctx, "POST segment", trace.WithSpanKind(trace.SpanKindClient))
				if client.IsRecording() {
					client.SetAttributes(tracing.AttrStep.String("segment"), tracing.AttrAttempt.Int(1))
				}
				h.Set(tracing.Header, tracing.Traceparent(cctx))
				client.SetAttributes(semconv.HTTPResponseStatusCode(200))
				client.End()
				step.End()
				sink += tracing.Traceparent(actx) // step.succeeded commit
				apply.End()
				handle.End()
			}
			_ = sink
		})
	}
}

// BenchmarkCampaign runs whole campaigns through the ingress, NATS, one
// worker (8 handlers), the in-process store and an instant step service:
// every iteration is one POST /api/v1/campaigns with start=true, and the
// benchmark ends when every campaign has completed. Each campaign is 7
// commands (create, 6 advances) and 5 step calls; ns/command is ns/op / 7,
// cpu-ns/command the CPU time the whole process (NATS server included)
// spent per command, a steadier measure on a shared machine than the wall
// time. Compare the sub-benchmarks for the cost of tracing per command.
func BenchmarkCampaign(b *testing.B) {
	for _, p := range providers() {
		b.Run(p.name, func(b *testing.B) {
			s := newSystem(b, p.tp(b))
			var done atomic.Int64
			all := make(chan struct{})
			n := int64(b.N)
			sub, err := s.nc.Subscribe("campaign.evt.acme.*.completed", func(*nats.Msg) {
				if done.Add(1) == n {
					close(all)
				}
			})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = sub.Unsubscribe() }()
			if err := s.nc.Flush(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for i := range b.N {
				s.create(fmt.Sprintf("c%d", i), "")
			}
			select {
			case <-all:
			case <-time.After(time.Duration(b.N)*100*time.Millisecond + wait):
				b.Fatalf("%d of %d campaigns completed", done.Load(), b.N)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/7, "ns/command")
			b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/float64(b.N)/7, "cpu-ns/command")
			s.stop()
			if strings.Contains(s.logs.buf.String(), `"level":"ERROR"`) {
				b.Errorf("errors logged:\n%s", s.logs.buf.String())
			}
		})
	}
}
