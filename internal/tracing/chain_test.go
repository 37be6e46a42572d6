package tracing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/events/natstest"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/httpapi"
	"github.com/campaign-orchestrator/orchestrator/internal/stepclient"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/tracing"
	"github.com/campaign-orchestrator/orchestrator/internal/worker"
	"github.com/campaign-orchestrator/orchestrator/internal/workflow"
	"github.com/campaign-orchestrator/orchestrator/streams"
)

// wait bounds every wait of these tests.
const wait = 20 * time.Second

// stepCall is one request the fake step service received.
type stepCall struct {
	step, traceparent string
}

// steps is the fake step service: it records the traceparent of every call,
// resets the connection of the calls listed in reset, and holds the calls
// listed in hold until their channel is closed (telling started first).
type steps struct {
	t       testing.TB
	srv     *httptest.Server
	mu      sync.Mutex
	calls   []stepCall
	reset   map[string]int           // step → calls still to reset
	hold    map[string]chan struct{} // step → released when closed
	started chan string              // the step of every held call, when it arrives
}

func newSteps(t testing.TB) *steps {
	s := &steps{t: t, reset: map[string]int{}, hold: map[string]chan struct{}{}, started: make(chan string, 16)}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *steps) serve(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Step string `json:"step"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.calls = append(s.calls, stepCall{step: body.Step, traceparent: r.Header.Get("traceparent")})
	reset := s.reset[body.Step] > 0
	if reset {
		s.reset[body.Step]--
	}
	hold := s.hold[body.Step]
	s.mu.Unlock()
	if hold != nil {
		s.started <- body.Step
		select {
		case <-hold:
		case <-time.After(wait):
			s.t.Errorf("fake step %s held for %s", body.Step, wait)
		}
	}
	if reset {
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = conn.Close()
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"step":%q}`, body.Step)
}

// resetOnce makes the next call of step fail with a connection reset.
func (s *steps) resetOnce(step string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reset[step]++
}

// holdCalls makes the calls of step wait until release is closed.
func (s *steps) holdCalls(step string, release chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold[step] = release
}

func (s *steps) Calls() []stepCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]stepCall(nil), s.calls...)
}

// logBuffer collects log lines written concurrently.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns every JSON line written, decoded.
func (b *logBuffer) lines(t testing.TB) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// system is the ingress and one worker on an embedded NATS server, the
// in-process store and the fake step service, all tracing with one provider.
type system struct {
	t     testing.TB
	nc    *nats.Conn
	js    jetstream.JetStream
	api   http.Handler
	steps *steps
	logs  *logBuffer
	stop  func() // stops the worker and waits for its handlers
}

func newSystem(t testing.TB, tp trace.TracerProvider) *system {
	t.Helper()
	srv := natstest.Start(t)
	nc, js := natstest.Connect(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	specs, err := events.LoadSpecs(streams.FS)
	if err != nil {
		t.Fatal(err)
	}
	if err := specs.Apply(ctx, js, events.Overrides{}); err != nil {
		t.Fatal(err)
	}
	st := store.NewMemory(store.Options{})
	t.Cleanup(func() { _ = st.Close() })
	s := &system{t: t, nc: nc, js: js, steps: newSteps(t), logs: &logBuffer{}}
	log := slog.New(slog.NewJSONHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	wf := workflow.Default(s.steps.srv.URL)
	client := stepclient.New(stepclient.Config{BackoffBase: 10 * time.Millisecond, Timeout: 5 * time.Second, TracerProvider: tp})
	w, err := worker.New(ctx, worker.Config{Workers: 8, LockTTL: 5 * time.Second, Grace: 5 * time.Second, FetchWait: 100 * time.Millisecond, HealthEvery: 100 * time.Millisecond},
		worker.Deps{JS: js, Store: st, Steps: client, Workflows: wf, Logger: log, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	api, err := httpapi.New(httpapi.Config{}, httpapi.Deps{JS: js, NC: nc, Store: st, Workflows: wf, Logger: log,
		Registry: prometheus.NewRegistry(), TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	s.api = api.Handler()
	runCtx, stopRun := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(runCtx); err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			stopRun()
			select {
			case <-done:
			case <-time.After(wait):
				t.Errorf("worker still running %s after stop", wait)
			}
		})
	}
	t.Cleanup(s.stop)
	return s
}

// create posts a campaign with start=true for tenant acme and returns the
// command id; traceparent, when not empty, is sent with the request.
func (s *system) create(campaign, traceparent string) string {
	s.t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/api/v1/campaigns",
		strings.NewReader(fmt.Sprintf(`{"campaign_id":%q,"name":"Spring sale","start":true}`, campaign)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Tenant-ID", "acme")
	if traceparent != "" {
		req.Header.Set("traceparent", traceparent)
	}
	rec := httptest.NewRecorder()
	s.api.ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted {
		s.t.Fatalf("POST /api/v1/campaigns: %d %s", rec.Code, rec.Body)
	}
	var body struct {
		CommandID string `json:"command_id"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		s.t.Fatal(err)
	}
	return body.CommandID
}

// eventWatch receives a campaign's events as published.
type eventWatch struct {
	t    testing.TB
	ch   chan *nats.Msg
	msgs []*nats.Msg
}

func (s *system) watch(campaign string) *eventWatch {
	s.t.Helper()
	ew := &eventWatch{t: s.t, ch: make(chan *nats.Msg, 256)}
	sub, err := s.nc.ChanSubscribe(events.CampaignEvents("acme", campaign), ew.ch)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := s.nc.Flush(); err != nil {
		s.t.Fatal(err)
	}
	return ew
}

// until waits for an event of type typ and returns every event so far.
func (ew *eventWatch) until(typ string) []*nats.Msg {
	ew.t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case m := <-ew.ch:
			ew.msgs = append(ew.msgs, m)
			if strings.HasSuffix(m.Subject, "."+strings.TrimPrefix(typ, "campaign.")) {
				return ew.msgs
			}
		case <-deadline:
			ew.t.Fatalf("no %s event after %s (got %d events)", typ, wait, len(ew.msgs))
		}
	}
}

func traceIDOf(t testing.TB, traceparent string) (trace.TraceID, trace.SpanID) {
	t.Helper()
	sc := trace.SpanContextFromContext(tracing.WithTraceparent(context.Background(), traceparent))
	if !sc.IsValid() {
		t.Fatalf("invalid traceparent %q", traceparent)
	}
	return sc.TraceID(), sc.SpanID()
}

func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}

// TestOneTraceAcrossTheChain: a POST /api/v1/campaigns with start=true goes
// through the ingress, NATS, the worker, the step calls and the events; every
// span, every traceparent the steps receive and every event's traceparent
// belong to one trace, and each span's parent is the hop before it.
func TestOneTraceAcrossTheChain(t *testing.T) {
	for _, tc := range []struct {
		name, incoming string
	}{
		{"new trace", ""},
		{"incoming traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			s := newSystem(t, tp)
			s.steps.resetOnce("segment") // one network error: a retry, a second client span
			ew := s.watch("spring")
			cmdID := s.create("spring", tc.incoming)
			evs := ew.until(fsm.EvCompleted)
			s.stop() // every handler, so every span, has ended

			spans := rec.Ended()
			byName := map[string][]sdktrace.ReadOnlySpan{}
			byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
			for _, sp := range spans {
				byName[strings.Fields(sp.Name())[0]] = append(byName[strings.Fields(sp.Name())[0]], sp)
				byID[sp.SpanContext().SpanID()] = sp
			}
			var servers, clients []sdktrace.ReadOnlySpan
			for _, sp := range byName["POST"] {
				switch sp.SpanKind() {
				case trace.SpanKindServer:
					servers = append(servers, sp)
				case trace.SpanKindClient:
					clients = append(clients, sp)
				}
			}
			if len(servers) != 1 || servers[0].Name() != "POST /api/v1/campaigns" {
				t.Fatalf("server spans %v, want one POST /api/v1/campaigns", names(servers))
			}
			server := servers[0]
			want := server.SpanContext().TraceID()
			if tc.incoming != "" {
				inTrace, inSpan := traceIDOf(t, tc.incoming)
				if want != inTrace || server.Parent().SpanID() != inSpan || !server.Parent().IsRemote() {
					t.Fatalf("server span %s under %s, want a child of the incoming %s", server.SpanContext().TraceID(), server.Parent().SpanID(), tc.incoming)
				}
			} else if server.Parent().IsValid() {
				t.Fatalf("server span has parent %s without an incoming traceparent", server.Parent().SpanID())
			}
			// One message, the create: the advances are the lock holder's
			// own, parked in the inbox. The create, one advance per step (5)
			// and the advance that completes are each applied in their own
			// span (a step's result is written before the next advance is
			// applied).
			if n := len(byName["handle"]); n < 1 {
				t.Errorf("%d handle spans, want 1 or more: %v", n, names(spans))
			}
			applied := map[string]bool{}
			for _, sp := range byName["apply"] {
				applied[attr(sp, string(tracing.AttrCommand))] = true
			}
			if len(applied) != 7 || !applied[cmdID] {
				t.Errorf("commands applied %v, want %s and 6 advances", applied, cmdID)
			}
			if n := len(byName["step"]); n != 5 {
				t.Errorf("%d step spans, want 5: %v", n, names(spans))
			}
			if n := len(clients); n != 6 {
				t.Errorf("%d step client spans, want 6 (5 steps, one retried): %v", n, names(spans))
			}
			for _, sp := range spans {
				if sp.SpanContext().TraceID() != want {
					t.Errorf("span %q in trace %s, want %s", sp.Name(), sp.SpanContext().TraceID(), want)
				}
			}
			// Each hop is the child of the one before it.
			parentIs := func(sp sdktrace.ReadOnlySpan, prefixes ...string) {
				t.Helper()
				p, ok := byID[sp.Parent().SpanID()]
				if !ok {
					t.Errorf("span %q: parent %s not recorded", sp.Name(), sp.Parent().SpanID())
					return
				}
				for _, prefix := range prefixes {
					if strings.HasPrefix(p.Name(), prefix) {
						return
					}
				}
				t.Errorf("span %q is a child of %q, want one of %v", sp.Name(), p.Name(), prefixes)
			}
			for _, sp := range byName["handle"] {
				// A command's consumer span is the child of its producer span.
				parentIs(sp, "send "+tracing.CommandsTemplate)
				if p, ok := byID[sp.Parent().SpanID()]; ok {
					if sp.Name() == "handle create" {
						parentIs(p, "POST /api/v1/campaigns")
						if got := attr(sp, string(tracing.AttrCommand)); got != cmdID {
							t.Errorf("handle create: command id %q, want %q", got, cmdID)
						}
					} else {
						parentIs(p, "apply ") // an advance, published by the apply before it
					}
				}
				if sp.SpanKind() != trace.SpanKindConsumer {
					t.Errorf("span %q kind %s, want consumer", sp.Name(), sp.SpanKind())
				}
			}
			// An item is applied under the span that parked it: its handling,
			// or, when the drainer read it ahead from the stream before its
			// handler parked it, the span that published it.
			// Producer spans: one per publish of commands or events, the
			// child of the request's server span or of an apply.
			if n := len(byName["send"]); n < 8 {
				t.Errorf("%d producer spans, want 8 or more: %v", n, names(spans))
			}
			for _, sp := range byName["send"] {
				parentIs(sp, "POST /api/v1/campaigns", "apply ")
				if sp.SpanKind() != trace.SpanKindProducer || attr(sp, "messaging.system") != "nats" || attr(sp, "messaging.operation.type") != "send" {
					t.Errorf("span %q: kind %s, messaging.system %q, operation %q; want producer, nats, send",
						sp.Name(), sp.SpanKind(), attr(sp, "messaging.system"), attr(sp, "messaging.operation.type"))
				}
			}
			// An apply span with nothing under it is marked as a no-op.
			children := map[trace.SpanID]int{}
			for _, sp := range spans {
				children[sp.Parent().SpanID()]++
			}
			for _, sp := range byName["apply"] {
				if children[sp.SpanContext().SpanID()] == 0 && attr(sp, string(tracing.AttrNoop)) != "true" {
					t.Errorf("span %q (command %s) has no children and is not marked %s", sp.Name(), attr(sp, string(tracing.AttrCommand)), tracing.AttrNoop)
				}
			}
			// An external command is applied under its handling; an
			// advance, parked by the apply before it, under that apply.
			for _, sp := range byName["apply"] {
				parentIs(sp, "handle ", "apply ")
				p := byID[sp.Parent().SpanID()]
				if p != nil && strings.HasPrefix(p.Name(), "handle ") && attr(p, string(tracing.AttrCommand)) != attr(sp, string(tracing.AttrCommand)) {
					t.Errorf("span %q applies command %s under the handling of %s", sp.Name(), attr(sp, string(tracing.AttrCommand)), attr(p, string(tracing.AttrCommand)))
				}
			}
			for _, sp := range byName["step"] {
				parentIs(sp, "apply advance")
			}
			for _, sp := range clients {
				parentIs(sp, "step ")
			}

			// The step service received the client spans' traceparents.
			calls := s.steps.Calls()
			if len(calls) != len(clients) {
				t.Errorf("%d step calls, %d client spans", len(calls), len(clients))
			}
			for _, c := range calls {
				tid, sid := traceIDOf(t, c.traceparent)
				sp, ok := byID[sid]
				if tid != want || !ok || sp.SpanKind() != trace.SpanKindClient || attr(sp, string(tracing.AttrStep)) != c.step {
					t.Errorf("step %s received traceparent %s: not a client span of %s in trace %s", c.step, c.traceparent, c.step, want)
				}
			}

			// Every event carries the traceparent of the producer span of the
			// apply that emitted it.
			var types []string
			for _, m := range evs {
				types = append(types, m.Header.Get("Nats-Msg-Id"))
				tp := m.Header.Get("traceparent")
				if tp == "" {
					t.Errorf("event %s without traceparent", m.Subject)
					continue
				}
				tid, sid := traceIDOf(t, tp)
				if sp, ok := byID[sid]; tid != want || !ok || sp.Name() != "send "+tracing.EventsTemplate {
					t.Errorf("event %s: traceparent %s is not a producer span of trace %s", m.Subject, tp, want)
				} else {
					parentIs(sp, "apply ")
				}
			}
			if len(evs) != 14 { // created, started, 5×(step.started, step.succeeded), step.retrying, completed
				t.Errorf("%d events, want 14: %v", len(evs), types)
			}

		})
	}
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, sp := range spans {
		out = append(out, sp.Name())
	}
	return out
}

// endNotifier is a span processor that tells when a span of a given name
// ends.
type endNotifier struct {
	name string
	ch   chan sdktrace.ReadOnlySpan
}

func (n *endNotifier) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (n *endNotifier) OnEnd(s sdktrace.ReadOnlySpan) {
	if s.Name() == n.name {
		select {
		case n.ch <- s:
		default:
		}
	}
}
func (n *endNotifier) Shutdown(context.Context) error   { return nil }
func (n *endNotifier) ForceFlush(context.Context) error { return nil }

// TestParkedCommandKeepsItsTrace: a pause published on NATS, with its own
// traceparent, while the campaign's step runs is parked in the inbox and
// applied later by the lock holder; its apply span is in the pause's trace
// (a child of its own handling, linked to the holder's span), and so is
// campaign.paused, not in the holder's trace.
func TestParkedCommandKeepsItsTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	parked := &endNotifier{name: "handle pause", ch: make(chan sdktrace.ReadOnlySpan, 1)}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSpanProcessor(parked))
	s := newSystem(t, tp)
	release := make(chan struct{})
	s.steps.holdCalls("validate", release)
	ew := s.watch("busy")
	s.create("busy", "")
	select {
	case <-s.steps.started:
	case <-time.After(wait):
		t.Fatalf("validate not called after %s", wait)
	}

	const pauseTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	pauseTrace, pauseParent := traceIDOf(t, pauseTP)
	msg := events.NewCommandMsg(events.CommandEnvelope{ID: "pause-1", Type: string(fsm.Pause), TenantID: "acme", CampaignID: "busy"}, pauseTP)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := s.js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	// The pause's own handler parks it (the campaign is busy) and ends.
	var handled sdktrace.ReadOnlySpan
	select {
	case handled = <-parked.ch:
	case <-time.After(wait):
		t.Fatalf("pause not handled after %s", wait)
	}
	close(release)
	evs := ew.until(fsm.EvPaused)
	s.stop()

	if handled.SpanContext().TraceID() != pauseTrace || handled.Parent().SpanID() != pauseParent {
		t.Fatalf("handle pause in trace %s under %s, want trace %s under %s",
			handled.SpanContext().TraceID(), handled.Parent().SpanID(), pauseTrace, pauseParent)
	}
	var apply sdktrace.ReadOnlySpan
	for _, sp := range rec.Ended() {
		if sp.Name() == "apply pause" {
			apply = sp
		}
	}
	if apply == nil {
		t.Fatal("no apply pause span")
	}
	if apply.SpanContext().TraceID() != pauseTrace || apply.Parent().SpanID() != handled.SpanContext().SpanID() {
		t.Fatalf("apply pause in trace %s under %s, want a child of its handling %s in trace %s",
			apply.SpanContext().TraceID(), apply.Parent().SpanID(), handled.SpanContext().SpanID(), pauseTrace)
	}
	if links := apply.Links(); len(links) != 1 || links[0].SpanContext.TraceID() == pauseTrace {
		t.Fatalf("apply pause links %v, want one link to the lock holder's span in the campaign's trace", links)
	}
	last := evs[len(evs)-1]
	var send sdktrace.ReadOnlySpan
	for _, sp := range rec.Ended() {
		if sp.Name() == "send "+tracing.EventsTemplate && sp.Parent().SpanID() == apply.SpanContext().SpanID() {
			send = sp
		}
	}
	if send == nil {
		t.Fatal("no producer span under apply pause")
	}
	if tid, sid := traceIDOf(t, last.Header.Get("traceparent")); tid != pauseTrace || sid != send.SpanContext().SpanID() {
		t.Fatalf("campaign.paused traceparent %s, want apply pause's producer span %s", last.Header.Get("traceparent"), send.SpanContext().SpanID())
	}
	for _, m := range evs[:len(evs)-1] {
		if tid, _ := traceIDOf(t, m.Header.Get("traceparent")); tid == pauseTrace {
			t.Errorf("event %s in the pause's trace", m.Subject)
		}
	}
}

// TestCampaignLogLines runs a campaign through the ingress and the worker
// (one step retried), then a pause the state machine rejects and an invalid
// command on NATS, and checks the JSON logs: every line about the campaign
// names its tenant_id, campaign_id, command_id, trace_id and span_id, and a
// line about a step its step and attempt.
func TestCampaignLogLines(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	s := newSystem(t, tp)
	s.steps.resetOnce("segment")
	ew := s.watch("spring")
	s.create("spring", "")
	ew.until(fsm.EvCompleted)

	req := httptest.NewRequest(http.MethodPost, "/api/v1/campaigns/spring/pause", nil)
	req.Header.Set("X-Tenant-ID", "acme")
	rec := httptest.NewRecorder()
	s.api.ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("pause: %d %s", rec.Code, rec.Body)
	}
	ew.until(fsm.EvRejected)
	bad := &nats.Msg{Subject: events.CommandSubject("acme", "spring", fsm.Resume), Header: nats.Header{}, Data: []byte("not json")}
	bad.Header.Set(nats.MsgIdHdr, "bad-1")
	bad.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := s.js.PublishMsg(ctx, bad); err != nil {
		t.Fatal(err)
	}
	ew.until(fsm.EvRejected)
	s.stop()

	lines := s.logs.lines(t)
	seen := map[string]int{}
	for _, l := range lines {
		if _, ok := l["campaign_id"]; !ok {
			continue
		}
		msg, _ := l["msg"].(string)
		seen[msg]++
		for _, k := range []string{"tenant_id", "campaign_id", "command_id", "trace_id", "span_id"} {
			if v, _ := l[k].(string); v == "" {
				t.Errorf("log line %q without %s: %v", msg, k, l)
			}
		}
		if strings.Contains(msg, "step") {
			if _, ok := l["step"].(string); !ok {
				t.Errorf("log line %q without step: %v", msg, l)
			}
			if _, ok := l["attempt"].(float64); !ok {
				t.Errorf("log line %q without attempt: %v", msg, l)
			}
		}
	}
	for msg, n := range map[string]int{
		"step succeeded": 5, "step attempt failed: retrying": 1,
		"command rejected": 1, "invalid command: dead-lettered": 1,
	} {
		if seen[msg] != n {
			t.Errorf("%d log lines %q about the campaign, want %d (all: %v)", seen[msg], msg, n, seen)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("logs:\n%s", s.logs.buf.String())
	}
}

// traceEnd is a span processor that hands over the spans of one trace as
// they end.
type traceEnd struct {
	trace trace.TraceID
	ch    chan sdktrace.ReadOnlySpan
}

func (n *traceEnd) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (n *traceEnd) OnEnd(s sdktrace.ReadOnlySpan) {
	if s.SpanContext().TraceID() == n.trace {
		n.ch <- s
	}
}
func (n *traceEnd) Shutdown(context.Context) error   { return nil }
func (n *traceEnd) ForceFlush(context.Context) error { return nil }

// TestStaleApplyIsMarked: an advance that no longer matches its campaign
// (here, one for a completed campaign) is applied as a no-op; its apply span
// says so (campaign.apply.noop and an event) and publishes nothing.
func TestStaleApplyIsMarked(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tid, _ := traceIDOf(t, tp)
	ends := &traceEnd{trace: tid, ch: make(chan sdktrace.ReadOnlySpan, 16)}
	s := newSystem(t, sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(ends)))
	ew := s.watch("spring")
	s.create("spring", "")
	ew.until(fsm.EvCompleted)

	stale := events.AdvanceMsg(fsm.Campaign{Tenant: "acme", ID: "spring", AdvanceVersion: 1}, tp)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := s.js.PublishMsg(ctx, stale); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		select {
		case sp := <-ends.ch:
			got = append(got, sp.Name())
			if sp.Name() != "apply advance" {
				continue
			}
			if attr(sp, string(tracing.AttrNoop)) != "true" {
				t.Errorf("stale apply advance without %s=true: %v", tracing.AttrNoop, sp.Attributes())
			}
			var evs []string
			for _, e := range sp.Events() {
				evs = append(evs, e.Name)
			}
			if len(evs) != 1 || evs[0] != tracing.EventNoop {
				t.Errorf("stale apply advance events %v, want [%s]", evs, tracing.EventNoop)
			}
			s.stop()
			for _, name := range got {
				if strings.HasPrefix(name, "send ") || strings.HasPrefix(name, "step ") {
					t.Errorf("stale apply did work: span %q", name)
				}
			}
			return
		case <-ctx.Done():
			t.Fatalf("no apply advance in the stale advance's trace after %s (spans: %v)", wait, got)
		}
	}
}
