package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/events/natstest"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/streams"
)

// mustJetStream starts a server, applies streams/*.json and returns a
// JetStream context on it.
func mustJetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	srv := natstest.Start(t)
	_, js := natstest.Connect(t, srv)
	specs, err := events.LoadSpecs(streams.FS)
	if err != nil {
		t.Fatalf("LoadSpecs: %v", err)
	}
	if err := specs.Apply(testCtx(t), js, events.Overrides{}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return js
}

// testCtx is a context bounded by a deadline and the test's end.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// mustStream returns the handle of a stream.
func mustStream(t testing.TB, js jetstream.JetStream, name string) jetstream.Stream {
	t.Helper()
	s, err := js.Stream(testCtx(t), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s
}

// workflows is a fake events.Workflows.
type workflows map[string]fsm.Workflow

func (w workflows) Get(name string) (fsm.Workflow, bool) {
	wf, ok := w[name]
	return wf, ok
}

var testWorkflows = workflows{
	"standard": {Name: "standard", Steps: []fsm.Step{{Name: "validate"}, {Name: "segment"}}},
	"short":    {Name: "short", Steps: []fsm.Step{{Name: "only"}}},
}
