package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/client"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/events/natstest"
	"github.com/campaign-orchestrator/orchestrator/streams"
)

// What a publisher meets when NATS is not there: no stream is
// jetstream.ErrNoStreamResponse; an outage runs into the context's
// deadline, and that publish may still be stored (the connection keeps it
// and sends it once it reconnects), as Publish's documentation says.
// Publishing again with the same id is then a Duplicate of that copy: the
// stream holds the command once. On a server of its own with no worker, so
// that the command stays in the stream.
func TestPublishTimeoutThenSameID(t *testing.T) {
	ns := natstest.StartRestartable(t)
	disconnected := make(chan struct{}, 1)
	nc, err := nats.Connect(ns.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.DisconnectErrHandler(func(*nats.Conn, error) {
			select {
			case disconnected <- struct{}{}:
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c := client.New(js)
	ctx := ctxT(t, 30*time.Second)

	if _, err := c.Publish(ctx, "acme", "a", client.Start{}); !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("publish with no command stream: %v, want jetstream.ErrNoStreamResponse", err)
	}
	specs, err := events.LoadSpecs(streams.FS)
	if err != nil {
		t.Fatal(err)
	}
	if err := specs.Apply(ctx, js, events.Overrides{}); err != nil {
		t.Fatal(err)
	}

	ns.Stop()
	select {
	case <-disconnected:
	case <-ctx.Done():
		t.Fatal("the connection did not see the server go")
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = c.Publish(short, "acme", "a", client.Start{}, client.WithID("retried-1"))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish during the outage: %v, want context.DeadlineExceeded", err)
	}

	ns.Start()
	r, err := c.Publish(ctx, "acme", "a", client.Start{}, client.WithID("retried-1"))
	if err != nil {
		t.Fatalf("publish again with the same id: %v", err)
	}
	stream, err := js.Stream(ctx, client.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("%d commands stored, want 1", info.State.Msgs)
	}
	stored, err := stream.GetMsg(ctx, info.State.FirstSeq)
	if err != nil || stored.Header.Get(client.HeaderMsgID) != "retried-1" {
		t.Fatalf("stored %v %v", stored, err)
	}
	// The timed-out publish was sent on reconnecting, before this one.
	if !r.Duplicate || r.Sequence != stored.Sequence || r.CommandID != "retried-1" {
		t.Fatalf("receipt %+v, want a duplicate of sequence %d", r, stored.Sequence)
	}
}
