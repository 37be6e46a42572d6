package deadletter_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/campaign-orchestrator/orchestrator/internal/deadletter"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// A poison command as large as JetStream stores one (nearly 64 KiB of
// headers, a large body) gets its one DLQ copy: the copy's own headers do not
// push it over JetStream's header limit.
func TestReaperHugeCommand(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	m := events.NewCommandMsg(events.CommandEnvelope{ID: "cmd-huge", Type: string(fsm.Start), TenantID: "acme", CampaignID: "c1",
		Payload: []byte(`{"note":"` + strings.Repeat("x", 400_000) + `"}`)}, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	for i := 0; i < 64; i++ {
		m.Header.Set("X-Pad-"+strconv.Itoa(i), strings.Repeat("p", 1000))
	}
	m.Header.Set("X-Huge", strings.Repeat("h", 65_535-64*1012-300))
	ack, err := e.js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	seq := ack.Sequence
	e.poison(seq)

	var o outcomes
	r := newReaper(t, e.js, &o)
	for range 2 {
		if _, err := r.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := o.list(); len(got) != 1 || got[0].Result != deadletter.Stored {
		t.Fatalf("outcomes = %+v, want one %s", got, deadletter.Stored)
	}
	entries := e.dlq()
	if len(entries) != 1 {
		t.Fatalf("%d dead letters, want 1", len(entries))
	}
	checkCopy(t, entries[0], seq, "cmd-huge")
	if string(entries[0].Data) != string(m.Data) {
		t.Errorf("DLQ body is %d bytes, want the command's %d", len(entries[0].Data), len(m.Data))
	}
	if entries[0].Header.Get(events.HdrHeadersTruncated) == "" {
		t.Errorf("no %s header on a copy that could not hold every header", events.HdrHeadersTruncated)
	}
	if e.inCommands(seq) {
		t.Fatal("poison message still in the work queue")
	}
	// Not the command any more: not replayed.
	rp, err := deadletter.NewReplayer(ctx, e.js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rp.Replay(ctx, entries[0].Seq, deadletter.ReplayOptions{}); !errors.Is(err, deadletter.ErrNotReplayable) {
		t.Fatalf("replay of a copy with truncated headers: %v, want ErrNotReplayable", err)
	}
}

// A dead letter whose body was cut is never replayed (it would be another,
// broken command); its id is still found.
func TestReplayRefusesTruncatedBody(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	big := nats.NewMsg("campaign.cmd.acme.c1.start")
	big.Header.Set(nats.MsgIdHdr, "cmd-big")
	big.Data = []byte(`{"type":"start","tenant_id":"other","campaign_id":"c1","payload":{"x":"` + strings.Repeat("x", 1<<20) + `"}}`)
	seq := e.deadLetter(big, 5)
	entry, err := deadletter.Get(ctx, e.js, seq)
	if err != nil {
		t.Fatal(err)
	}
	if entry.Header.Get(events.HdrBodyTruncated) != strconv.Itoa(len(big.Data)) || entry.CommandID != "cmd-big" || len(entry.Data) >= len(big.Data) {
		t.Fatalf("entry: %s = %q, command id %q, body %d bytes", events.HdrBodyTruncated, entry.Header.Get(events.HdrBodyTruncated), entry.CommandID, len(entry.Data))
	}
	r, err := deadletter.NewReplayer(ctx, e.js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Replay(ctx, seq, deadletter.ReplayOptions{}); !errors.Is(err, deadletter.ErrNotReplayable) {
		t.Fatalf("replay of a truncated body: %v, want ErrNotReplayable", err)
	}
}

// A forged entry with huge headers: no huge command id, and the refusal says
// so in a bounded message.
func TestReplayBoundsForgedEntry(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	huge := strings.Repeat("\xff", 20_000)
	forged := nats.NewMsg("campaign.dlq.evil.c1")
	forged.Header.Set(events.HdrCommandID, strings.Repeat("i", 1000))
	forged.Header.Set(events.HdrOriginalSubject, "campaign.cmd.acme."+huge+".cancel")
	forged.Data = []byte(`{"id":"` + strings.Repeat("b", 1000) + `"}`)
	if _, err := e.js.PublishMsg(ctx, forged); err != nil {
		t.Fatal(err)
	}
	forged.Header.Set(events.HdrCommandID, "forged-1")
	ack, err := e.js.PublishMsg(ctx, forged)
	if err != nil {
		t.Fatal(err)
	}
	entries := e.dlq()
	if len(entries) != 2 || entries[0].CommandID != "" || entries[1].CommandID != "forged-1" {
		t.Fatalf("command ids %q, want \"\" (over-long) and forged-1", []string{entries[0].CommandID, entries[1].CommandID})
	}
	r, err := deadletter.NewReplayer(ctx, e.js)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Replay(ctx, ack.Sequence, deadletter.ReplayOptions{})
	if !errors.Is(err, deadletter.ErrNotReplayable) {
		t.Fatalf("replay of a forged entry: %v, want ErrNotReplayable", err)
	}
	if msg := err.Error(); len(msg) > events.MaxReasonBytes || !utf8.ValidString(msg) {
		t.Errorf("error is %d bytes (valid UTF-8: %v)", len(msg), utf8.ValidString(msg))
	}
}
