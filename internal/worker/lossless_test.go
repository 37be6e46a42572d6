package worker_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/metrics/metricstest"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/worker"
)

// TestRolledBackStateSignalledAndRepaired (found by a review of
// 2026-12-02): Redis fails over to a replica that missed the campaign's
// last write (here: the campaign's keys DUMPed before a rejected pause and
// RESTOREd after it). The store's state is one version behind the history,
// but not missing, so no rebuild runs. The next command's event collides
// with the stored one (events.ErrEventConflict): the campaign cannot go on
// without an operator, and says so (orchestrator_event_conflicts_total,
// the OrchestratorEventConflict alert, an ERROR log). The README's repair
// (the campaign's state and outbox removed, then rebuilt from its history)
// brings it back: the cancel that waited is applied.
func TestRolledBackStateSignalledAndRepaired(t *testing.T) {
	const campaign = "rolled"
	h, reg := metricsHarness(t, harnessOpts{sweep: 300 * time.Millisecond})
	ctx := context.Background()
	h.create("acme", campaign, false)
	h.waitIdle("acme", campaign)

	rc := redis.NewClient(&redis.Options{Addr: h.redis.Addr()})
	defer rc.Close()
	keys, err := rc.Keys(ctx, "*{acme/"+campaign+"}*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys %v: %v", keys, err)
	}
	dumps := map[string]string{}
	for _, k := range keys {
		d, err := rc.Dump(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		dumps[k] = d
	}
	// A write the replica misses: a pause on a pending campaign, rejected
	// (campaign.command.rejected is event 2).
	h.publish("acme", campaign, fsm.Pause, newID(), nil)
	h.waitEvent("acme", campaign, fsm.EvRejected, 0, 10*time.Second)
	h.waitIdle("acme", campaign)
	// The failover: the campaign's keys as the replica has them.
	for k, d := range dumps {
		if err := rc.RestoreReplace(ctx, k, 0, d).Err(); err != nil {
			t.Fatal(err)
		}
	}

	start, cancel := newID(), newID()
	h.publish("acme", campaign, fsm.Start, start, nil)
	s := waitMetric(t, reg, "the conflict counted", func(s *metricstest.Scrape) bool { return s.Sum("orchestrator_event_conflicts_total") >= 1 })
	t.Logf("conflicts counted: %v", s.Sum("orchestrator_event_conflicts_total"))
	h.publish("acme", campaign, fsm.Cancel, cancel, nil)
	k := store.Key{Tenant: "acme", Campaign: campaign}
	waitFor(t, 10*time.Second, "the cancel parked", func() bool {
		items, _ := h.store.Inbox(ctx, k, 10)
		for _, it := range items {
			if it.ID == cancel {
				return true
			}
		}
		return false
	})

	// The repair: the state behind the history and the outbox written from
	// it removed, then the campaign rebuilt from its history (what
	// orchestrator rebuild --campaign does for a campaign without state).
	if err := rc.Del(ctx, "co:{acme/"+campaign+"}:state", "co:{acme/"+campaign+"}:outbox").Err(); err != nil {
		t.Fatal(err)
	}
	hist := h.history("acme", campaign)
	if _, err := worker.InstallHistory(ctx, h.store, hist, nil); err != nil {
		t.Fatal(err)
	}
	evs := h.waitEvent("acme", campaign, fsm.EvCancelled, len(hist), 20*time.Second)
	checkSequence(t, evs)
	for _, e := range evs {
		if e.CommandID == start && e.Type == fsm.EvStarted {
			t.Errorf("the start applied on the rolled-back state was published: %s", types(evs))
		}
	}
}

// TestExpiredCampaignIsNoLoss (found by a review of 2026-12-02): a
// campaign that ended and expired from the store (CAMPAIGN_RETENTION) while
// its events are still in CAMPAIGN_EVENTS is not a loss of the store: a
// command for it is dead-lettered as for an unknown campaign without
// waiting out a loss (RebuildWait) nor minting the store's loss epoch.
func TestExpiredCampaignIsNoLoss(t *testing.T) {
	const campaign = "expired"
	var waits atomic.Int32
	h := newHarness(t, harnessOpts{retention: time.Second, logged: func(_ int, msg string) {
		if strings.HasPrefix(msg, "campaign state missing but its history is kept") {
			waits.Add(1)
		}
	}})
	ctx := context.Background()
	h.create("acme", campaign, false)
	h.waitIdle("acme", campaign)
	h.publish("acme", campaign, fsm.Cancel, newID(), nil)
	h.waitEvent("acme", campaign, fsm.EvCancelled, 0, 10*time.Second)
	k := store.Key{Tenant: "acme", Campaign: campaign}
	waitFor(t, 10*time.Second, "the ended campaign to expire from the store", func() bool {
		_, err := h.store.Load(ctx, k)
		return errors.Is(err, store.ErrNotFound)
	})
	rc := redis.NewClient(&redis.Options{Addr: h.redis.Addr()})
	defer rc.Close()
	before, _ := rc.Keys(ctx, "*loss-epoch*").Result()

	began := time.Now()
	h.publish("acme", campaign, fsm.Resume, newID(), nil)
	dl := h.waitDeadLetters(campaign)
	took := time.Since(began)
	after, _ := rc.Keys(ctx, "*loss-epoch*").Result()
	t.Logf("dead letters %q; took %s; rebuild waits logged %d; loss-epoch keys before %v, after %v", dl, took.Round(time.Millisecond), waits.Load(), before, after)
	if len(after) != len(before) {
		t.Errorf("the loss epoch was minted for an expired campaign: %v", after)
	}
	if waits.Load() > 0 {
		t.Errorf("a command for an expired campaign waited out a store loss that never happened (RebuildWait %s)", h.ws[0].RebuildWait())
	}
}
