package deadletter_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/deadletter"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// newReaper builds a Reaper on js that only sweeps when told (SweepEvery of
// an hour) and records its outcomes.
func newReaper(t *testing.T, js jetstream.JetStream, o *outcomes) *deadletter.Reaper {
	t.Helper()
	r, err := deadletter.New(testCtx(t), deadletter.Config{SweepEvery: time.Hour, Observe: o.observe}, deadletter.Deps{JS: js})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// run runs r until the test ends.
func run(t *testing.T, r *deadletter.Reaper) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := r.Run(ctx); err != nil {
			t.Errorf("reaper: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// checkCopy checks the one dead letter of a poison message.
func checkCopy(t *testing.T, e deadletter.Entry, seq uint64, id string) {
	t.Helper()
	if e.Subject != "campaign.dlq.acme.c1" || e.OriginalSubject != "campaign.cmd.acme.c1.start" || e.OriginalSeq != seq || e.CommandID != id {
		t.Errorf("dead letter = %+v, want campaign.dlq.acme.c1 of campaign.cmd.acme.c1.start #%d, command %s", e, seq, id)
	}
	if !strings.Contains(e.Reason, "max deliveries") || !strings.Contains(e.Reason, fmt.Sprint(maxDeliver)) {
		t.Errorf("reason = %q, want max deliveries (%d)", e.Reason, maxDeliver)
	}
	if got, want := e.Header.Get(nats.MsgIdHdr), deadletter.MaxDeliverMsgID(seq); got != want {
		t.Errorf("Nats-Msg-Id = %q, want %q", got, want)
	}
	if e.Header.Get(events.HdrCommandID) != id {
		t.Errorf("Command-Id = %q, want %q", e.Header.Get(events.HdrCommandID), id)
	}
	if e.Header.Get(events.HdrTraceparent) == "" {
		t.Errorf("traceparent not kept: %v", e.Header)
	}
}

// Two instances receive the same MAX_DELIVERIES advisory: one DLQ entry,
// and the command leaves the work queue.
func TestAdvisoryTwoInstancesOneEntry(t *testing.T) {
	e := newEnv(t)
	var o1, o2 outcomes
	run(t, newReaper(t, e.connect(), &o1))
	run(t, newReaper(t, e.connect(), &o2))

	seq := e.publish("acme", "c1", fsm.Start, "cmd-poison")
	e.poison(seq)
	handled := func(o *outcomes) *deadletter.Outcome {
		for _, x := range o.list() {
			if x.StreamSeq == seq && x.Source == "advisory" {
				return &x
			}
		}
		return nil
	}
	waitFor(t, 10*time.Second, "both instances handling the advisory", func() bool { return handled(&o1) != nil && handled(&o2) != nil })
	a, b := handled(&o1), handled(&o2)
	if a.Err != nil || b.Err != nil {
		t.Fatalf("outcomes %+v, %+v", a, b)
	}
	if (a.Result == deadletter.Stored) == (b.Result == deadletter.Stored) {
		t.Fatalf("results %s and %s: want exactly one %s", a.Result, b.Result, deadletter.Stored)
	}
	entries := e.dlq()
	if len(entries) != 1 {
		t.Fatalf("%d dead letters, want 1: %+v", len(entries), entries)
	}
	checkCopy(t, entries[0], seq, "cmd-poison")
	if e.inCommands(seq) {
		t.Fatalf("poison message %d still in %s", seq, events.StreamCommands)
	}
}

// An advisory nobody heard: the sweep finds the leftover on its second pass,
// dead-letters it once, and leaves undelivered commands alone.
func TestSweepLeftover(t *testing.T) {
	e := newEnv(t)
	seq := e.publish("acme", "c1", fsm.Start, "cmd-leftover")
	e.poison(seq) // nobody subscribed: the advisory is lost
	waiting := e.publish("acme", "c2", fsm.Start, "cmd-waiting")

	var o outcomes
	r := newReaper(t, e.js, &o)
	ctx := testCtx(t)
	sweep := func(want int) {
		t.Helper()
		n, err := r.Sweep(ctx)
		if err != nil || n != want {
			t.Fatalf("Sweep = %d, %v; want %d", n, err, want)
		}
	}
	sweep(0) // first seen: a suspect only
	if len(e.dlq()) != 0 || !e.inCommands(seq) {
		t.Fatal("first sweep acted on a suspect")
	}
	sweep(1)
	entries := e.dlq()
	if len(entries) != 1 {
		t.Fatalf("%d dead letters, want 1", len(entries))
	}
	checkCopy(t, entries[0], seq, "cmd-leftover")
	if got := o.list(); len(got) != 1 || got[0].Result != deadletter.Stored || got[0].Source != "sweep" || got[0].DLQSeq != entries[0].Seq {
		t.Fatalf("outcomes = %+v", got)
	}
	if e.inCommands(seq) {
		t.Fatal("leftover still in the work queue")
	}
	if !e.inCommands(waiting) {
		t.Fatal("an undelivered command was removed")
	}
	sweep(0)
	sweep(0)
	if len(e.dlq()) != 1 {
		t.Fatal("later sweeps added dead letters")
	}
}

// An instance stopped after storing the copy and before deleting the
// command; a sweep long after the DLQ's duplicate window (simulated: the
// copy has no Nats-Msg-Id) finds the copy and only deletes the command.
func TestSweepFindsExistingCopy(t *testing.T) {
	e := newEnv(t)
	seq := e.publish("acme", "c1", fsm.Start, "cmd-half-done")
	e.poison(seq)
	ctx := testCtx(t)
	cmds, err := e.js.Stream(ctx, events.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := cmds.GetMsg(ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	// Copies of another command with the same sequence number do not count:
	// another subject, or the same subject and another command id (as after
	// the stream was recreated).
	for _, o := range []struct{ subject, id string }{{"campaign.cmd.acme.c9.start", "cmd-half-done"}, {raw.Subject, "cmd-older"}} {
		other := events.NewDeadLetterMsg(&nats.Msg{Subject: o.subject, Header: nats.Header{}, Data: raw.Data},
			&events.InvalidCommand{ID: o.id, Tenant: "acme", Campaign: "c1", Reason: "earlier"}, seq)
		if _, err := e.js.PublishMsg(ctx, other); err != nil {
			t.Fatal(err)
		}
	}
	copyMsg := events.NewDeadLetterMsg(&nats.Msg{Subject: raw.Subject, Header: raw.Header, Data: raw.Data},
		&events.InvalidCommand{ID: "cmd-half-done", Tenant: "acme", Campaign: "c1", Reason: "max deliveries: by a stopped instance"}, seq)
	ack, err := e.js.PublishMsg(ctx, copyMsg)
	if err != nil {
		t.Fatal(err)
	}

	var o outcomes
	r := newReaper(t, e.js, &o)
	for range 2 {
		if _, err := r.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := o.list()
	if len(got) != 1 || got[0].Result != deadletter.AlreadyStored || got[0].DLQSeq != ack.Sequence {
		t.Fatalf("outcomes = %+v, want one %s at DLQ %d", got, deadletter.AlreadyStored, ack.Sequence)
	}
	if n := len(e.dlq()); n != 3 {
		t.Fatalf("%d dead letters, want the 3 published by the test", n)
	}
	if e.inCommands(seq) {
		t.Fatal("command still in the work queue")
	}
}

// A command at max deliveries that its campaign's ledger holds (it backed a
// long-lived lock holder, say) is no poison: removed, no dead letter; one
// that is not applied is dead-lettered as before.
func TestAppliedCommandNotDeadLettered(t *testing.T) {
	e := newEnv(t)
	var o outcomes
	r, err := deadletter.New(testCtx(t), deadletter.Config{SweepEvery: time.Hour, Observe: o.observe}, deadletter.Deps{JS: e.js,
		Applied: func(_ context.Context, tenant, campaign, id string) (bool, error) {
			return tenant == "acme" && campaign == "c1" && id == "cmd-applied", nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, r)
	applied := e.publish("acme", "c1", fsm.Start, "cmd-applied")
	e.poison(applied)
	poison := e.publish("acme", "c1", fsm.Pause, "cmd-poison")
	e.poison(poison)
	results := map[uint64]deadletter.Result{}
	waitFor(t, 10*time.Second, "both handled", func() bool {
		for _, x := range o.list() {
			results[x.StreamSeq] = x.Result
		}
		return results[applied] != "" && results[poison] != ""
	})
	if e.inCommands(applied) || e.inCommands(poison) {
		t.Fatal("a handled command is still in the work queue")
	}
	if results[applied] != deadletter.Applied || results[poison] != deadletter.Stored {
		t.Fatalf("results %v: want %d %s and %d %s", results, applied, deadletter.Applied, poison, deadletter.Stored)
	}
	if entries := e.dlq(); len(entries) != 1 || entries[0].CommandID != "cmd-poison" {
		t.Fatalf("dead letters %+v: want the unapplied command's alone", entries)
	}
}
