package events_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

var outboxTime = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// outbox builds the event messages from..to of a campaign, as a worker's
// outbox would hold them.
func outbox(t testing.TB, tenant, campaign string, from, to uint64) []*nats.Msg {
	t.Helper()
	var msgs []*nats.Msg
	for n := from; n <= to; n++ {
		typ := fsm.EvStepSucceeded
		if n == 1 {
			typ = fsm.EvCreated
		}
		// The same message for the same n, as an outbox holds it.
		m, err := events.NewEventMsg(tenant, campaign, fsm.Event{Seq: n, Type: typ, CommandID: fmt.Sprintf("cmd-%d", n),
			Time: outboxTime.Add(time.Duration(n) * time.Millisecond), Data: map[string]any{"n": n}}, "")
		if err != nil {
			t.Fatalf("NewEventMsg: %v", err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

func mustPublish(t testing.TB, js jetstream.JetStream, tenant, campaign string, msgs []*nats.Msg, want int) {
	t.Helper()
	n, err := events.PublishEvents(testCtx(t), js, tenant, campaign, msgs)
	if err != nil {
		t.Fatalf("PublishEvents(%s/%s): %v", tenant, campaign, err)
	}
	if n != want {
		t.Errorf("PublishEvents(%s/%s) published %d, want %d", tenant, campaign, n, want)
	}
}

// wantSequences checks that the campaign's history is exactly 1..n, in order,
// and that the stream holds exactly n messages for it.
func wantSequences(t testing.TB, js jetstream.JetStream, tenant, campaign string, n int) {
	t.Helper()
	ctx := testCtx(t)
	hist, err := events.History(ctx, js, tenant, campaign)
	if err != nil {
		t.Fatalf("History(%s/%s): %v", tenant, campaign, err)
	}
	var got []uint64
	for _, ev := range hist {
		got = append(got, ev.Seq())
		if ev.TenantID != tenant || ev.CampaignID != campaign {
			t.Errorf("History(%s/%s) holds an event of %s/%s", tenant, campaign, ev.TenantID, ev.CampaignID)
		}
	}
	ok := len(got) == n
	for i := 0; ok && i < n; i++ {
		ok = got[i] == uint64(i+1)
	}
	if !ok {
		t.Errorf("History(%s/%s) sequences = %v, want 1..%d", tenant, campaign, got, n)
	}
	info, err := mustStream(t, js, events.StreamEvents).Info(ctx, jetstream.WithSubjectFilter(events.CampaignEvents(tenant, campaign)))
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	var stored uint64
	for _, c := range info.State.Subjects {
		stored += c
	}
	if stored != uint64(n) {
		t.Errorf("stream holds %d messages for %s/%s, want %d (%v)", stored, tenant, campaign, n, info.State.Subjects)
	}
}

func TestPublishEventsSkipsStored(t *testing.T) {
	js := mustJetStream(t)
	mustPublish(t, js, "acme", "c1", outbox(t, "acme", "c1", 1, 3), 3)
	mustPublish(t, js, "acme", "c1", outbox(t, "acme", "c1", 1, 5), 2)
	mustPublish(t, js, "acme", "c1", outbox(t, "acme", "c1", 1, 5), 0)
	mustPublish(t, js, "acme", "c1", outbox(t, "acme", "c1", 4, 6), 1)
	mustPublish(t, js, "acme", "c1", nil, 0)
	wantSequences(t, js, "acme", "c1", 6)

	msgs := outbox(t, "acme", "c1", 7, 7)
	before := fmt.Sprint(msgs[0].Header)
	mustPublish(t, js, "acme", "c1", msgs, 1)
	if after := fmt.Sprint(msgs[0].Header); after != before {
		t.Errorf("PublishEvents changed the caller's message headers: %s -> %s", before, after)
	}
}

// other is the campaign's event number n as another writer made it (a
// holder that outlived the loss of the campaign's state, whose write the
// store lost): same sequence, same id, other content.
func other(t testing.TB, tenant, campaign string, n uint64) *nats.Msg {
	t.Helper()
	m, err := events.NewEventMsg(tenant, campaign, fsm.Event{Seq: n, Type: fsm.EvPaused, CommandID: "other",
		Time: outboxTime, Data: map[string]any{"other": true}}, "")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestPublishEventsConflict: a message whose sequence is stored already is
// skipped only when it is the very event stored (a re-publish); another
// event under that sequence is ErrEventConflict, whether it is the last one
// stored or an earlier one, and nothing after it is published.
func TestPublishEventsConflict(t *testing.T) {
	js := mustJetStream(t)
	ctx := testCtx(t)
	mustPublish(t, js, "acme", "c1", outbox(t, "acme", "c1", 1, 4), 4)
	for _, tt := range []struct {
		name string
		msgs []*nats.Msg
	}{
		{"the last stored", []*nats.Msg{other(t, "acme", "c1", 4), outbox(t, "acme", "c1", 5, 5)[0]}},
		{"an earlier one", append([]*nats.Msg{other(t, "acme", "c1", 2)}, outbox(t, "acme", "c1", 3, 5)...)},
		{"the first", append([]*nats.Msg{other(t, "acme", "c1", 1)}, outbox(t, "acme", "c1", 2, 5)...)},
		{"after same ones", append(append(outbox(t, "acme", "c1", 2, 2), other(t, "acme", "c1", 3)), outbox(t, "acme", "c1", 4, 5)...)},
	} {
		for _, p := range []*events.Publisher{events.NewPublisher(js), nil} {
			var (
				n   int
				err error
			)
			if p != nil {
				n, err = p.PublishEvents(ctx, "acme", "c1", tt.msgs)
			} else {
				n, err = events.PublishEvents(ctx, js, "acme", "c1", tt.msgs)
			}
			if !errors.Is(err, events.ErrEventConflict) || n != 0 {
				t.Errorf("%s: PublishEvents = %d, %v; want ErrEventConflict", tt.name, n, err)
			}
		}
	}
	wantSequences(t, js, "acme", "c1", 4)
	// A re-publish of the same events (the last one and earlier ones) is
	// skipped as before.
	mustPublish(t, js, "acme", "c1", outbox(t, "acme", "c1", 1, 2), 0)
	mustPublish(t, js, "acme", "c1", outbox(t, "acme", "c1", 2, 5), 1)
	wantSequences(t, js, "acme", "c1", 5)
}

// TestPublishEventsStoredByAnother: the finding of RELIABILITY.md's rebuild
// path. A publisher that knows the campaign's last event (4) publishes its
// event 5 while another writer stored another event 5 first (within the
// duplicate window: its id is reported a duplicate; after it: the
// expected last sequence is refused). It must not take the stored one for
// its own.
func TestPublishEventsStoredByAnother(t *testing.T) {
	js := mustJetStream(t)
	ctx := testCtx(t)
	for _, campaign := range []string{"dup", "seq"} {
		mustPublish(t, js, "acme", campaign, outbox(t, "acme", campaign, 1, 4), 4)
		p := events.NewPublisher(js)
		if seq, _, err := p.Last(ctx, "acme", campaign); err != nil || seq != 4 {
			t.Fatalf("Last = %d, %v", seq, err)
		}
		stale := other(t, "acme", campaign, 5)
		if campaign == "seq" {
			stale.Header.Del(jetstream.MsgIDHeader) // no dedup: only the expected sequence catches it
		}
		if _, err := js.PublishMsg(ctx, stale); err != nil {
			t.Fatal(err)
		}
		n, err := p.PublishEvents(ctx, "acme", campaign, outbox(t, "acme", campaign, 5, 6))
		if !errors.Is(err, events.ErrEventConflict) || n != 0 {
			t.Errorf("%s: PublishEvents over another event 5 = %d, %v; want ErrEventConflict", campaign, n, err)
		}
	}
}

// TestPublisherLast: Last reads the campaign's last stored event (none for a
// new campaign) and primes what the next publish follows.
func TestPublisherLast(t *testing.T) {
	js := mustJetStream(t)
	p := events.NewPublisher(js)
	if seq, ok, err := p.Last(t.Context(), "acme", "last"); err != nil || ok || seq != 0 {
		t.Fatalf("Last of a new campaign = %d, %v, %v", seq, ok, err)
	}
	mustPublish(t, js, "acme", "last", outbox(t, "acme", "last", 1, 4), 4)
	if seq, ok, err := p.Last(t.Context(), "acme", "last"); err != nil || !ok || seq != 4 {
		t.Fatalf("Last after 4 events = %d, %v, %v", seq, ok, err)
	}
	if n, err := p.PublishEvents(t.Context(), "acme", "last", outbox(t, "acme", "last", 5, 6)); err != nil || n != 2 {
		t.Fatalf("PublishEvents after Last = %d, %v", n, err)
	}
	wantSequences(t, js, "acme", "last", 6)
	if _, _, err := p.Last(t.Context(), "acme", "a.b"); !errors.Is(err, events.ErrInvalidEvent) {
		t.Fatalf("Last of a bad token = %v", err)
	}
}

// TestPublishEventsAfterDuplicateWindow: the guarantee of CONTRACT section 4
// that the stream's duplicate window does not bound.
func TestPublishEventsAfterDuplicateWindow(t *testing.T) {
	js := mustJetStream(t)
	ctx := testCtx(t)
	cfg := mustStream(t, js, events.StreamEvents).CachedInfo().Config
	cfg.Duplicates = time.Second
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("set duplicate window 1s: %v", err)
	}
	mustPublish(t, js, "acme", "c1", outbox(t, "acme", "c1", 1, 3), 3)

	// Control: a plain publish of an id, repeated until JetStream no longer
	// reports it as a duplicate, i.e. the window has passed.
	ctl := outbox(t, "acme", "control", 1, 1)[0]
	if _, err := js.PublishMsg(ctx, ctl); err != nil {
		t.Fatalf("control publish: %v", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		time.Sleep(1100 * time.Millisecond) // waiting out the window is the point of this test
		ack, err := js.PublishMsg(ctx, outbox(t, "acme", "control", 1, 1)[0])
		if err != nil {
			t.Fatalf("control publish: %v", err)
		}
		if !ack.Duplicate {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the duplicate window of 1s never passed")
		}
	}

	mustPublish(t, js, "acme", "c1", outbox(t, "acme", "c1", 1, 3), 0)
	mustPublish(t, js, "acme", "c1", outbox(t, "acme", "c1", 2, 4), 1)
	wantSequences(t, js, "acme", "c1", 4)
}

func TestPublishEventsInterleavedCampaigns(t *testing.T) {
	js := mustJetStream(t)
	// "c" is a prefix of "c2": the filters must be exact tokens.
	mustPublish(t, js, "acme", "c", outbox(t, "acme", "c", 1, 2), 2)
	mustPublish(t, js, "acme", "c2", outbox(t, "acme", "c2", 1, 3), 3)
	mustPublish(t, js, "other", "c", outbox(t, "other", "c", 1, 1), 1)
	mustPublish(t, js, "acme", "c", outbox(t, "acme", "c", 1, 4), 2)
	mustPublish(t, js, "acme", "c2", outbox(t, "acme", "c2", 1, 5), 2)
	mustPublish(t, js, "acme", "c", outbox(t, "acme", "c", 3, 5), 1)
	wantSequences(t, js, "acme", "c", 5)
	wantSequences(t, js, "acme", "c2", 5)
	wantSequences(t, js, "other", "c", 1)
}

func TestPublishEventsConcurrent(t *testing.T) {
	js := mustJetStream(t)
	const n = 40
	// Each publisher flushes a growing outbox, as a worker retrying would;
	// each has its own copies of the messages, as if decoded from a store.
	var rounds [2][][]*nats.Msg
	for g := range rounds {
		for to := uint64(10); to <= n; to += 10 {
			rounds[g] = append(rounds[g], outbox(t, "acme", "busy", 1, to))
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	errs := make(chan error, 16)
	for g := range rounds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, msgs := range rounds[g] {
				k, err := events.PublishEvents(context.Background(), js, "acme", "busy", msgs)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				total += k
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent PublishEvents: %v", err)
	}
	if total != n {
		t.Errorf("publishers stored %d events together, want %d", total, n)
	}
	wantSequences(t, js, "acme", "busy", n)
}

// racingJS is a JetStream whose PublishMsg lets a rival store the same
// event first, once per message in race, so that PublishEvents meets
// "wrong last sequence" (after the duplicate window) or a duplicate ack.
type racingJS struct {
	jetstream.JetStream
	race  map[string]bool // Nats-Msg-Id -> rival publishes it first
	rival func(m *nats.Msg)
}

func (r *racingJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if id := m.Header.Get("Nats-Msg-Id"); r.race[id] {
		delete(r.race, id)
		r.rival(m)
	}
	return r.JetStream.PublishMsg(ctx, m, opts...)
}

func TestPublishEventsLosesRace(t *testing.T) {
	js := mustJetStream(t)
	ctx := testCtx(t)
	mustPublish(t, js, "acme", "c1", outbox(t, "acme", "c1", 1, 2), 2)

	// A rival stores event 3 without a Nats-Msg-Id (as after the duplicate
	// window: no deduplication), just before PublishEvents publishes it.
	rival := &racingJS{JetStream: js, race: map[string]bool{"acme.c1.3": true}}
	rival.rival = func(m *nats.Msg) {
		c := nats.NewMsg(m.Subject)
		c.Data = m.Data
		if _, err := js.PublishMsg(ctx, c); err != nil {
			t.Errorf("rival publish: %v", err)
		}
	}
	n, err := events.PublishEvents(ctx, rival, "acme", "c1", outbox(t, "acme", "c1", 1, 5))
	if err != nil || n != 2 {
		t.Fatalf("PublishEvents after losing a race = %d, %v; want 2, nil", n, err)
	}
	wantSequences(t, js, "acme", "c1", 5)

	// The rival's copy has the id and is within the duplicate window: the
	// server checks the expected last sequence before deduplicating, so this
	// is a conflict again, not a duplicate ack.
	rival.race = map[string]bool{"acme.c1.6": true}
	rival.rival = func(m *nats.Msg) {
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Errorf("rival publish: %v", err)
		}
	}
	n, err = events.PublishEvents(ctx, rival, "acme", "c1", outbox(t, "acme", "c1", 6, 7))
	if err != nil || n != 1 {
		t.Fatalf("PublishEvents after a duplicate = %d, %v; want 1, nil", n, err)
	}
	wantSequences(t, js, "acme", "c1", 7)
}

func TestPublishEventsErrors(t *testing.T) {
	js := mustJetStream(t)
	ctx := testCtx(t)
	mustPublish(t, js, "acme", "c1", outbox(t, "acme", "c1", 1, 3), 3)

	if _, err := events.PublishEvents(ctx, js, "acme", "c1", outbox(t, "acme", "c1", 5, 6)); !errors.Is(err, events.ErrSequenceGap) {
		t.Errorf("gap after the stored events: err = %v, want ErrSequenceGap", err)
	}
	gappy := append(outbox(t, "acme", "c1", 4, 4), outbox(t, "acme", "c1", 6, 6)...)
	if _, err := events.PublishEvents(ctx, js, "acme", "c1", gappy); !errors.Is(err, events.ErrSequenceGap) {
		t.Errorf("gap inside the messages: err = %v, want ErrSequenceGap", err)
	}
	if _, err := events.PublishEvents(ctx, js, "acme", "c1", outbox(t, "acme", "c2", 4, 4)); !errors.Is(err, events.ErrInvalidEvent) {
		t.Errorf("another campaign's message: err = %v, want ErrInvalidEvent", err)
	}
	noID := outbox(t, "acme", "c1", 4, 4)
	noID[0].Header.Del("Nats-Msg-Id")
	if _, err := events.PublishEvents(ctx, js, "acme", "c1", noID); !errors.Is(err, events.ErrInvalidEvent) {
		t.Errorf("message without id: err = %v, want ErrInvalidEvent", err)
	}
	if _, err := events.PublishEvents(ctx, js, "acme", "c.1", outbox(t, "acme", "c1", 4, 4)); !errors.Is(err, events.ErrInvalidEvent) {
		t.Errorf("bad token: err = %v, want ErrInvalidEvent", err)
	}
	wantSequences(t, js, "acme", "c1", 3)
}

func TestDeadLetter(t *testing.T) {
	js := mustJetStream(t)
	ctx := testCtx(t)
	dlq := mustStream(t, js, events.StreamDLQ)

	orig := nats.NewMsg("campaign.cmd.acme.c1.start")
	orig.Header.Set("Nats-Msg-Id", "01CMD")
	orig.Header.Set("Nats-Expected-Stream", "CAMPAIGN_COMMANDS")
	orig.Header.Set("traceparent", "tp-1")
	orig.Data = []byte(`{"type":"start","tenant_id":"other","campaign_id":"c1"}`)
	_, err := events.DecodeCommand(orig.Subject, orig.Header, orig.Data, testWorkflows)
	var inv *events.InvalidCommand
	if !errors.As(err, &inv) {
		t.Fatalf("DecodeCommand: %v, want *InvalidCommand", err)
	}
	for i := 0; i < 2; i++ { // the second one is a redelivery: deduplicated
		if err := events.DeadLetter(ctx, js, orig, inv, 42); err != nil {
			t.Fatalf("DeadLetter: %v", err)
		}
	}
	got, err := dlq.GetLastMsgForSubject(ctx, "campaign.dlq.acme.c1")
	if err != nil {
		t.Fatalf("read DLQ: %v", err)
	}
	if string(got.Data) != string(orig.Data) {
		t.Errorf("DLQ body = %s, want the original %s", got.Data, orig.Data)
	}
	for h, want := range map[string]string{
		"Reason": inv.Reason, "Original-Subject": orig.Subject, "Original-Sequence": "42",
		"Nats-Msg-Id": "dlq.id.acme.c1.01CMD", "traceparent": "tp-1",
	} {
		if v := got.Header.Get(h); v != want {
			t.Errorf("DLQ header %s = %q, want %q", h, v, want)
		}
	}
	if !strings.Contains(got.Header.Get("Reason"), "tenant_id") {
		t.Errorf("Reason = %q", got.Header.Get("Reason"))
	}

	// Unusable subject and no id: _unknown tokens, id from the stream sequence.
	bad := nats.NewMsg("campaign.cmd.acme.a*.start")
	bad.Data = []byte("not json")
	_, err = events.DecodeCommand(bad.Subject, bad.Header, bad.Data, testWorkflows)
	if !errors.As(err, &inv) {
		t.Fatalf("DecodeCommand: %v", err)
	}
	inv.Reason += "\nsecond line"
	if err := events.DeadLetter(ctx, js, bad, inv, 7); err != nil {
		t.Fatalf("DeadLetter: %v", err)
	}
	got, err = dlq.GetLastMsgForSubject(ctx, "campaign.dlq.acme._unknown")
	if err != nil {
		t.Fatalf("read DLQ: %v", err)
	}
	if got.Header.Get("Nats-Msg-Id") != "dlq.seq.7" || strings.ContainsAny(got.Header.Get("Reason"), "\r\n") || string(got.Data) != "not json" {
		t.Errorf("DLQ copy = %v %q", got.Header, got.Data)
	}
	info, err := dlq.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("DLQ holds %d messages, want 2", info.State.Msgs)
	}
}
