package fsm_test

// FuzzFSM (issue 9, part 3): a byte string is decoded into a run of a
// campaign as the worker drives it — commands of every verb, fresh and stale
// advances, redeliveries, step results (success, failure, network retries,
// a crash before the result) — applied through fsm.Apply and the Step*
// functions; after every transition the invariants of CONTRACT sections 5
// and 9 are checked. Its seed corpus is in testdata/fuzz/FuzzFSM/.
//
// The invariant checks of TestRandomWalkInvariants are inline in that test
// (nothing to call), so the ones here are written afresh, and go further.

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// Op codes: the low nibble of an op byte; the high nibble is the op's
// variant.
const (
	fzCreate    = iota // variant&1: with start
	fzStart            //
	fzPause            //
	fzResume           //
	fzCancel           //
	fzRetry            //
	fzAdvance          // the advance the campaign expects (variant&1: run 0, "any")
	fzStale            // an advance with a stale expectation (variant picks which)
	fzOld              // an advance issued earlier, delivered again (variant picks which)
	fzRedeliver        // an external command delivered again (variant picks which)
	fzUnknown          // a verb the state machine does not know
	fzOps
)

// Step outcomes, read from the byte after a transition that runs a step.
const (
	fzSucceed  = iota // the step succeeds
	fzFail            // the step fails: the campaign fails
	fzRetrying        // a network error: retried, then another outcome
	fzCrash           // the worker dies before the result: the advance is redelivered
	fzOutcomes
)

// fzHarness is one campaign driven by a fuzz input, with what the checks
// need: the event history, the ledger the worker keeps for external
// commands, the advances issued.
type fzHarness struct {
	t        *testing.T
	in       []byte
	wf       fsm.Workflow
	c        *fsm.Campaign
	now      time.Time
	n        int             // command ids issued
	history  []fsm.Event     // every event emitted, in order
	ledger   map[string]bool // external command ids applied (the worker's ledger)
	external []fsm.Command   // external commands applied, for redelivery
	advances []fsm.Command   // every advance delivered
	// applyWrites counts the writes of fsm.Apply per command id (the step
	// results an advance's step produces are not Apply writes).
	applyWrites map[string]int
}

// next returns the next input byte, and false at the end.
func (h *fzHarness) next() (byte, bool) {
	if len(h.in) == 0 {
		return 0, false
	}
	b := h.in[0]
	h.in = h.in[1:]
	return b, true
}

func (h *fzHarness) newID(prefix string) string {
	h.n++
	return fmt.Sprintf("%s-%d", prefix, h.n)
}

// FuzzFSM decodes data into a campaign's life and checks after each step:
// event sequence numbers 1..N without gap, one version per write, state and
// history agree, terminal states stay terminal (but failed → retry), stale
// advances change nothing, a command id is applied at most once.
func FuzzFSM(f *testing.F) {
	f.Add([]byte{2, fzCreate | 1<<4, fzAdvance, fzSucceed, fzAdvance, fzSucceed, fzAdvance})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		steps := int(data[0] % 5) // 0 to 4 steps: the state machine takes any workflow
		wf := fsm.Workflow{Name: "fuzz"}
		for i := range steps {
			wf.Steps = append(wf.Steps, fsm.Step{Name: fmt.Sprintf("s%d", i)})
		}
		h := &fzHarness{t: t, in: data[1:], wf: wf, now: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC),
			ledger: map[string]bool{}, applyWrites: map[string]int{}}
		for {
			b, ok := h.next()
			if !ok {
				return
			}
			h.now = h.now.Add(time.Second)
			h.op(b&0x0f%fzOps, int(b>>4))
		}
	})
}

// op runs one op.
func (h *fzHarness) op(code byte, variant int) {
	switch code {
	case fzCreate, fzStart, fzPause, fzResume, fzCancel, fzRetry, fzUnknown:
		verb := map[byte]fsm.Verb{fzCreate: fsm.Create, fzStart: fsm.Start, fzPause: fsm.Pause, fzResume: fsm.Resume,
			fzCancel: fsm.Cancel, fzRetry: fsm.Retry, fzUnknown: "explode"}[code]
		cmd := fsm.Command{ID: h.newID(string(verb)), Verb: verb, Tenant: "acme", Campaign: "c1"}
		if verb == fsm.Create {
			wf := h.wf
			cmd.Create = &fsm.CreatePayload{Name: "Fuzz", Workflow: wf.Name, Start: variant&1 == 1}
			cmd.Workflow = &wf
		}
		h.external = append(h.external, cmd)
		h.deliver(cmd)
	case fzRedeliver:
		if len(h.external) > 0 {
			h.deliver(h.external[variant%len(h.external)])
		}
	case fzAdvance, fzStale:
		if h.c == nil {
			h.deliver(fzAdvanceCmd(h.newID("advance"), fsm.AdvancePayload{Step: 0, Run: 1, Version: 1}))
			return
		}
		p := fzExpected(*h.c)
		if code == fzAdvance {
			if variant&1 == 1 {
				p.Run = 0 // any run
			}
		} else {
			switch variant % 5 {
			case 0:
				p.Version++
			case 1:
				p.Version-- // may be 0: never expected
			case 2:
				p.Step++
			case 3:
				p.Step--
			case 4:
				p.Run++
			}
		}
		h.deliver(fzAdvanceCmd(h.newID("advance"), p))
	case fzOld:
		if len(h.advances) > 0 {
			h.deliver(h.advances[variant%len(h.advances)])
		}
	}
}

func fzAdvanceCmd(id string, p fsm.AdvancePayload) fsm.Command {
	return fsm.Command{ID: id, Verb: fsm.Advance, Tenant: "acme", Campaign: "c1", Advance: &p}
}

// fzExpected is the advance the campaign expects now: its step, the step's
// run (1 if it never ran) and its AdvanceVersion.
func fzExpected(c fsm.Campaign) fsm.AdvancePayload {
	run := 1
	if s, ok := c.CurrentStep(); ok && c.Run(s.Name) > 0 {
		run = c.Run(s.Name)
	}
	return fsm.AdvancePayload{Step: c.Step, Run: run, Version: c.AdvanceVersion}
}

// fzFresh is the contract's oracle of a fresh advance (CONTRACT section 5:
// it carries the step, run and state version it expects): the campaign is
// running with an advance scheduled for that version and step, and the run
// is the current step's (0 means any; at the end there is no step to run).
func fzFresh(c *fsm.Campaign, p *fsm.AdvancePayload) bool {
	if c == nil || p == nil || c.State != fsm.Running || c.AdvanceVersion == 0 || p.Version != c.AdvanceVersion || p.Step != c.Step {
		return false
	}
	s, ok := c.CurrentStep()
	if !ok || p.Run == 0 {
		return true
	}
	run := max(c.Run(s.Name), 1)
	return p.Run == run
}

// deliver hands cmd to the state machine as the worker does: an external
// command already in the ledger is acknowledged and changes nothing; the
// others go through fsm.Apply, and a step to run is run.
func (h *fzHarness) deliver(cmd fsm.Command) {
	t := h.t
	external := cmd.Verb != fsm.Advance
	if external && h.ledger[cmd.ID] {
		return // the ledger absorbs the redelivery (store's guarantee)
	}
	if cmd.Verb == fsm.Advance {
		h.advances = append(h.advances, cmd)
	}
	prev := h.c
	r, err := fsm.Apply(prev, cmd, h.now)
	var rej *fsm.RejectedError
	switch {
	case prev == nil && cmd.Verb != fsm.Create:
		if !errors.Is(err, fsm.ErrUnknownCampaign) || !reflect.DeepEqual(r, fsm.Result{}) {
			t.Fatalf("%s on no campaign: %+v, %v; want ErrUnknownCampaign and nothing", cmd.Verb, r, err)
		}
		return
	case cmd.Verb == fsm.Advance:
		fresh := fzFresh(prev, cmd.Advance)
		if errors.Is(err, fsm.ErrStale) {
			if fresh {
				t.Fatalf("fresh advance %+v refused as stale by %s", *cmd.Advance, fzDescribe(prev))
			}
			if !reflect.DeepEqual(r, fsm.Result{}) {
				t.Fatalf("stale advance came with a result: %+v", r)
			}
			return
		}
		if !fresh {
			t.Fatalf("stale advance %+v applied to %s: %+v, %v", *cmd.Advance, fzDescribe(prev), r, err)
		}
		if err != nil {
			t.Fatalf("fresh advance %+v: %v", *cmd.Advance, err)
		}
	case errors.As(err, &rej):
		if prev == nil {
			t.Fatalf("%s rejected with no campaign: %v", cmd.Verb, err)
		}
		if rej.Reason == "" || len(r.Events) != 1 || r.Events[0].Type != fsm.EvRejected || r.Events[0].Data["reason"] != rej.Reason ||
			r.Campaign.State != prev.State || r.RunStep || r.ScheduleAdvance {
			t.Fatalf("rejection of %s in %s: %+v", cmd.Verb, prev.State, r)
		}
	case err != nil:
		t.Fatalf("%s on %s: unexpected error %v", cmd.Verb, fzDescribe(prev), err)
	}
	if err == nil && external && !fzAllowed(prev, cmd) {
		t.Fatalf("%s applied to %s, the contract rejects it", cmd.Verb, fzDescribe(prev))
	}
	if err == nil && external && cmd.Verb != fsm.Create && len(r.Events) == 0 {
		t.Fatalf("%s applied with no event", cmd.Verb)
	}

	if len(r.Events) == 0 {
		// Only a redelivered advance of a step in flight (a crash): run
		// it again, same run, nothing written.
		if cmd.Verb != fsm.Advance || prev == nil || !prev.InFlight || !r.RunStep || !reflect.DeepEqual(r.Campaign, *prev) {
			t.Fatalf("%s on %s: a result with no event that is not a re-run of the step in flight: %+v", cmd.Verb, fzDescribe(prev), r)
		}
	} else {
		h.applyWrites[cmd.ID]++
		if n := h.applyWrites[cmd.ID]; n > 1 {
			t.Fatalf("command %s (%s) applied %d times", cmd.ID, cmd.Verb, n)
		}
		h.write(prev, r, cmd.ID, cmd.Verb)
	}
	if external {
		h.ledger[cmd.ID] = true // applied or rejected: both acked and recorded
	}
	if r.RunStep {
		h.runStep(cmd)
	}
}

// fzAllowed is CONTRACT section 5's table of allowed external commands.
func fzAllowed(c *fsm.Campaign, cmd fsm.Command) bool {
	if c == nil {
		return cmd.Verb == fsm.Create
	}
	switch cmd.Verb {
	case fsm.Start:
		return c.State == fsm.Pending
	case fsm.Pause:
		return c.State == fsm.Running
	case fsm.Resume:
		return c.State == fsm.Paused
	case fsm.Cancel:
		return c.State == fsm.Pending || c.State == fsm.Running || c.State == fsm.Paused
	case fsm.Retry:
		return c.State == fsm.Failed
	}
	return false
}

// runStep plays the step the campaign must now run, for the advance adv:
// outcomes come from the input until one ends the step (or the input ends,
// leaving it in flight).
func (h *fzHarness) runStep(adv fsm.Command) {
	t := h.t
	for {
		if !h.c.InFlight || h.c.State != fsm.Running {
			t.Fatalf("RunStep on %s", fzDescribe(h.c))
		}
		b, ok := h.next()
		if !ok {
			return
		}
		h.now = h.now.Add(time.Second)
		c := *h.c
		switch b % fzOutcomes {
		case fzSucceed:
			out := json.RawMessage(fmt.Sprintf(`{"n":%d}`, b))
			r := fsm.StepSucceeded(c, adv.ID, c.Attempt, out, time.Millisecond, h.now)
			h.write(&c, r, adv.ID, "step.succeeded")
			if !r.ScheduleAdvance || string(r.Campaign.Outputs[c.Workflow.Steps[c.Step].Name]) != string(out) {
				t.Fatalf("step succeeded: %+v", r)
			}
			return
		case fzFail:
			r := fsm.StepFailed(c, adv.ID, c.Attempt, "boom", time.Millisecond, h.now)
			h.write(&c, r, adv.ID, "step.failed")
			if r.Campaign.State != fsm.Failed || r.Campaign.Error == "" || r.ScheduleAdvance {
				t.Fatalf("step failed: %+v", r.Campaign)
			}
			return
		case fzRetrying:
			r := fsm.StepRetrying(c, adv.ID, c.Attempt, "connection refused", time.Second, h.now)
			h.write(&c, r, adv.ID, "step.retrying")
			if r.Campaign.Attempt != c.Attempt+1 || !r.Campaign.InFlight || r.ScheduleAdvance {
				t.Fatalf("step retrying: attempt %d → %+v", c.Attempt, r.Campaign)
			}
		case fzCrash:
			// The advance stays first in the campaign's inbox and is
			// delivered again: the step runs again, nothing is written.
			r, err := fsm.Apply(&c, adv, h.now)
			if err != nil || !r.RunStep || len(r.Events) != 0 || !reflect.DeepEqual(r.Campaign, c) {
				t.Fatalf("advance redelivered after a crash during its step: %+v, %v", r, err)
			}
		}
	}
}

// write commits r, the result of what (a verb or a step outcome) for
// command id on prev, after checking the invariants.
func (h *fzHarness) write(prev *fsm.Campaign, r fsm.Result, id string, what any) {
	t := h.t
	next := r.Campaign
	desc := fmt.Sprintf("%v (%s) on %s", what, id, fzDescribe(prev))
	if len(r.Events) == 0 {
		t.Fatalf("%s: a write with no event", desc)
	}
	// Events: consecutive sequence numbers, this command's, this time.
	seq := uint64(len(h.history))
	for i, e := range r.Events {
		if e.Seq != seq+uint64(i)+1 {
			t.Fatalf("%s: event %d (%s) has seq %d, want %d", desc, i, e.Type, e.Seq, seq+uint64(i)+1)
		}
		if e.CommandID != id || !e.Time.Equal(h.now) || e.Type == "" {
			t.Fatalf("%s: event %+v, want command %s at %s", desc, e, id, h.now)
		}
	}
	h.history = append(h.history, r.Events...)
	if next.Seq != uint64(len(h.history)) {
		t.Fatalf("%s: campaign seq %d after %d events", desc, next.Seq, len(h.history))
	}
	// One version per write.
	var prevVer uint64
	if prev != nil {
		prevVer = prev.Version
	}
	if next.Version != prevVer+1 {
		t.Fatalf("%s: version %d after %d, want one more per write", desc, next.Version, prevVer)
	}
	if !next.UpdatedAt.Equal(h.now) {
		t.Fatalf("%s: updated_at %s, want %s", desc, next.UpdatedAt, h.now)
	}
	// Terminal states stay terminal, but failed → retry → running.
	if prev != nil && prev.State.Terminal() && next.State != prev.State &&
		!(prev.State == fsm.Failed && what == fsm.Retry && next.State == fsm.Running) {
		t.Fatalf("%s: left terminal state %s for %s", desc, prev.State, next.State)
	}
	if prev != nil && (next.Tenant != prev.Tenant || next.ID != prev.ID || next.Name != prev.Name ||
		!reflect.DeepEqual(next.Workflow, prev.Workflow) || !next.CreatedAt.Equal(prev.CreatedAt)) {
		t.Fatalf("%s: the campaign's identity changed: %+v", desc, next)
	}
	h.checkCampaign(next, desc)
	if r.ScheduleAdvance && (next.State != fsm.Running || next.AdvanceVersion != next.Version || next.InFlight) {
		t.Fatalf("%s: an advance scheduled for %s", desc, fzDescribe(&next))
	}
	if r.RunStep && (next.State != fsm.Running || !next.InFlight) {
		t.Fatalf("%s: a step to run on %s", desc, fzDescribe(&next))
	}
	h.c = &next
}

// checkCampaign checks the invariants of a stored campaign, and that its
// state agrees with the history (CONTRACT section 9, guarantee 4).
func (h *fzHarness) checkCampaign(c fsm.Campaign, desc string) {
	t := h.t
	switch {
	case !c.State.Valid():
		t.Fatalf("%s: invalid state %q", desc, c.State)
	case c.Step < 0 || c.Step > len(c.Workflow.Steps):
		t.Fatalf("%s: step %d of %d", desc, c.Step, len(c.Workflow.Steps))
	case (c.State == fsm.Running) != (c.AdvanceVersion != 0):
		t.Fatalf("%s: %s with advance version %d (a running campaign always expects an advance, no other does)", desc, c.State, c.AdvanceVersion)
	case c.AdvanceVersion > c.Version:
		t.Fatalf("%s: advance version %d above version %d", desc, c.AdvanceVersion, c.Version)
	case c.State.Terminal() != (c.EndedAt != nil):
		t.Fatalf("%s: %s with ended_at %v", desc, c.State, c.EndedAt)
	case c.InFlight && (c.State != fsm.Running || c.Step >= len(c.Workflow.Steps) || c.Attempt < 1 || c.Run(c.Workflow.Steps[c.Step].Name) < 1):
		t.Fatalf("%s: a step in flight on %s", desc, fzDescribe(&c))
	case (c.State == fsm.Failed) != (c.Error != ""):
		t.Fatalf("%s: %s with error %q", desc, c.State, c.Error)
	case c.State == fsm.Completed && c.Step != len(c.Workflow.Steps):
		t.Fatalf("%s: completed at step %d of %d", desc, c.Step, len(c.Workflow.Steps))
	case len(c.Outputs) != c.Step:
		t.Fatalf("%s: %d outputs at step %d", desc, len(c.Outputs), c.Step)
	}

	// Fold the history: it must say what the campaign says.
	var (
		state    fsm.State
		step     int
		inFlight bool
		runs     = map[string]int{}
	)
	for _, e := range h.history {
		switch e.Type {
		case fsm.EvCreated:
			if state != "" {
				t.Fatalf("%s: a second %s", desc, e.Type)
			}
			state = fsm.Pending
		case fsm.EvStarted, fsm.EvResumed:
			state = fsm.Running
		case fsm.EvRetried:
			state, inFlight = fsm.Running, false
			if name, _ := e.Data["step"].(string); name != "" {
				runs[name] = e.Data["run"].(int)
			}
		case fsm.EvPaused:
			state = fsm.Paused
		case fsm.EvCancelled:
			state = fsm.Cancelled
		case fsm.EvCompleted:
			state = fsm.Completed
		case fsm.EvFailed:
			state = fsm.Failed
		case fsm.EvStepStarted:
			inFlight = true
			runs[e.Data["step"].(string)] = e.Data["run"].(int)
		case fsm.EvStepSucceeded:
			inFlight = false
			step++
		case fsm.EvStepFailed:
			inFlight = false
		case fsm.EvStepRetrying, fsm.EvRejected:
		default:
			t.Fatalf("%s: unknown event type %q", desc, e.Type)
		}
	}
	for name, n := range runs {
		if c.Run(name) != n {
			t.Fatalf("%s: run of %s is %d, the history says %d", desc, name, c.Run(name), n)
		}
	}
	if state != c.State || step != c.Step || inFlight != c.InFlight || len(runs) != len(c.Runs) {
		t.Fatalf("%s: campaign %s step %d in flight %t runs %v, the history says %s step %d in flight %t runs %v",
			desc, c.State, c.Step, c.InFlight, c.Runs, state, step, inFlight, runs)
	}
}

func fzDescribe(c *fsm.Campaign) string {
	if c == nil {
		return "no campaign"
	}
	return fmt.Sprintf("%s campaign (step %d/%d, in flight %t, attempt %d, version %d, advance version %d, runs %v)",
		c.State, c.Step, len(c.Workflow.Steps), c.InFlight, c.Attempt, c.Version, c.AdvanceVersion, c.Runs)
}
