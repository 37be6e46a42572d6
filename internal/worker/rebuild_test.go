package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/metrics/metricstest"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/worker"
)

// CONTRACT guarantee 8: Redis loses everything (FLUSHALL, as a restart
// without persistence would). A worker that meets a command of a campaign
// the store no longer holds rebuilds it from CAMPAIGN_EVENTS first: a
// paused campaign resumes where it was (no step run again), a pending one
// refuses a second create and starts, an old command id sent again (past
// the stream's duplicate window) is not applied again, and the fencing
// tokens of the calls after the loss are above every one before.
func TestRebuildOnMeetingLostState(t *testing.T) {
	const window = 200 * time.Millisecond
	h := newHarness(t, harnessOpts{dupWindow: window})
	ctx := context.Background()

	// A: paused after its segment step.
	block := make(chan struct{})
	h.down.on("lost-paused", "segment", behaviour{Block: block})
	h.create("acme", "lost-paused", true)
	<-h.down.startedCh("lost-paused", "segment")
	pauseID := newID()
	h.publish("acme", "lost-paused", fsm.Pause, pauseID, nil)
	waitFor(t, 10*time.Second, "the pause parked behind the step in flight", func() bool {
		items, _ := h.store.Inbox(ctx, store.Key{Tenant: "acme", Campaign: "lost-paused"}, 0)
		for _, it := range items {
			if it.ID == pauseID {
				return true
			}
		}
		return false
	})
	close(block)
	h.waitEvent("acme", "lost-paused", fsm.EvPaused, 0, 10*time.Second)
	pausedAt := h.waitIdle("acme", "lost-paused")
	// B: created, not started.
	createID := newID()
	h.publish("acme", "lost-pending", fsm.Create, createID, fsm.CreatePayload{Name: "pending", Params: json.RawMessage(`{"audience":"all"}`)})
	h.waitEvent("acme", "lost-pending", fsm.EvCreated, 0, 10*time.Second)
	h.waitIdle("acme", "lost-pending")
	var before uint64
	for _, c := range h.down.Calls("lost-paused") {
		before = max(before, fence(t, c))
	}
	evsA, evsB := len(h.history("acme", "lost-paused")), len(h.history("acme", "lost-pending"))

	rc := redis.NewClient(&redis.Options{Addr: h.redis.Addr()})
	defer rc.Close()
	if err := rc.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(window + 100*time.Millisecond) // old ids are stored again by the stream from now on

	h.publish("acme", "lost-paused", fsm.Pause, pauseID, nil)                                   // applied before the loss
	h.publish("acme", "lost-pending", fsm.Create, createID, fsm.CreatePayload{Name: "pending"}) // applied before the loss
	h.publish("acme", "lost-paused", fsm.Resume, newID(), nil)
	secondCreate := newID()
	h.publish("acme", "lost-pending", fsm.Create, secondCreate, fsm.CreatePayload{Name: "again"})
	h.publish("acme", "lost-pending", fsm.Start, newID(), nil)

	a := h.waitEvent("acme", "lost-paused", fsm.EvCompleted, evsA, 20*time.Second)
	b := h.waitEvent("acme", "lost-pending", fsm.EvCompleted, evsB, 20*time.Second)
	h.waitCommandsEmpty()
	checkSequence(t, a)
	checkSequence(t, b)
	for _, tc := range []struct {
		name string
		evs  []events.CloudEvent
		want map[string]int
	}{
		{"lost-paused", a, map[string]int{fsm.EvCreated: 1, fsm.EvPaused: 1, fsm.EvResumed: 1, fsm.EvRejected: 0, fsm.EvCompleted: 1}},
		{"lost-pending", b, map[string]int{fsm.EvCreated: 1, fsm.EvRejected: 1, fsm.EvStarted: 1, fsm.EvCompleted: 1}},
	} {
		for typ, n := range tc.want {
			if got := count(tc.evs, typ); got != n {
				t.Errorf("%s: %d %s, want %d: %s", tc.name, got, typ, n, types(tc.evs))
			}
		}
	}
	for _, e := range b {
		if e.Type == fsm.EvRejected && e.CommandID != secondCreate {
			t.Errorf("lost-pending: rejected command %s, want only the second create %s", e.CommandID, secondCreate)
		}
	}
	// No step ran twice (the paused campaign went on from render), and
	// every call after the loss carried a higher fence.
	seen := map[string]bool{}
	for _, c := range h.down.Calls("lost-paused") {
		if seen[c.Key] {
			t.Errorf("step %s called again (key %s)", c.Step, c.Key)
		}
		seen[c.Key] = true
		if c.Start.After(pausedAt.UpdatedAt) && c.Step != "validate" && c.Step != "segment" {
			if f := fence(t, c); f <= before {
				t.Errorf("call of %s after the loss with fence %d, not above %d", c.Step, f, before)
			}
		}
	}
	if len(seen) != 5 {
		t.Errorf("%d distinct step calls, want 5", len(seen))
	}
	got := h.waitIdle("acme", "lost-pending")
	if string(got.Params) != `{"audience":"all"}` || got.Workflow.Name != "standard" || len(got.Workflow.Steps) != 5 {
		t.Errorf("rebuilt campaign %+v: params or workflow not kept", got)
	}
	if ok, _ := h.store.Applied(ctx, store.Key{Tenant: "acme", Campaign: "lost-pending"}, createID); !ok {
		t.Errorf("the create %s is not in the rebuilt ledger", createID)
	}
	h.noDeadLetters()
}

func fence(t *testing.T, c call) uint64 {
	t.Helper()
	f, err := strconv.ParseUint(c.Fence, 10, 64)
	if err != nil {
		t.Fatalf("call of %s: Campaign-Fence %q: %v", c.Step, c.Fence, err)
	}
	return f
}

// flushAll empties the harness's Redis, as a restart without persistence
// would.
func (h *harness) flushAll() {
	h.t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: h.redis.Addr()})
	defer rc.Close()
	if err := rc.FlushAll(context.Background()).Err(); err != nil {
		h.t.Fatal(err)
	}
}

// TestHolderFromBeforeTheLossPublishesNothing (RELIABILITY, rebuild path):
// a holder writes a cancel, then freezes before publishing its event, past
// its lock's TTL, while Redis loses everything. Woken, it must not publish
// the event of a write the store lost (the rebuild that follows could have
// read the history before it lands): its lock may have expired, so it
// publishes nothing. The cancel comes back (its message was never
// acknowledged), the campaign is rebuilt (after waiting out any such
// holder) and the cancel is applied again: every event of the history after
// the loss was written after it.
func TestHolderFromBeforeTheLossPublishesNothing(t *testing.T) {
	const campaign = "outlived"
	var (
		armed  atomic.Bool
		frozen = make(chan struct{})
		thaw   = make(chan struct{})
		once   sync.Once
	)
	h := newHarness(t, harnessOpts{fault: func(int) func(worker.FaultPoint, store.Key) error {
		return func(p worker.FaultPoint, k store.Key) error {
			if k.Campaign != campaign || p != worker.BeforePublish || !armed.Load() {
				return nil
			}
			first := false
			once.Do(func() { first = true })
			if first {
				close(frozen)
				<-thaw // a freeze far past the lock's TTL
			}
			return nil
		}
	}})
	h.create("acme", campaign, false)
	h.waitIdle("acme", campaign)
	armed.Store(true)
	h.publish("acme", campaign, fsm.Cancel, newID(), nil)
	select {
	case <-frozen:
	case <-time.After(10 * time.Second):
		t.Fatal("the cancel's publish never came")
	}
	lossAt := time.Now().Truncate(time.Millisecond)
	h.flushAll()
	time.Sleep(3 * lockTTL) // the freeze: its length is the point
	close(thaw)

	h.waitEvent("acme", campaign, fsm.EvCancelled, 0, 20*time.Second)
	c := h.waitIdle("acme", campaign)
	evs := h.history("acme", campaign)
	checkSequence(t, evs)
	for _, e := range evs[1:] {
		if e.Time.Before(lossAt) {
			t.Errorf("event %s (%s) written at %s, before the loss at %s, published after it", e.ID, e.Type, e.Time, lossAt)
		}
	}
	if c.State != fsm.Cancelled || c.Seq != uint64(len(evs)) || count(evs, fsm.EvCancelled) != 1 {
		t.Errorf("store %s at %d, history %s", c.State, c.Seq, types(evs))
	}
	h.noDeadLetters()
}

// TestRebuiltHolderStopsOnAnotherEvent (RELIABILITY, rebuild path): should
// an event of a holder from before the loss land after all once the
// campaign was rebuilt without it (here: published by the test, as a
// holder past every precaution would), the rebuilt holder's own event under
// that sequence is not skipped as "already stored": its publish fails, its
// outbox keeps the event, and the campaign stops rather than go on with a
// state the history does not show.
func TestRebuiltHolderStopsOnAnotherEvent(t *testing.T) {
	const campaign = "conflict"
	var (
		armed atomic.Bool
		once  sync.Once
		left  atomic.Int32
		js    jetstream.JetStream
	)
	foreign := func(t *testing.T) {
		m, err := events.NewEventMsg("acme", campaign, fsm.Event{Seq: 2, Type: fsm.EvStarted, CommandID: "lost-start", Time: time.Now(), Fence: 1}, "")
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := events.PublishEvents(context.Background(), js, "acme", campaign, []*nats.Msg{m}); err != nil {
			t.Error(err)
		}
	}
	h := newHarness(t, harnessOpts{
		fault: func(int) func(worker.FaultPoint, store.Key) error {
			return func(p worker.FaultPoint, k store.Key) error {
				if k.Campaign == campaign && p == worker.BeforePublish && armed.Load() {
					once.Do(func() { foreign(t) })
				}
				return nil
			}
		},
		logged: func(_ int, msg string) {
			if msg == "left for redelivery" {
				left.Add(1)
			}
		},
	})
	js = h.js
	h.create("acme", campaign, false)
	h.waitIdle("acme", campaign)
	h.flushAll()
	armed.Store(true)
	h.publish("acme", campaign, fsm.Cancel, newID(), nil)

	k := store.Key{Tenant: "acme", Campaign: campaign}
	waitFor(t, 20*time.Second, "the rebuilt holder to stop on the other event 2", func() bool {
		out, err := h.store.Outbox(context.Background(), k)
		return left.Load() > 0 && err == nil && len(out) == 1
	})
	evs := h.history("acme", campaign)
	if types(evs) != types([]events.CloudEvent{{Type: fsm.EvCreated}, {Type: fsm.EvStarted}}) {
		t.Errorf("history %s: want created and the other holder's started only", types(evs))
	}
}

// TestRebuildOfTruncatedHistory: a campaign whose campaign.created is no
// longer in CAMPAIGN_EVENTS (aged out; deleted here) cannot be rebuilt once
// its state is lost: its commands are dead-lettered once, with a reason
// that says so, and nothing is applied.
func TestRebuildOfTruncatedHistory(t *testing.T) {
	const campaign = "truncated"
	h := newHarness(t, harnessOpts{})
	h.create("acme", campaign, false)
	h.publish("acme", campaign, fsm.Pause, newID(), nil) // rejected: a second event
	h.waitEvent("acme", campaign, fsm.EvRejected, 0, 10*time.Second)
	h.waitIdle("acme", campaign)
	ctx := context.Background()
	stream, err := h.js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(events.CampaignEvents("acme", campaign)))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.DeleteMsg(ctx, first.Sequence); err != nil {
		t.Fatal(err)
	}
	h.flushAll()
	h.publish("acme", campaign, fsm.Cancel, newID(), nil)
	dl := h.waitDeadLetters(campaign)
	if len(dl) != 1 || !strings.Contains(dl[0], "cannot be rebuilt") || !strings.Contains(dl[0], "no longer in "+events.StreamEvents) ||
		!strings.Contains(dl[0], fsm.EvCreated) {
		t.Errorf("dead letters %q: want one saying the history lost its campaign.created", dl)
	}
	h.waitCommandsEmpty()
	if evs := h.history("acme", campaign); len(evs) != 1 {
		t.Errorf("history after the dead letter: %s", types(evs))
	}
}

// One loss of the store is waited out once, not once per campaign found
// lost (after a loss of thousands, a wait each would hold every handler
// for hours): the store's loss epoch, lost with the rest, tells a worker
// whether a missing state belongs to the loss it waited for already. A
// newer loss, and a worker that never met this one, wait again.
func TestRebuildWaitOncePerLoss(t *testing.T) {
	h := newHarness(t, harnessOpts{workers: 2})
	ctx := t.Context()
	a, b := h.ws[0], h.ws[1]
	wait := a.RebuildWait()
	t0 := time.Now()
	deadline := func(w *worker.Worker, at time.Time) time.Time {
		t.Helper()
		d, err := w.RebuildDeadline(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if got := deadline(a, t0); !got.Equal(t0.Add(wait)) {
		t.Fatalf("first meeting: deadline %v after it, want %v", got.Sub(t0), wait)
	}
	if got := deadline(a, t0.Add(time.Hour)); !got.Equal(t0.Add(wait)) {
		t.Errorf("another campaign of the same loss, met later: deadline %v after the first meeting, want %v (no new wait)", got.Sub(t0), wait)
	}
	t1 := t0.Add(2 * time.Second)
	if got := deadline(b, t1); !got.Equal(t1.Add(wait)) {
		t.Errorf("a worker that never met the loss: deadline %v after its meeting, want %v", got.Sub(t1), wait)
	}
	h.flushAll() // a second loss
	t2 := t0.Add(2 * time.Hour)
	if got := deadline(a, t2); !got.Equal(t2.Add(wait)) {
		t.Errorf("after a second loss: deadline %v after the meeting, want %v (a new wait)", got.Sub(t2), wait)
	}
	if got := deadline(b, t2.Add(time.Minute)); !got.Equal(t2.Add(time.Minute + wait)) {
		t.Errorf("the other worker after the second loss: deadline %v, want a new wait from its meeting", got.Sub(t2))
	}
}

// A message on a campaign's event subject that is not an event (a hostile
// or broken publisher where permissions do not stop it) is met as an
// invalid history: once the campaign's state is lost, its commands are
// dead-lettered once, with a bounded reason that says so, instead of
// retried for ever on "read last event".
func TestRebuildOfJunkHistory(t *testing.T) {
	const campaign = "junk"
	h := newHarness(t, harnessOpts{})
	h.create("acme", campaign, false)
	h.waitIdle("acme", campaign)
	junk := strings.Repeat("not an event ", 2000) // 26 KB: the reason must stay bounded
	if _, err := h.js.Publish(t.Context(), events.EventSubject("acme", campaign, "campaign.forged"), []byte(junk)); err != nil {
		t.Fatal(err)
	}
	h.flushAll()
	h.publish("acme", campaign, fsm.Cancel, newID(), nil)
	dl := h.waitDeadLetters(campaign)
	if len(dl) != 1 || !strings.Contains(dl[0], "cannot be rebuilt") || len(dl[0]) > 1024 {
		t.Errorf("dead letters %q: want one saying the history cannot be rebuilt, at most 1 KiB", dl)
	}
	h.waitCommandsEmpty()
}

// The same message while the campaign's state is kept: the campaign's next
// event cannot be chained to its history. Like a rolled-back state
// (TestRolledBackStateSignalledAndRepaired), the campaign stops, counted in
// orchestrator_event_conflicts_total, nothing applied twice nor lost: once
// the message is removed (nats stream rmm, as the error says), the cancel
// that waited is published after the campaign's own events.
func TestJunkOnEventSubject(t *testing.T) {
	// The message's Nats-Msg-Id: none, or one in the service's own format,
	// of the campaign's last event or of its next (removed, it holds the
	// next event back as a duplicate until the duplicate window, 1 s here,
	// has passed).
	for name, seq := range map[string]uint64{"no id": 0, "id of the last event": 1, "id of the next event": 2} {
		t.Run(name, func(t *testing.T) {
			campaign := fmt.Sprintf("junk-live-%d", seq)
			h, reg := metricsHarness(t, harnessOpts{sweep: 300 * time.Millisecond, dupWindow: time.Second})
			h.create("acme", campaign, false)
			h.waitIdle("acme", campaign)
			m := nats.NewMsg(events.EventSubject("acme", campaign, "campaign.forged"))
			m.Data = []byte("{nope")
			if seq != 0 {
				m.Header.Set(jetstream.MsgIDHeader, events.EventID("acme", campaign, seq))
			}
			var ack *jetstream.PubAck
			waitFor(t, 10*time.Second, "the message stored (not a duplicate)", func() bool {
				var err error
				if ack, err = h.js.PublishMsg(t.Context(), m); err != nil {
					t.Fatal(err)
				}
				return !ack.Duplicate
			})
			h.publish("acme", campaign, fsm.Cancel, newID(), nil)
			waitMetric(t, reg, "the conflict counted", func(s *metricstest.Scrape) bool { return s.Sum("orchestrator_event_conflicts_total") >= 1 })
			stream, err := h.js.Stream(t.Context(), events.StreamEvents)
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.DeleteMsg(t.Context(), ack.Sequence); err != nil {
				t.Fatal(err)
			}
			evs := h.waitEvent("acme", campaign, fsm.EvCancelled, 0, 20*time.Second)
			checkSequence(t, evs)
			if len(evs) != 2 {
				t.Errorf("history %s: want campaign.created, campaign.cancelled", types(evs))
			}
			h.noDeadLetters()
			h.waitCommandsEmpty()
		})
	}
}
