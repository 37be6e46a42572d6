package deadletter_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/deadletter"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/events/natstest"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/streams"
)

// Consumer settings of these tests: a message is poison after 2 deliveries
// left unacknowledged for ackWait each.
const (
	maxDeliver = 2
	ackWait    = 200 * time.Millisecond
)

type env struct {
	t   *testing.T
	url string
	nc  *nats.Conn
	js  jetstream.JetStream
}

// newEnv runs a server with the streams of streams/ and the consumer tuned
// to maxDeliver and ackWait.
func newEnv(t *testing.T) *env {
	t.Helper()
	srv := natstest.Start(t)
	nc, js := natstest.Connect(t, srv)
	specs, err := events.LoadSpecs(streams.FS)
	if err != nil {
		t.Fatal(err)
	}
	specs.Consumer.AckWait, specs.Consumer.BackOff, specs.Consumer.MaxDeliver = ackWait, nil, maxDeliver
	if err := specs.Apply(testCtx(t), js, events.Overrides{}); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, url: srv.ClientURL(), nc: nc, js: js}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connect opens another connection (another orchestrator instance).
func (e *env) connect() jetstream.JetStream {
	e.t.Helper()
	nc, err := nats.Connect(e.url)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	return js
}

// publish sends a command (with a traceparent) and returns its sequence.
func (e *env) publish(tenant, campaign string, verb fsm.Verb, id string) uint64 {
	e.t.Helper()
	m := events.NewCommandMsg(events.CommandEnvelope{ID: id, Type: string(verb), TenantID: tenant, CampaignID: campaign}, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	ack, err := e.js.PublishMsg(testCtx(e.t), m)
	if err != nil {
		e.t.Fatalf("publish %s: %v", id, err)
	}
	return ack.Sequence
}

// poison makes the message seq reach max_deliver: it is fetched and never
// acknowledged, as by a handler that keeps failing, until the server gave up
// on it (nothing pending any more). Pull requests stay open meanwhile, as a
// running worker's do: the server acts on max_deliver when it has one.
func (e *env) poison(seq uint64) {
	e.t.Helper()
	ctx := testCtx(e.t)
	cons, err := e.js.Consumer(ctx, events.StreamCommands, events.ConsumerName)
	if err != nil {
		e.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := cons.Info(ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		if info.Delivered.Stream >= seq && info.NumAckPending == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("message %d not given up after 10s: %+v", seq, info)
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(ackWait))
		if err != nil {
			e.t.Fatal(err)
		}
		for m := range batch.Messages() {
			if md, err := m.Metadata(); err != nil || md.Sequence.Stream != seq {
				e.t.Fatalf("fetched %v (%v), want sequence %d", md, err, seq)
			}
		}
	}
}

// dlq returns every dead letter.
func (e *env) dlq() []deadletter.Entry {
	e.t.Helper()
	entries, err := deadletter.List(testCtx(e.t), e.js)
	if err != nil {
		e.t.Fatal(err)
	}
	return entries
}

// inCommands reports whether CAMPAIGN_COMMANDS still holds seq.
func (e *env) inCommands(seq uint64) bool {
	e.t.Helper()
	ctx := testCtx(e.t)
	s, err := e.js.Stream(ctx, events.StreamCommands)
	if err != nil {
		e.t.Fatal(err)
	}
	_, err = s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return true
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// outcomes collects what Reapers observed.
type outcomes struct {
	mu  sync.Mutex
	all []deadletter.Outcome
}

func (o *outcomes) observe(x deadletter.Outcome) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.all = append(o.all, x)
}

func (o *outcomes) list() []deadletter.Outcome {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]deadletter.Outcome(nil), o.all...)
}
