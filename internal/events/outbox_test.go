package events_test

import (
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// TestOutboxEntryCodec: an event's outbox entry is the JSON the store wrote
// itself before the outbox became opaque to it (entries left by that
// version are published as written), and carries the event message whole.
func TestOutboxEntryCodec(t *testing.T) {
	ev := fsm.Event{Seq: 2, Type: fsm.EvStarted, CommandID: "cmd-2", Time: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC), Fence: 7}
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	got, err := events.EventEntry("acme", "c", ev, tp)
	if err != nil {
		t.Fatal(err)
	}
	m, err := events.NewEventMsg("acme", "c", ev, tp)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"subject":"campaign.evt.acme.c.started","header":{"Campaign-Id":"c","Command-Id":"cmd-2","Nats-Msg-Id":"acme.c.2","Tenant-Id":"acme","traceparent":"` + tp + `"},"data":"` +
		base64.StdEncoding.EncodeToString(m.Data) + `"}`
	if string(got) != want {
		t.Errorf("EventEntry =\n%s\nwant\n%s", got, want)
	}
	dm, err := events.DecodeOutboxForTest(got)
	if err != nil || dm.Subject != m.Subject || string(dm.Data) != string(m.Data) || len(dm.Header) != len(m.Header) {
		t.Fatalf("decoded entry = %+v, %v; want %+v", dm, err, m)
	}
	for k := range m.Header {
		if dm.Header.Get(k) != m.Header.Get(k) {
			t.Errorf("decoded header %s = %q, want %q", k, dm.Header.Get(k), m.Header.Get(k))
		}
	}
	if _, err := events.EventEntry("acme", "c", fsm.Event{Type: fsm.EvStarted}, ""); !errors.Is(err, events.ErrInvalidEvent) {
		t.Errorf("EventEntry of sequence 0: %v, want ErrInvalidEvent", err)
	}
}

// TestPublishOutbox: events are stored once however often the outbox is
// published; a command left in an outbox by an earlier version is published
// with its id; an entry that is not one is refused and nothing published.
func TestPublishOutbox(t *testing.T) {
	js := mustJetStream(t)
	ctx := testCtx(t)
	p := events.NewPublisher(js)
	var entries [][]byte
	for n := uint64(1); n <= 3; n++ {
		typ := fsm.EvStepSucceeded
		if n == 1 {
			typ = fsm.EvCreated
		}
		b, err := events.EventEntry("acme", "ob", fsm.Event{Seq: n, Type: typ, CommandID: "c", Time: time.Now()}, "")
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, b)
	}
	// An advance as the version that published them wrote it.
	legacy := []byte(`{"subject":"campaign.cmd.acme.ob.advance","header":{"Nats-Msg-Id":"acme.ob.adv.1"},"data":"e30="}`)
	for i, want := range []int{3, 0} { // the second time: all stored already
		n, err := p.PublishOutbox(ctx, "acme", "ob", append(entries[:3:3], legacy))
		if err != nil || n != want {
			t.Fatalf("PublishOutbox #%d = %d, %v; want %d", i+1, n, err, want)
		}
	}
	wantSequences(t, js, "acme", "ob", 3)
	cmds := mustStream(t, js, events.StreamCommands)
	msg, err := cmds.GetLastMsgForSubject(ctx, "campaign.cmd.acme.ob.advance")
	if err != nil || msg.Header.Get(jetstream.MsgIDHeader) != "acme.ob.adv.1" || string(msg.Data) != "{}" {
		t.Fatalf("advance on the stream = %+v, %v", msg, err)
	}
	if info, err := cmds.Info(ctx, jetstream.WithSubjectFilter("campaign.cmd.acme.ob.>")); err != nil || info.State.Msgs != 1 {
		t.Errorf("command stream holds %v messages of the campaign (%v), want 1: the repeat is deduplicated", info.State.Msgs, err)
	}
	for _, bad := range [][]byte{[]byte("{"), []byte(`{"data":"e30="}`)} {
		more, err := events.EventEntry("acme", "ob", fsm.Event{Seq: 4, Type: fsm.EvStepSucceeded, CommandID: "c", Time: time.Now()}, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.PublishOutbox(ctx, "acme", "ob", [][]byte{more, bad}); !errors.Is(err, events.ErrInvalidEvent) {
			t.Errorf("PublishOutbox with entry %q: %v, want ErrInvalidEvent", bad, err)
		}
	}
	wantSequences(t, js, "acme", "ob", 3)
}
