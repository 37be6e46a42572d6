package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/worker"
)

var standard = []string{"validate", "segment", "render", "schedule", "dispatch"}

// wantStandardRun is the history of a campaign created with start and
// completed without incident.
func wantStandardRun() []string {
	want := []string{fsm.EvCreated, fsm.EvStarted}
	for range standard {
		want = append(want, fsm.EvStepStarted, fsm.EvStepSucceeded)
	}
	return append(want, fsm.EvCompleted)
}

func TestEndToEnd(t *testing.T) {
	for _, mem := range []bool{false, true} {
		name := map[bool]string{false: "redis", true: "memory"}[mem]
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{memory: mem})
			h.publish("acme", "spring", fsm.Create, newID(), fsm.CreatePayload{Name: "Spring sale"})
			h.waitEvent("acme", "spring", fsm.EvCreated, 0, 10*time.Second)
			h.publish("acme", "spring", fsm.Start, newID(), nil)
			evs := h.waitEvent("acme", "spring", fsm.EvCompleted, 0, 20*time.Second)
			checkSequence(t, evs)
			want := wantStandardRun()
			want = append(want[:1], want[1:]...)
			if len(evs) != len(want) {
				t.Fatalf("events %s, want %d", types(evs), len(want))
			}
			for i, e := range evs {
				if e.Type != want[i] {
					t.Fatalf("event %d is %s, want %s (%s)", i+1, e.Type, want[i], types(evs))
				}
			}
			c := h.waitIdle("acme", "spring")
			if c.State != fsm.Completed || c.State != stateOf(evs) || c.Seq != uint64(len(evs)) {
				t.Fatalf("stored state %s seq %d; events say %s with %d events", c.State, c.Seq, stateOf(evs), len(evs))
			}
			if len(c.Outputs) != len(standard) {
				t.Fatalf("outputs %v", c.Outputs)
			}
			calls := h.down.Calls("spring")
			if len(calls) != len(standard) {
				t.Fatalf("%d downstream calls, want %d", len(calls), len(standard))
			}
			for i, c := range calls {
				if c.Step != standard[i] || c.Key != fmt.Sprintf("acme.spring.%s.1", standard[i]) {
					t.Fatalf("call %d: step %s key %s", i, c.Step, c.Key)
				}
			}
		})
	}
}

func TestDuplicateCommandOneEffect(t *testing.T) {
	h := newHarness(t, harnessOpts{dupWindow: time.Second})
	id := newID()
	for range 20 {
		h.publish("acme", "dup", fsm.Create, id, fsm.CreatePayload{Name: "dup"})
	}
	h.waitEvent("acme", "dup", fsm.EvCreated, 0, 10*time.Second)
	h.waitIdle("acme", "dup")
	// After the stream's duplicate window the same id is stored again: the
	// campaign's ledger must still refuse it.
	time.Sleep(1500 * time.Millisecond) // outlive the 1 s duplicate window
	h.publish("acme", "dup", fsm.Create, id, fsm.CreatePayload{Name: "dup"})
	startID := newID()
	h.publish("acme", "dup", fsm.Start, startID, nil)
	h.publish("acme", "dup", fsm.Start, startID, nil)
	h.waitEvent("acme", "dup", fsm.EvCompleted, 0, 20*time.Second)
	h.waitIdle("acme", "dup")
	evs := h.history("acme", "dup")
	checkSequence(t, evs)
	if n := count(evs, fsm.EvCreated); n != 1 {
		t.Fatalf("%d campaign.created events: %s", n, types(evs))
	}
	if n := count(evs, fsm.EvRejected); n != 0 {
		t.Fatalf("a duplicate produced a rejection: %s", types(evs))
	}
	if n := count(evs, fsm.EvStarted); n != 1 {
		t.Fatalf("%d campaign.started events: %s", n, types(evs))
	}
}

// Two workers, many commands for the same campaigns: the downstream never
// sees two calls for one campaign at once, and histories stay gap-free.
func TestOneWriterPerCampaign(t *testing.T) {
	h := newHarness(t, harnessOpts{workers: 2, perWorker: 8})
	const n = 6
	for i := range n {
		h.create("acme", fmt.Sprintf("c%d", i), true)
	}
	// Hammer the campaigns with control commands while they run.
	for round := range 3 {
		for i := range n {
			c := fmt.Sprintf("c%d", i)
			h.publish("acme", c, fsm.Pause, newID(), nil)
			h.publish("acme", c, fsm.Resume, newID(), nil)
			if round == 2 && i%3 == 0 {
				h.publish("acme", c, fsm.Start, newID(), nil) // rejected: not pending
			}
		}
	}
	for i := range n {
		c := fmt.Sprintf("c%d", i)
		// A resume may have been rejected (not paused yet) leaving it paused.
		waitFor(t, 30*time.Second, c+" ends or rests", func() bool {
			s := stateOf(h.history("acme", c))
			return s == fsm.Completed || s == fsm.Paused
		})
		if stateOf(h.history("acme", c)) == fsm.Paused {
			h.publish("acme", c, fsm.Resume, newID(), nil)
		}
		evs := h.waitEvent("acme", c, fsm.EvCompleted, 0, 30*time.Second)
		checkSequence(t, evs)
		st := h.waitIdle("acme", c)
		if st.State != fsm.Completed {
			t.Fatalf("%s stored %s", c, st.State)
		}
		per := map[string]int{}
		for _, cl := range h.down.Calls(c) {
			per[cl.Step]++
		}
		for _, s := range standard {
			if per[s] != 1 {
				t.Errorf("%s: step %s called %d times", c, s, per[s])
			}
		}
	}
	if ov := h.down.Overlaps(); len(ov) > 0 {
		t.Fatalf("overlapping downstream calls: %v", ov)
	}
	h.noDeadLetters() // busy campaigns' commands waited; none was dead-lettered
}

// A worker stalled past its lock TTL cannot write; the other's result stands.
func TestStalledWorkerIsFenced(t *testing.T) {
	st := newStall("stall")
	h := newHarness(t, harnessOpts{workers: 2, fault: st.fault})
	h.create("acme", "stall", true)
	h.waitEvent("acme", "stall", fsm.EvCompleted, 0, 20*time.Second)
	c := h.waitIdle("acme", "stall")
	before := h.history("acme", "stall")
	// The stalled worker now tries to write its stale step result, fails,
	// and finishes its message.
	st.wake(t)
	evs := h.history("acme", "stall")
	checkSequence(t, evs)
	if len(evs) != len(before) {
		t.Fatalf("events after the stalled worker woke: %s, before %s", types(evs), types(before))
	}
	if c2, _ := h.store.Load(context.Background(), store.Key{Tenant: "acme", Campaign: "stall"}); c2.Version != c.Version || c2.State != fsm.Completed {
		t.Fatalf("state changed after completion: %+v", c2)
	}
	if n := count(evs, fsm.EvStepSucceeded); n != len(standard) {
		t.Fatalf("%d step.succeeded: %s", n, types(evs))
	}
	calls := h.down.Calls("stall")
	checkKeys(t, "acme", "stall", calls)
	if len(calls) != len(standard)+1 || calls[0].Key != calls[1].Key || calls[0].Fence == calls[1].Fence {
		t.Fatalf("the re-run of the stalled step: %+v (want the first step twice, same key, new fence)", calls)
	}
}

// A worker that stalls mid-step past the ack wait, wakes after another
// worker took its message and the lock over, and is fenced, leaves that
// message unacknowledged: when the new holder then dies, the message comes
// back and a third handler completes the campaign, gap-free (issue 7, 2).
func TestStalledWorkerLeavesTakenOverMessage(t *testing.T) {
	for _, memory := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "memory"}[memory], func(t *testing.T) {
			const camp = "takeover"
			var (
				mu            sync.Mutex
				a, b          = -1, -1 // the stalled worker, the one that took over
				calls         int
				wake          = make(chan struct{})
				finished      = make(chan struct{}) // a's handler is done with its message
				finishedOnce  sync.Once
				taken         = make(chan struct{}) // b is in its step call
				unblock       = make(chan struct{})
				unblockedOnce sync.Once
			)
			t.Cleanup(func() { unblockedOnce.Do(func() { close(unblock) }) })
			done := func() { finishedOnce.Do(func() { close(finished) }) }
			h := newHarness(t, harnessOpts{workers: 3, memory: memory,
				fault: func(i int) func(worker.FaultPoint, store.Key) error {
					return func(p worker.FaultPoint, k store.Key) error {
						if k.Campaign != camp {
							return nil
						}
						mu.Lock()
						switch {
						case p == worker.BeforeStepCall:
							if calls++; calls == 2 {
								b = i
								close(taken)
							}
						case p == worker.AfterStepCall && a == -1:
							a = i
							mu.Unlock()
							select { // far past the ack wait: the message goes to b
							case <-wake:
							case <-time.After(30 * time.Second):
							}
							return nil
						case p == worker.AfterStepCall && i == b:
							b = -2 // b dies holding the lock, its message unended
							mu.Unlock()
							return errInjected
						case p == worker.BeforeAck && i == a:
							done() // today's main: a acknowledges b's message
						}
						mu.Unlock()
						return nil
					}
				},
				logged: func(i int, msg string) {
					mu.Lock()
					isA := i == a
					mu.Unlock()
					if isA && strings.Contains(msg, "left to it") {
						done()
					}
				},
			})
			h.down.on(camp, "validate", behaviour{}, behaviour{Block: unblock})
			h.create("acme", camp, true)
			select {
			case <-taken:
			case <-time.After(20 * time.Second):
				t.Fatal("no other worker took the stalled worker's message over")
			}
			close(wake) // a wakes: its write is fenced, b holds the lock
			select {
			case <-finished:
			case <-time.After(10 * time.Second):
				t.Fatal("the stalled worker never finished its message")
			}
			unblockedOnce.Do(func() { close(unblock) }) // b's call returns, and b dies
			h.waitEvent("acme", camp, fsm.EvCompleted, 0, 30*time.Second)
			h.waitIdle("acme", camp)
			evs := h.history("acme", camp)
			checkSequence(t, evs)
			if got, want := count(evs, fsm.EvStepSucceeded), len(standard); got != want {
				t.Fatalf("%d step.succeeded, want %d: %s", got, want, types(evs))
			}
			got := h.down.Begun(camp)
			checkKeys(t, "acme", camp, got)
			if len(got) < 3 || got[0].Step != "validate" || got[1].Step != "validate" || got[2].Step != "validate" || got[2].Key != got[0].Key {
				t.Fatalf("calls: %+v (want validate three times, same key)", got)
			}
			h.noDeadLetters()
		})
	}
}

// pause and cancel published while a step runs take effect before the next
// step starts, with 0 ms steps and many workers.
func TestControlBeatsAdvance(t *testing.T) {
	h := newHarness(t, harnessOpts{workers: 2, perWorker: 8})
	for _, verb := range []fsm.Verb{fsm.Pause, fsm.Cancel} {
		for i := range 5 {
			c := fmt.Sprintf("%s-%d", verb, i)
			step := standard[i%4]
			block := make(chan struct{})
			h.down.on(c, step, behaviour{Block: block})
			h.create("acme", c, true)
			select {
			case <-h.down.startedCh(c, step):
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: step %s never called", c, step)
			}
			h.publish("acme", c, verb, newID(), nil) // accepted by the stream while the step runs
			close(block)
			want := map[fsm.Verb]string{fsm.Pause: fsm.EvPaused, fsm.Cancel: fsm.EvCancelled}[verb]
			h.waitEvent("acme", c, want, 0, 10*time.Second)
			h.waitIdle("acme", c)
			evs := h.history("acme", c)
			checkSequence(t, evs)
			next := standard[i%4+1]
			for _, cl := range h.down.Calls(c) {
				if cl.Step == next {
					t.Fatalf("%s: step %s ran after the %s: %s", c, next, verb, types(evs))
				}
			}
			if last := evs[len(evs)-1].Type; last != want {
				t.Fatalf("%s: last event %s: %s", c, last, types(evs))
			}
			if verb == fsm.Pause {
				h.publish("acme", c, fsm.Resume, newID(), nil)
				evs = h.waitEvent("acme", c, fsm.EvCompleted, 0, 20*time.Second)
				checkSequence(t, evs)
			}
		}
	}
	if ov := h.down.Overlaps(); len(ov) > 0 {
		t.Fatalf("overlaps: %v", ov)
	}
	h.noDeadLetters()
}

// A crash at each point of guarantee 5: the campaign completes, events are
// gap-free, and a repeated downstream call carries the same Idempotency-Key.
func TestCrashAtEveryPoint(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	crashed := map[string]bool{}
	h := newHarness(t, harnessOpts{workers: 2, fault: func(int) func(worker.FaultPoint, store.Key) error {
		return func(p worker.FaultPoint, k store.Key) error {
			if string(p) != k.Campaign[len("crash-"):] {
				return nil
			}
			mu.Lock()
			defer mu.Unlock()
			seen[k.Campaign]++
			// Crash once, in the middle of the run (the 4th time the point
			// is hit; the first for the ack of the one message a campaign
			// created and started at once is made of).
			nth := 4
			if p == worker.BeforeAck {
				nth = 1
			}
			if seen[k.Campaign] == nth && !crashed[k.Campaign] {
				crashed[k.Campaign] = true
				return errInjected
			}
			return nil
		}
	}})
	for _, p := range worker.FaultPoints {
		h.create("acme", "crash-"+string(p), true)
	}
	for _, p := range worker.FaultPoints {
		c := "crash-" + string(p)
		t.Run(string(p), func(t *testing.T) {
			h.waitEvent("acme", c, fsm.EvCompleted, 0, 30*time.Second)
			st := h.waitIdle("acme", c)
			evs := h.history("acme", c)
			checkSequence(t, evs)
			if st.State != fsm.Completed || int(st.Seq) != len(evs) {
				t.Fatalf("stored %s seq %d; %d events", st.State, st.Seq, len(evs))
			}
			mu.Lock()
			did := crashed[c]
			mu.Unlock()
			if !did {
				t.Fatalf("no crash was injected at %s", p)
			}
			if n := count(evs, fsm.EvStepSucceeded); n != len(standard) {
				t.Fatalf("%d step.succeeded: %s", n, types(evs))
			}
			calls := h.down.Calls(c)
			checkKeys(t, "acme", c, calls)
			keys := map[string]string{}
			for _, cl := range calls {
				if k, ok := keys[cl.Step]; ok && k != cl.Key {
					t.Fatalf("step %s called again with key %s, first %s", cl.Step, cl.Key, k)
				}
				keys[cl.Step] = cl.Key
			}
		})
	}
}

func TestStepBackoff(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	// reset connection → retried, then success
	h.down.on("reset", "segment", behaviour{Reset: true})
	// a timeout (client timeout 2 s) → retried
	h.down.on("slow", "render", behaviour{Delay: 2500 * time.Millisecond})
	// 500 → exactly one call, the campaign fails; retry re-runs it
	h.down.on("http500", "validate", behaviour{Status: 500})
	for _, c := range []string{"reset", "slow", "http500"} {
		h.create("acme", c, true)
	}
	for _, c := range []string{"reset", "slow"} {
		evs := h.waitEvent("acme", c, fsm.EvCompleted, 0, 30*time.Second)
		checkSequence(t, evs)
		if count(evs, fsm.EvStepRetrying) != 1 {
			t.Fatalf("%s: want one step.retrying: %s", c, types(evs))
		}
		checkKeys(t, "acme", c, h.down.Calls(c))
	}
	if n := len(h.down.Calls("reset")); n != len(standard)+1 {
		t.Fatalf("reset: %d calls, want %d", n, len(standard)+1)
	}
	evs := h.waitEvent("acme", "http500", fsm.EvFailed, 0, 20*time.Second)
	checkSequence(t, evs)
	h.waitIdle("acme", "http500")
	if calls := h.down.Calls("http500"); len(calls) != 1 {
		t.Fatalf("500: %d calls, want exactly 1", len(calls))
	}
	if count(evs, fsm.EvStepFailed) != 1 || count(evs, fsm.EvStepRetrying) != 0 {
		t.Fatalf("500: %s", types(evs))
	}
	h.publish("acme", "http500", fsm.Retry, newID(), nil)
	evs = h.waitEvent("acme", "http500", fsm.EvCompleted, len(evs), 20*time.Second)
	checkSequence(t, evs)
	calls := h.down.Calls("http500")
	if len(calls) != len(standard)+1 || calls[0].Key != "acme.http500.validate.1" || calls[1].Key != "acme.http500.validate.2" {
		t.Fatalf("after retry: calls %+v", calls)
	}
}

// Bad JSON, a tenant mismatch and an unknown verb: dead-lettered with a
// reason, acked (nothing left on the work queue), and the service goes on.
func TestInvalidCommandsDeadLettered(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.create("acme", "known", false)
	h.waitEvent("acme", "known", fsm.EvCreated, 0, 10*time.Second)
	ctx := context.Background()
	send := func(subject, id string, body string) {
		m := nats.NewMsg(subject)
		m.Header.Set(nats.MsgIdHdr, id)
		m.Data = []byte(body)
		if _, err := h.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	send("campaign.cmd.acme.bad1.create", "bad-json", `{"id": "bad-json", "type": `)
	send("campaign.cmd.acme.bad2.create", "mismatch", `{"id":"mismatch","type":"create","tenant_id":"other","campaign_id":"bad2","payload":{"name":"x"}}`)
	send("campaign.cmd.acme.known.explode", "verb", `{"id":"verb","type":"explode","tenant_id":"acme","campaign_id":"known"}`)
	send("campaign.cmd.acme.ghost.start", "ghost", `{"id":"ghost","type":"start","tenant_id":"acme","campaign_id":"ghost"}`)

	dlq, err := h.js.Stream(ctx, events.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"bad-json": "campaign.dlq.acme.bad1", "mismatch": "campaign.dlq.acme.bad2", "verb": "campaign.dlq.acme.known", "ghost": "campaign.dlq.acme.ghost"}
	waitFor(t, 10*time.Second, "4 dead letters", func() bool {
		info, err := dlq.Info(ctx)
		return err == nil && info.State.Msgs >= 4
	})
	for id, subj := range want {
		m, err := dlq.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			t.Fatalf("%s: no dead letter on %s: %v", id, subj, err)
		}
		if m.Header.Get(events.HdrReason) == "" {
			t.Fatalf("%s: dead letter without reason: %v", id, m.Header)
		}
	}
	evs := h.waitEvent("acme", "known", fsm.EvRejected, 0, 10*time.Second)
	if evs[len(evs)-1].CommandID != "verb" {
		t.Fatalf("rejected event for command %q", evs[len(evs)-1].CommandID)
	}
	if len(h.history("acme", "ghost")) != 0 {
		t.Fatal("events for an unknown campaign")
	}
	cmds, _ := h.js.Stream(ctx, events.StreamCommands)
	waitFor(t, 10*time.Second, "work queue empty", func() bool {
		info, err := cmds.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
	h.create("acme", "after", true)
	h.waitEvent("acme", "after", fsm.EvCompleted, 0, 20*time.Second)
	for _, w := range h.ws {
		if err := w.Ready(); err != nil {
			t.Fatalf("worker not ready: %v", err)
		}
	}
}

// Redis stopped during a run for longer than max_deliver × ack wait: no
// command is lost or dead-lettered and every campaign finishes.
func TestRedisOutage(t *testing.T) {
	h := newHarness(t, harnessOpts{maxDeliver: 2, workers: 2})
	for i := range 4 {
		h.down.on(fmt.Sprintf("o%d", i), "render", behaviour{Delay: 300 * time.Millisecond})
		h.create("acme", fmt.Sprintf("o%d", i), true)
	}
	waitFor(t, 10*time.Second, "campaigns running", func() bool { return len(h.down.Calls("o0")) >= 1 })
	h.redis.Stop()
	// Commands keep arriving during the outage.
	for i := range 4 {
		h.create("acme", fmt.Sprintf("late%d", i), true)
	}
	waitFor(t, 5*time.Second, "workers not ready", func() bool { return h.ws[0].Ready() != nil })
	time.Sleep(2*ackWait + time.Second) // longer than max_deliver (2) × ack wait
	h.redis.Start()
	for _, c := range []string{"o0", "o1", "o2", "o3", "late0", "late1", "late2", "late3"} {
		evs := h.waitEvent("acme", c, fsm.EvCompleted, 0, 40*time.Second)
		checkSequence(t, evs)
	}
	h.noDeadLetters()
}

// An outbox published long after its state write (past the duplicate
// window) adds no repeated event.
func TestLateOutboxNoRepeat(t *testing.T) {
	var crashes atomic.Int32
	h := newHarness(t, harnessOpts{dupWindow: time.Second, fault: func(int) func(worker.FaultPoint, store.Key) error {
		return func(p worker.FaultPoint, k store.Key) error {
			// Crash after publishing, before trimming the outbox: the
			// redelivery (ack wait 1.5 s > window 1 s) publishes it again.
			if p == worker.AfterPublish && k.Campaign == "late" && crashes.Add(1) <= 2 {
				return errInjected
			}
			return nil
		}
	}})
	h.create("acme", "late", true)
	h.waitEvent("acme", "late", fsm.EvCompleted, 0, 30*time.Second)
	h.waitIdle("acme", "late")
	evs := h.history("acme", "late")
	checkSequence(t, evs)
	if crashes.Load() < 2 {
		t.Fatalf("only %d crashes injected", crashes.Load())
	}
	if len(evs) != len(wantStandardRun()) {
		t.Fatalf("events %s", types(evs))
	}
}

var _ = jetstream.ErrMsgNotFound

// A worker stopped (SIGTERM) while a step runs past its grace period hands
// the campaign over: another worker re-runs the step with the same
// Idempotency-Key and the campaign completes, gap-free.
func TestShutdownMidStepHandsOver(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	runner := -1
	stepping := make(chan struct{})
	h := newHarness(t, harnessOpts{workers: 2, fault: func(i int) func(worker.FaultPoint, store.Key) error {
		return func(p worker.FaultPoint, k store.Key) error {
			if p != worker.BeforeStepCall || k.Campaign != "handover" {
				return nil
			}
			mu.Lock()
			defer mu.Unlock()
			if calls++; calls == 2 { // segment
				runner = i
				close(stepping)
			}
			return nil
		}
	}})
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	h.down.on("handover", "segment", behaviour{Block: block})
	h.create("acme", "handover", true)
	select {
	case <-stepping:
	case <-time.After(10 * time.Second):
		t.Fatal("segment never started")
	}
	<-h.down.startedCh("handover", "segment")
	mu.Lock()
	h.stops[runner]() // SIGTERM to the worker running the step
	mu.Unlock()
	h.waitEvent("acme", "handover", fsm.EvCompleted, 0, 30*time.Second)
	h.waitIdle("acme", "handover")
	evs := h.history("acme", "handover")
	checkSequence(t, evs)
	if n := count(evs, fsm.EvStepStarted); n != len(standard) {
		t.Fatalf("%d step.started (a re-run must not start the step again): %s", n, types(evs))
	}
	var segment []call
	for _, c := range h.down.Begun("handover") {
		if c.Step == "segment" {
			segment = append(segment, c)
		}
	}
	if len(segment) != 2 || segment[0].Key != "acme.handover.segment.1" || segment[1].Key != segment[0].Key || segment[0].Fence == segment[1].Fence {
		t.Fatalf("segment calls: %+v (want the cut call and its re-run: same key, new fence)", segment)
	}
	h.noDeadLetters()
}

// A step whose output cannot fit in an event fails the step (and the
// campaign) instead of blocking the campaign on a publish that can never
// succeed; the worker goes on.
func TestOversizedOutputFailsStep(t *testing.T) {
	h := newHarness(t, harnessOpts{memory: true})
	big := append(append([]byte(`{"html":"`), bytes.Repeat([]byte("<b>x</b>"), 130_000)...), `"}`...) // about 1 MB
	h.down.on("big", "render", behaviour{Body: big})
	h.create("acme", "big", true)
	h.waitEvent("acme", "big", fsm.EvFailed, 0, 20*time.Second)
	h.waitIdle("acme", "big")
	evs := h.history("acme", "big")
	checkSequence(t, evs)
	var failed struct {
		Step  string `json:"step"`
		Error string `json:"error"`
	}
	for _, e := range evs {
		if e.Type == fsm.EvStepFailed {
			_ = json.Unmarshal(e.Data, &failed)
		}
	}
	if failed.Step != "render" || !strings.Contains(failed.Error, "does not fit in an event") {
		t.Fatalf("step.failed %+v; events %s", failed, types(evs))
	}
	h.create("acme", "after-big", true)
	h.waitEvent("acme", "after-big", fsm.EvCompleted, 0, 20*time.Second)
}

// A campaign that ended and expired from the store (CAMPAIGN_RETENTION)
// keeps its events in CAMPAIGN_EVENTS: creating its id again is dead-lettered
// rather than mixing a second history into the first.
func TestReusedIDAfterRetentionRefused(t *testing.T) {
	h := newHarness(t, harnessOpts{retention: 300 * time.Millisecond})
	h.create("acme", "reuse", true)
	evs := h.waitEvent("acme", "reuse", fsm.EvCompleted, 0, 20*time.Second)
	waitFor(t, 10*time.Second, "the ended campaign to expire from the store", func() bool {
		_, err := h.store.Load(context.Background(), store.Key{Tenant: "acme", Campaign: "reuse"})
		return errors.Is(err, store.ErrNotFound)
	})
	id := newID()
	h.publish("acme", "reuse", fsm.Create, id, fsm.CreatePayload{Name: "again", Start: true})
	ctx := context.Background()
	dlq, _ := h.js.Stream(ctx, events.StreamDLQ)
	var m *jetstream.RawStreamMsg
	waitFor(t, 10*time.Second, "the dead letter", func() bool {
		var err error
		m, err = dlq.GetLastMsgForSubject(ctx, "campaign.dlq.acme.reuse")
		return err == nil
	})
	if m.Header.Get(events.HdrCommandID) != id || !strings.Contains(m.Header.Get(events.HdrReason), "already used") {
		t.Fatalf("dead letter %v", m.Header)
	}
	if got := h.history("acme", "reuse"); len(got) != len(evs) {
		t.Fatalf("history changed: %s", types(got))
	}
}

// No command anyone may publish stops another (CONTRACT guarantee 6, issue
// 7 part 1): a command whose quoted fields hold ~400,000 bytes of invalid
// UTF-8 is dead-lettered once with a bounded reason and rejected, and the
// campaign's later commands are applied; the same for an unknown campaign,
// and for a create whose name is that large (its events cannot fit).
func TestPoisonCommandsBlockNothing(t *testing.T) {
	h := newHarness(t, harnessOpts{workers: 2})
	huge := strings.Repeat("\xff", 400_000)
	poison := func(campaign, verb string, payload string) {
		t.Helper()
		m := nats.NewMsg(events.CommandSubject("acme", campaign, fsm.Verb(verb)))
		m.Header.Set(nats.MsgIdHdr, newID())
		typ := verb
		if payload == "" {
			typ = huge
		}
		m.Data = fmt.Appendf(nil, `{"type":%q,"tenant_id":"acme","campaign_id":%q,"payload":{%s}}`, typ, campaign, payload)
		m.Data = bytes.ReplaceAll(m.Data, []byte(`\xff`), []byte("\xff")) // raw bytes, not %q's escapes
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := h.js.PublishMsg(ctx, m); err != nil {
			t.Fatalf("publish the poison command: %v", err)
		}
	}

	// A running campaign: poison, then pause and resume.
	block := make(chan struct{})
	h.down.on("victim", "segment", behaviour{Block: block})
	h.create("acme", "victim", true)
	<-h.down.startedCh("victim", "segment")
	poison("victim", "pause", "")
	h.publish("acme", "victim", fsm.Pause, newID(), nil)
	h.publish("acme", "victim", fsm.Resume, newID(), nil)
	close(block)
	evs := h.waitEvent("acme", "victim", fsm.EvCompleted, 0, 30*time.Second)
	checkSequence(t, evs)
	if count(evs, fsm.EvRejected) != 1 || count(evs, fsm.EvPaused) != 1 || count(evs, fsm.EvResumed) != 1 {
		t.Fatalf("want one command.rejected, paused and resumed: %s", types(evs))
	}
	for _, e := range evs {
		if e.Type == fsm.EvRejected && len(e.Data) > 2*events.MaxReasonBytes {
			t.Fatalf("command.rejected of %d bytes", len(e.Data))
		}
	}

	// An unknown campaign: one dead letter, never redelivered.
	poison("ghost", "start", "")
	// A create whose name cannot fit in its campaign.created event, then a
	// valid create of the same campaign.
	poison("bigname", "create", `"name":"`+huge+`"`)
	h.create("acme", "bigname", true)
	h.waitEvent("acme", "bigname", fsm.EvCompleted, 0, 30*time.Second)

	h.waitCommandsEmpty()
	for _, c := range []string{"victim", "ghost", "bigname"} {
		dl := h.deadLetters(c)
		if len(dl) != 1 {
			t.Fatalf("%s: %d dead letters, want 1: %q", c, len(dl), dl)
		}
		if r := dl[0]; len(r) > events.MaxReasonBytes || !utf8.ValidString(r) || r == "" {
			t.Fatalf("%s: dead letter reason of %d bytes (valid UTF-8: %v)", c, len(r), utf8.ValidString(r))
		}
	}
}

// A campaign whose inbox holds work while nobody holds its lock and no
// message will ever bring it back (a frozen handler's late ack, max_deliver
// spent on the backing message) is found by the workers' sweep, taken over
// and finished (review of issue 7, F2 and F6).
func TestStrandedCampaignSwept(t *testing.T) {
	for _, memory := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "memory"}[memory], func(t *testing.T) {
			h := newHarness(t, harnessOpts{memory: memory, sweep: 200 * time.Millisecond})
			// The create is in the inbox and nowhere else: no message in the
			// stream, no lock.
			id := newID()
			subject := events.CommandSubject("acme", "stranded", fsm.Create)
			body := events.NewCommandMsg(events.CommandEnvelope{ID: id, Type: "create", TenantID: "acme", CampaignID: "stranded",
				Payload: json.RawMessage(`{"name":"stranded","start":true}`)}, "").Data
			k := store.Key{Tenant: "acme", Campaign: "stranded"}
			res, err := h.store.Enqueue(context.Background(), k, store.Item{ID: id, Seq: 1, Data: worker.InboxItem(subject, id, body)}, store.Claim{})
			if err != nil || res.Lease != nil {
				t.Fatalf("strand the campaign: %+v, %v", res, err)
			}
			evs := h.waitEvent("acme", "stranded", fsm.EvCompleted, 0, 20*time.Second)
			h.waitIdle("acme", "stranded")
			checkSequence(t, h.history("acme", "stranded"))
			if evs[0].CommandID != id {
				t.Fatalf("first event's command %s, want %s", evs[0].CommandID, id)
			}
		})
	}
}

// A step's call does not hold a command handler (issue 8, part 5): with 4
// handlers, 20 campaigns' first steps are all in flight at once.
func TestStepsOverlap(t *testing.T) {
	const campaigns = 20
	// Calls that never time out: with handlers held by their calls, only 4
	// would ever be in flight.
	h := newHarness(t, harnessOpts{perWorker: 4, stepTimeout: time.Minute})
	block := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(block) })
	t.Cleanup(unblock)
	names := make([]string, campaigns)
	for i := range names {
		names[i] = fmt.Sprintf("overlap-%d", i)
		h.down.on(names[i], "validate", behaviour{Block: block})
		h.create("acme", names[i], true)
	}
	waitFor(t, 20*time.Second, "every campaign's first step in flight at once", func() bool {
		for _, c := range names {
			if len(h.down.Begun(c)) == 0 {
				return false
			}
		}
		return true
	})
	unblock()
	for _, c := range names {
		h.waitEvent("acme", c, fsm.EvCompleted, 0, 30*time.Second)
	}
	if ov := h.down.Overlaps(); len(ov) > 0 {
		t.Fatalf("overlapping calls of one campaign: %v", ov)
	}
}

// A command dead-lettered as "unknown campaign" whose ack was lost is not
// applied when it comes back after the campaign was created: its id is in
// the ledger (review of the hot path, finding 1).
func TestDeadLetteredCommandNotAppliedLater(t *testing.T) {
	var acks atomic.Int32
	h := newHarness(t, harnessOpts{fault: func(i int) func(worker.FaultPoint, store.Key) error {
		return func(p worker.FaultPoint, k store.Key) error {
			if k.Campaign == "late" && p == worker.BeforeAck && acks.Add(1) == 1 {
				return errInjected // the first ack is lost: the start comes back
			}
			return nil
		}
	}})
	startID := newID()
	h.publish("acme", "late", fsm.Start, startID, nil)
	waitFor(t, 10*time.Second, "the start dead-lettered", func() bool { return len(h.deadLetters("late")) > 0 })
	h.create("acme", "late", false)
	h.waitEvent("acme", "late", fsm.EvCreated, 0, 10*time.Second)
	h.waitCommandsEmpty() // the start came back and was handled
	evs := h.history("acme", "late")
	for _, e := range evs {
		if e.CommandID == startID {
			t.Fatalf("command %s was dead-lettered (unknown campaign) and later applied: %s", startID, types(evs))
		}
	}
	if dl := h.deadLetters("late"); len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1: %q", len(dl), dl)
	}
}

// A drainer that stalled past its lock does not act on what it knew of the
// campaign before its next fenced write: the create another holder applied
// meanwhile is not dead-lettered as a reused id (review, finding 2).
func TestStalledDrainerDoesNotDeadLetterAppliedCreate(t *testing.T) {
	var before, after atomic.Int32
	woke := make(chan struct{})
	h := newHarness(t, harnessOpts{workers: 2, sweep: 200 * time.Millisecond, fault: func(i int) func(worker.FaultPoint, store.Key) error {
		return func(p worker.FaultPoint, k store.Key) error {
			if k.Campaign != "stale" {
				return nil
			}
			if p == worker.BeforeWrite && before.Add(1) == 1 {
				time.Sleep(300 * time.Millisecond) // the create is parked behind the cancel meanwhile
			}
			if p == worker.AfterWrite && after.Add(1) == 1 {
				time.Sleep(4 * time.Second) // frozen past the lock's TTL and the ack wait
				close(woke)
			}
			return nil
		}
	}})
	h.publish("acme", "stale", fsm.Cancel, newID(), nil)
	createID := newID()
	h.publish("acme", "stale", fsm.Create, createID, fsm.CreatePayload{Name: "x"})
	h.waitEvent("acme", "stale", fsm.EvCreated, 0, 10*time.Second)
	select {
	case <-woke:
	case <-time.After(20 * time.Second):
		t.Fatal("the stalled drainer never woke")
	}
	h.waitCommandsEmpty()
	for _, r := range h.deadLetters("stale") {
		if strings.Contains(r, "already used") {
			t.Fatalf("create %s applied and dead-lettered as %q", createID, r)
		}
	}
}

// A holder that dies with a step in flight leaves that step first in line:
// the holder that takes over finishes it (the same call again, same
// Idempotency-Key) before it applies a cancel that arrived meanwhile, as
// CONTRACT section 5 orders — never a cancel "while a step is in flight".
// The advance whose step runs is parked at the inbox's front (Seq 0).
func TestTakeoverFinishesStepInFlight(t *testing.T) {
	for _, memory := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "memory"}[memory], func(t *testing.T) {
			const camp = "inflight"
			var (
				mu      sync.Mutex
				hits    int
				release = make(chan struct{})
			)
			h := newHarness(t, harnessOpts{workers: 2, memory: memory, fault: func(int) func(worker.FaultPoint, store.Key) error {
				return func(p worker.FaultPoint, k store.Key) error {
					if k.Campaign != camp || p != worker.AfterStepCall {
						return nil
					}
					mu.Lock()
					hits++
					n := hits
					mu.Unlock()
					if n == 2 { // segment's call returned: its holder dies before writing it
						<-release
						return errInjected
					}
					return nil
				}
			}})
			h.create("acme", camp, true)
			select {
			case <-h.down.startedCh(camp, "segment"):
			case <-time.After(10 * time.Second):
				t.Fatal("segment never called")
			}
			h.publish("acme", camp, fsm.Cancel, newID(), nil)
			waitFor(t, 10*time.Second, "the cancel parked behind the step in flight", func() bool {
				items, err := h.store.Inbox(context.Background(), store.Key{Tenant: "acme", Campaign: camp}, 0)
				return err == nil && len(items) == 2
			})
			close(release)
			evs := h.waitEvent("acme", camp, fsm.EvCancelled, 0, 60*time.Second)
			st := h.waitIdle("acme", camp)
			checkSequence(t, evs)
			got := types(evs)
			want := "created,started,step.started(validate),step.succeeded(validate),step.started(segment),step.succeeded(segment),cancelled"
			if got != want || st.State != fsm.Cancelled || int(st.Seq) != len(evs) {
				t.Fatalf("history %s, stored %s seq %d; want %s", got, st.State, st.Seq, want)
			}
			calls := h.down.Calls(camp)
			checkKeys(t, "acme", camp, calls)
			if n := len(calls); n != 3 || calls[1].Step != "segment" || calls[2].Step != "segment" || calls[1].Key != calls[2].Key {
				t.Fatalf("calls %+v: want validate, then segment twice with one key", calls)
			}
		})
	}
}

// extendCounter counts the lock renewals a worker asks of its store.
type extendCounter struct {
	store.Store
	mu      sync.Mutex
	single  int   // Extend calls
	batches []int // leases of each ExtendAll call
}

func (c *extendCounter) Extend(ctx context.Context, l store.Lease, ttl time.Duration) error {
	c.mu.Lock()
	c.single++
	c.mu.Unlock()
	return c.Store.Extend(ctx, l, ttl)
}

func (c *extendCounter) ExtendAll(ctx context.Context, ls []store.Lease, ttl time.Duration) []error {
	c.mu.Lock()
	c.batches = append(c.batches, len(ls))
	c.mu.Unlock()
	return c.Store.ExtendAll(ctx, ls, ttl)
}

// Campaigns whose steps run for several lock TTLs keep their locks and
// messages alive together: one ExtendAll per heartbeat tick for all of
// them, never one Extend per campaign per tick (issue 8, part 5), and none
// of them loses its lock.
func TestHeartbeatsBatched(t *testing.T) {
	const n = 30
	counter := &extendCounter{}
	h := newHarness(t, harnessOpts{perWorker: 4, stepTimeout: time.Minute, wrap: func(s store.Store) worker.Store { counter.Store = s; return counter }})
	block := make(chan struct{})
	for i := range n {
		c := fmt.Sprintf("hb-%d", i)
		h.down.on(c, "validate", behaviour{Block: block})
		h.create("acme", c, true)
	}
	for i := range n {
		select {
		case <-h.down.startedCh(fmt.Sprintf("hb-%d", i), "validate"):
		case <-time.After(20 * time.Second):
			t.Fatalf("hb-%d: validate never called (4 handlers, %d campaigns: steps must not hold them)", i, n)
		}
	}
	time.Sleep(4 * lockTTL) // several heartbeats, well past the locks' TTL
	close(block)
	for i := range n {
		evs := h.waitEvent("acme", fmt.Sprintf("hb-%d", i), fsm.EvCompleted, 0, 30*time.Second)
		if got := count(evs, fsm.EvStepSucceeded); got != len(standard) {
			t.Fatalf("hb-%d: %d steps succeeded: %s", i, got, types(evs))
		}
		if calls := h.down.Calls(fmt.Sprintf("hb-%d", i)); len(calls) != len(standard) {
			t.Fatalf("hb-%d: %d calls, want %d (a lost lock repeats one)", i, len(calls), len(standard))
		}
	}
	counter.mu.Lock()
	defer counter.mu.Unlock()
	full := 0
	for _, b := range counter.batches {
		if b == n {
			full++
		}
	}
	if counter.single != 0 || full < 3 {
		t.Fatalf("%d Extend calls, ExtendAll batches %v: want none, and 3 or more batches of all %d campaigns", counter.single, counter.batches, n)
	}
}
