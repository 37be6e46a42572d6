package worker_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
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
	time.Sleep(100 * time.Millisecond) // the pause parked behind the step in flight
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
