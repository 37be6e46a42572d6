package deadletter_test

import (
	"errors"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/deadletter"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

// deadLetter dead-letters msg as the worker does an invalid command.
func (e *env) deadLetter(msg *nats.Msg, streamSeq uint64) uint64 {
	e.t.Helper()
	_, err := events.DecodeCommand(msg.Subject, msg.Header, msg.Data, nil)
	var inv *events.InvalidCommand
	if !errors.As(err, &inv) {
		e.t.Fatalf("want an invalid command, got %v", err)
	}
	if err := events.DeadLetter(testCtx(e.t), e.js, msg, inv, streamSeq); err != nil {
		e.t.Fatal(err)
	}
	entries := e.dlq()
	return entries[len(entries)-1].Seq
}

func TestReplay(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	// A create whose workflow does not exist (yet): the DLQ copy keeps its id.
	create := events.NewCommandMsg(events.CommandEnvelope{ID: "cmd-a", Type: "create", TenantID: "acme", CampaignID: "c1",
		Payload: []byte(`{"name":"A","workflow":"later"}`)}, tp)
	seqA := e.deadLetter(create, 0)
	other := events.NewCommandMsg(events.CommandEnvelope{ID: "cmd-b", Type: "create", TenantID: "acme", CampaignID: "c2",
		Payload: []byte(`{"name":"B","workflow":"later"}`)}, "")
	seqB := e.deadLetter(other, 0)
	// No id anywhere: not replayable.
	noID := nats.NewMsg("campaign.cmd.acme.c3.start")
	noID.Data = []byte(`{"type":"start","tenant_id":"acme","campaign_id":"c3"}`)
	seqC := e.deadLetter(noID, 42)
	// A copy from before Command-Id existed: the id is in its Nats-Msg-Id.
	legacy := nats.NewMsg("campaign.dlq.acme.c4")
	legacy.Header.Set(nats.MsgIdHdr, "dlq.legacy-id")
	legacy.Header.Set(events.HdrOriginalSubject, "campaign.cmd.acme.c4.start")
	legacy.Header.Set(events.HdrReason, "old")
	legacy.Data = []byte(`{"type":"start","tenant_id":"acme","campaign_id":"c4"}`)
	if _, err := e.js.PublishMsg(ctx, legacy); err != nil {
		t.Fatal(err)
	}

	entries := e.dlq()
	wantIDs := []string{"cmd-a", "cmd-b", "", "legacy-id"}
	if len(entries) != len(wantIDs) {
		t.Fatalf("%d dead letters, want %d", len(entries), len(wantIDs))
	}
	for i, want := range wantIDs {
		if entries[i].CommandID != want {
			t.Errorf("dead letter %d: command id %q, want %q", entries[i].Seq, entries[i].CommandID, want)
		}
	}

	if got := entries[0].Header.Get(events.HdrCommandID); got != "cmd-a" {
		t.Errorf("events.DeadLetter copy: Command-Id = %q, want cmd-a", got)
	}
	r, err := deadletter.NewReplayer(ctx, e.js)
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Replay(ctx, seqA, deadletter.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicate || res.Purged || res.StreamSeq == 0 || res.DuplicateWindow <= 0 {
		t.Fatalf("first replay = %+v", res)
	}
	cmds, err := e.js.Stream(ctx, events.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cmds.GetMsg(ctx, res.StreamSeq)
	if err != nil {
		t.Fatal(err)
	}
	if got.Subject != create.Subject || string(got.Data) != string(create.Data) {
		t.Errorf("replayed %s %s, want %s %s", got.Subject, got.Data, create.Subject, create.Data)
	}
	wantHdr := map[string]string{
		nats.MsgIdHdr: "cmd-a", events.HdrTraceparent: tp, deadletter.HdrReplayedFrom: "CAMPAIGN_DLQ/" + strconv.FormatUint(seqA, 10),
		events.HdrReason: "", events.HdrOriginalSubject: "", events.HdrOriginalSequence: "", events.HdrCommandID: "",
	}
	for k, want := range wantHdr {
		if v := got.Header.Get(k); v != want {
			t.Errorf("replayed header %s = %q, want %q", k, v, want)
		}
	}

	// Again, within the duplicate window: JetStream stores nothing.
	again, err := r.Replay(ctx, seqA, deadletter.ReplayOptions{Purge: true})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Purged || again.StreamSeq != res.StreamSeq {
		t.Fatalf("second replay = %+v, want a duplicate of %d, not purged", again, res.StreamSeq)
	}
	if _, err := deadletter.Get(ctx, e.js, seqA); err != nil {
		t.Fatalf("dead letter gone after replays without purge: %v", err)
	}

	// --purge deletes the entry once the command is stored.
	pres, err := r.Replay(ctx, seqB, deadletter.ReplayOptions{Purge: true})
	if err != nil || !pres.Purged || pres.Duplicate {
		t.Fatalf("purging replay = %+v, %v", pres, err)
	}
	if _, err := deadletter.Get(ctx, e.js, seqB); !errors.Is(err, deadletter.ErrNotFound) {
		t.Fatalf("purged dead letter: err = %v, want ErrNotFound", err)
	}

	if _, err := r.Replay(ctx, seqC, deadletter.ReplayOptions{}); !errors.Is(err, deadletter.ErrNotReplayable) {
		t.Fatalf("replay without command id: err = %v, want ErrNotReplayable", err)
	}
	if _, err := r.Replay(ctx, 9999, deadletter.ReplayOptions{}); !errors.Is(err, deadletter.ErrNotFound) {
		t.Fatalf("replay of a missing entry: err = %v, want ErrNotFound", err)
	}
	lres, err := r.Replay(ctx, entries[3].Seq, deadletter.ReplayOptions{})
	if err != nil || lres.Duplicate {
		t.Fatalf("legacy replay = %+v, %v", lres, err)
	}
	lmsg, err := cmds.GetMsg(ctx, lres.StreamSeq)
	if err != nil || lmsg.Header.Get(jetstream.MsgIDHeader) != "legacy-id" {
		t.Fatalf("legacy replay stored %v, %v", lmsg, err)
	}
}

// An entry whose headers point at another tenant's commands was not written
// by the orchestrator (anyone allowed to publish on the DLQ could forge one):
// it is never replayed.
func TestReplayRefusesForeignSubject(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	forged := nats.NewMsg("campaign.dlq.evil.c1")
	forged.Header.Set(events.HdrCommandID, "forged-1")
	forged.Header.Set(events.HdrOriginalSubject, "campaign.cmd.acme.spring.cancel")
	forged.Header.Set(events.HdrReason, "forged")
	forged.Data = []byte(`{"type":"cancel","tenant_id":"acme","campaign_id":"spring"}`)
	ack, err := e.js.PublishMsg(ctx, forged)
	if err != nil {
		t.Fatal(err)
	}
	r, err := deadletter.NewReplayer(ctx, e.js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Replay(ctx, ack.Sequence, deadletter.ReplayOptions{}); !errors.Is(err, deadletter.ErrNotReplayable) {
		t.Fatalf("replay of a forged entry: %v, want ErrNotReplayable", err)
	}
	cmds, err := e.js.Stream(ctx, events.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := cmds.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Fatalf("commands stream after a refused replay: %+v %v", info.State, err)
	}
}
