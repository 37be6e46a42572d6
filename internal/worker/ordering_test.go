package worker_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/worker"
)

// A pause (or cancel) that the stream accepts after validate's call
// returned but before its result is written (step.succeeded is not stored
// yet: the step has not ended) is applied before segment starts (CONTRACT
// section 5: "the step in flight finishes; no further step starts"), also
// when its own handler is slow to park it. Published at AfterStepCall or at
// the BeforeWrite of the result's write. (When a step's result and the next
// step.started went in one write after a read ahead, the second failed:
// segment started in that write, the pause waiting behind it.)
func TestControlAcceptedBeforeResultWrite(t *testing.T) {
	for _, tc := range []struct {
		verb fsm.Verb
		ev   string
		at   worker.FaultPoint
	}{
		{fsm.Pause, "paused", worker.AfterStepCall}, {fsm.Pause, "paused", worker.BeforeWrite},
		{fsm.Cancel, "cancelled", worker.AfterStepCall}, {fsm.Cancel, "cancelled", worker.BeforeWrite},
	} {
		at := tc.at
		t.Run(string(tc.verb)+"/"+string(at), func(t *testing.T) {
			const camp = "pause-window"
			var (
				h      *harness
				ready  = make(chan struct{})
				called atomic.Bool // validate's call returned
				once   sync.Once
			)
			// The pause's own handler is slow to park it (a GC pause, a
			// full set of slots, network latency): only the read-ahead
			// can put it before segment.
			slow := func(s store.Store) worker.Store { return slowPark{Store: s} }
			h = newHarness(t, harnessOpts{wrap: slow, fault: func(int) func(worker.FaultPoint, store.Key) error {
				return func(p worker.FaultPoint, k store.Key) error {
					if k.Campaign != camp {
						return nil
					}
					if p == worker.AfterStepCall {
						called.Store(true)
					}
					if p == at && called.Load() {
						once.Do(func() {
							<-ready
							// PubAck received: the stream accepted the pause
							// before validate's result is written.
							h.publish("acme", camp, tc.verb, newID(), nil)
						})
					}
					return nil
				}
			}})
			close(ready)
			h.create("acme", camp, true)
			h.waitEvent("acme", camp, "campaign."+tc.ev, 0, 20*time.Second)
			h.waitIdle("acme", camp)
			evs := h.history("acme", camp)
			checkSequence(t, evs)
			got := types(evs)
			want := "created,started,step.started(validate),step.succeeded(validate)," + tc.ev
			if got != want {
				t.Fatalf("%s accepted (PubAck) at %s, before validate's result was written;\nhistory %s\nwant    %s", tc.verb, at, got, want)
			}
		})
	}
}

// The write of validate's result (with the next advance parked) loses its
// reply after Redis ran it: go-redis and the worker retry it. The campaign
// completes with each step called once (one Idempotency-Key each), events
// 1..N, and nothing left in the inbox: neither a second advance parked nor
// the trigger lost.
func TestResultWriteLostReply(t *testing.T) {
	const camp = "result-lost"
	h := newHarness(t, harnessOpts{proxy: true})
	dropped := h.proxy.DropReply(func(args [][]byte) bool {
		if len(args) < 2 || !bytes.EqualFold(args[0], []byte("evalsha")) {
			return false
		}
		for _, a := range args {
			if bytes.Contains(a, []byte("campaign.evt.acme."+camp+".step.succeeded")) {
				return true
			}
		}
		return false
	})
	h.create("acme", camp, true)
	h.waitEvent("acme", camp, fsm.EvCompleted, 0, 30*time.Second)
	st := h.waitIdle("acme", camp)
	evs := h.history("acme", camp)
	checkSequence(t, evs)
	if dropped() != 1 {
		t.Fatalf("the result write's reply was not dropped (%d)", dropped())
	}
	want := fmt.Sprint(wantStandardRun())
	var got []string
	for _, e := range evs {
		got = append(got, e.Type)
	}
	if fmt.Sprint(got) != want || st.State != fsm.Completed {
		t.Fatalf("history %s (stored %s)", types(evs), st.State)
	}
	calls := h.down.Calls(camp)
	if len(calls) != len(standard) {
		t.Fatalf("%d calls, want %d: %+v", len(calls), len(standard), calls)
	}
	in, err := h.store.Inbox(context.Background(), store.Key{Tenant: "acme", Campaign: camp}, 0)
	if err != nil || len(in) != 0 {
		t.Fatalf("inbox %v %v", in, err)
	}
}

// slowPark delays a handler's parking (Enqueue with a claim) of a pause.
type slowPark struct{ store.Store }

func (s slowPark) Enqueue(ctx context.Context, k store.Key, it store.Item, c store.Claim) (store.Enqueued, error) {
	if c.Token != "" && (bytes.Contains(it.Data, []byte(".pause")) || bytes.Contains(it.Data, []byte(".cancel"))) {
		time.Sleep(300 * time.Millisecond)
	}
	return s.Store.Enqueue(ctx, k, it, c)
}
