package fsm_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

var now = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

var wf = fsm.Workflow{Name: "standard", Steps: []fsm.Step{{Name: "validate"}, {Name: "segment"}}}

func cmd(v fsm.Verb) fsm.Command {
	c := fsm.Command{ID: "cmd-" + string(v), Verb: v, Tenant: "acme", Campaign: "spring"}
	if v == fsm.Create {
		c.Create = &fsm.CreatePayload{Name: "Spring"}
		c.Workflow = &wf
	}
	return c
}

// campaignIn builds a campaign in state s as the transitions would leave it.
func campaignIn(t *testing.T, s fsm.State) *fsm.Campaign {
	t.Helper()
	r, err := fsm.Apply(nil, cmd(fsm.Create), now)
	if err != nil {
		t.Fatal(err)
	}
	c := r.Campaign
	step := func(v fsm.Verb) {
		r, err := fsm.Apply(&c, cmd(v), now)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		c = r.Campaign
	}
	switch s {
	case fsm.Running:
		step(fsm.Start)
	case fsm.Paused:
		step(fsm.Start)
		step(fsm.Pause)
	case fsm.Cancelled:
		step(fsm.Cancel)
	case fsm.Completed, fsm.Failed:
		step(fsm.Start)
		adv := advanceFor(c)
		r, err := fsm.Apply(&c, adv, now)
		if err != nil || !r.RunStep {
			t.Fatalf("advance: %v", err)
		}
		if s == fsm.Failed {
			c = fsm.StepFailed(r.Campaign, adv.ID, 1, "boom", time.Millisecond, now).Campaign
		} else {
			c = r.Campaign
			for {
				c = fsm.StepSucceeded(c, adv.ID, 1, nil, time.Millisecond, now).Campaign
				adv = advanceFor(c)
				r, err = fsm.Apply(&c, adv, now)
				if err != nil {
					t.Fatal(err)
				}
				c = r.Campaign
				if !r.RunStep {
					break
				}
			}
		}
	}
	if c.State != s {
		t.Fatalf("built %s, want %s", c.State, s)
	}
	return &c
}

func advanceFor(c fsm.Campaign) fsm.Command {
	a := cmd(fsm.Advance)
	run := 1
	if s, ok := c.CurrentStep(); ok && c.Run(s.Name) > 0 {
		run = c.Run(s.Name)
	}
	a.Advance = &fsm.AdvancePayload{Step: c.Step, Run: run, Version: c.AdvanceVersion}
	a.ID = fmt.Sprintf("adv-%d", c.AdvanceVersion)
	return a
}

// TestEveryStateCommandPair walks the whole table of CONTRACT section 5.
func TestEveryStateCommandPair(t *testing.T) {
	type want struct {
		to    fsm.State
		event string // "" with err
		err   error  // ErrUnknownCampaign, ErrStale, or rejected (errRejected)
	}
	errRejected := errors.New("rejected")
	table := map[fsm.State]map[fsm.Verb]want{
		"": { // no campaign
			fsm.Create: {fsm.Pending, fsm.EvCreated, nil},
			fsm.Start:  {err: fsm.ErrUnknownCampaign}, fsm.Pause: {err: fsm.ErrUnknownCampaign},
			fsm.Resume: {err: fsm.ErrUnknownCampaign}, fsm.Cancel: {err: fsm.ErrUnknownCampaign},
			fsm.Retry: {err: fsm.ErrUnknownCampaign}, fsm.Advance: {err: fsm.ErrUnknownCampaign},
		},
		fsm.Pending: {
			fsm.Create: {err: errRejected}, fsm.Start: {fsm.Running, fsm.EvStarted, nil},
			fsm.Pause: {err: errRejected}, fsm.Resume: {err: errRejected},
			fsm.Cancel: {fsm.Cancelled, fsm.EvCancelled, nil}, fsm.Retry: {err: errRejected},
			fsm.Advance: {err: fsm.ErrStale},
		},
		fsm.Running: {
			fsm.Create: {err: errRejected}, fsm.Start: {err: errRejected},
			fsm.Pause: {fsm.Paused, fsm.EvPaused, nil}, fsm.Resume: {err: errRejected},
			fsm.Cancel: {fsm.Cancelled, fsm.EvCancelled, nil}, fsm.Retry: {err: errRejected},
			fsm.Advance: {fsm.Running, fsm.EvStepStarted, nil},
		},
		fsm.Paused: {
			fsm.Create: {err: errRejected}, fsm.Start: {err: errRejected}, fsm.Pause: {err: errRejected},
			fsm.Resume: {fsm.Running, fsm.EvResumed, nil}, fsm.Cancel: {fsm.Cancelled, fsm.EvCancelled, nil},
			fsm.Retry: {err: errRejected}, fsm.Advance: {err: fsm.ErrStale},
		},
		fsm.Completed: {
			fsm.Create: {err: errRejected}, fsm.Start: {err: errRejected}, fsm.Pause: {err: errRejected},
			fsm.Resume: {err: errRejected}, fsm.Cancel: {err: errRejected}, fsm.Retry: {err: errRejected},
			fsm.Advance: {err: fsm.ErrStale},
		},
		fsm.Failed: {
			fsm.Create: {err: errRejected}, fsm.Start: {err: errRejected}, fsm.Pause: {err: errRejected},
			fsm.Resume: {err: errRejected}, fsm.Cancel: {err: errRejected},
			fsm.Retry: {fsm.Running, fsm.EvRetried, nil}, fsm.Advance: {err: fsm.ErrStale},
		},
		fsm.Cancelled: {
			fsm.Create: {err: errRejected}, fsm.Start: {err: errRejected}, fsm.Pause: {err: errRejected},
			fsm.Resume: {err: errRejected}, fsm.Cancel: {err: errRejected}, fsm.Retry: {err: errRejected},
			fsm.Advance: {err: fsm.ErrStale},
		},
	}
	for _, from := range append([]fsm.State{""}, fsm.States...) {
		for _, v := range fsm.Verbs {
			w, ok := table[from][v]
			if !ok {
				t.Fatalf("table misses (%q, %s)", from, v)
			}
			t.Run(fmt.Sprintf("%s/%s", orNone(from), v), func(t *testing.T) {
				var c *fsm.Campaign
				if from != "" {
					c = campaignIn(t, from)
				}
				command := cmd(v)
				if v == fsm.Advance && c != nil {
					command = advanceFor(*c)
				}
				r, err := fsm.Apply(c, command, now)
				var rej *fsm.RejectedError
				switch {
				case w.err == errRejected:
					if !errors.As(err, &rej) {
						t.Fatalf("err %v, want rejection", err)
					}
					if len(r.Events) != 1 || r.Events[0].Type != fsm.EvRejected || r.Events[0].CommandID != command.ID ||
						r.Events[0].Data["reason"] == "" || r.Campaign.State != from || r.Campaign.Seq != c.Seq+1 {
						t.Fatalf("rejection result %+v", r)
					}
				case w.err != nil:
					if !errors.Is(err, w.err) || len(r.Events) != 0 {
						t.Fatalf("err %v events %d, want %v and none", err, len(r.Events), w.err)
					}
				default:
					if err != nil {
						t.Fatal(err)
					}
					if r.Campaign.State != w.to || len(r.Events) == 0 || r.Events[0].Type != w.event {
						t.Fatalf("to %s events %v, want %s with %s", r.Campaign.State, r.Events, w.to, w.event)
					}
					var prevSeq, prevVer uint64
					if c != nil {
						prevSeq, prevVer = c.Seq, c.Version
					}
					for i, e := range r.Events {
						if e.Seq != prevSeq+uint64(i)+1 || e.CommandID != command.ID {
							t.Fatalf("event %d seq %d cmd %s", i, e.Seq, e.CommandID)
						}
					}
					if r.Campaign.Version != prevVer+1 {
						t.Fatalf("version %d after %d", r.Campaign.Version, prevVer)
					}
				}
			})
		}
	}
}

func orNone(s fsm.State) string {
	if s == "" {
		return "none"
	}
	return string(s)
}

func TestCreateWithStart(t *testing.T) {
	c := cmd(fsm.Create)
	c.Create.Start = true
	r, err := fsm.Apply(nil, c, now)
	if err != nil {
		t.Fatal(err)
	}
	if r.Campaign.State != fsm.Running || len(r.Events) != 2 || r.Events[0].Type != fsm.EvCreated || r.Events[1].Type != fsm.EvStarted || !r.ScheduleAdvance || r.Campaign.AdvanceVersion != r.Campaign.Version {
		t.Fatalf("%+v", r)
	}
}

// A pause that arrives during the last step: the campaign completes only on resume.
func TestPauseDuringLastStepCompletesOnResume(t *testing.T) {
	c := campaignIn(t, fsm.Running)
	for range wf.Steps {
		r, err := fsm.Apply(c, advanceFor(*c), now)
		if err != nil || !r.RunStep {
			t.Fatal(err)
		}
		next := fsm.StepSucceeded(r.Campaign, "adv", 1, json.RawMessage(`{"n":1}`), time.Millisecond, now).Campaign
		c = &next
	}
	stale := advanceFor(*c)
	r, err := fsm.Apply(c, cmd(fsm.Pause), now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fsm.Apply(&r.Campaign, stale, now); !errors.Is(err, fsm.ErrStale) {
		t.Fatalf("advance after pause: %v, want stale", err)
	}
	r, err = fsm.Apply(&r.Campaign, cmd(fsm.Resume), now)
	if err != nil || !r.ScheduleAdvance {
		t.Fatal(err)
	}
	if _, err := fsm.Apply(&r.Campaign, stale, now); !errors.Is(err, fsm.ErrStale) {
		t.Fatalf("the advance from before the pause must stay stale after resume: %v", err)
	}
	r, err = fsm.Apply(&r.Campaign, advanceFor(r.Campaign), now)
	if err != nil || r.Campaign.State != fsm.Completed || r.Events[0].Type != fsm.EvCompleted {
		t.Fatalf("%v %+v", err, r)
	}
}

// Retry re-runs the failed step with a new run; a crash-recovered advance
// re-runs an in-flight step without a second step.started.
func TestRetryAndInFlight(t *testing.T) {
	c := campaignIn(t, fsm.Failed)
	if c.Run("validate") != 1 {
		t.Fatalf("run %d", c.Run("validate"))
	}
	r, err := fsm.Apply(c, cmd(fsm.Retry), now)
	if err != nil || r.Campaign.Run("validate") != 2 || r.Campaign.InFlight {
		t.Fatalf("%v %+v", err, r.Campaign)
	}
	adv := advanceFor(r.Campaign)
	r, err = fsm.Apply(&r.Campaign, adv, now)
	if err != nil || !r.RunStep || len(r.Events) != 1 || r.Events[0].Data["run"] != 2 {
		t.Fatalf("%v %+v", err, r)
	}
	again, err := fsm.Apply(&r.Campaign, adv, now)
	if err != nil || !again.RunStep || len(again.Events) != 0 || again.Campaign.Version != r.Campaign.Version {
		t.Fatalf("redelivered advance of an in-flight step: %v %+v", err, again)
	}
}

// Property: any sequence of commands and step outcomes keeps sequences
// gap-free, versions growing by one per change, and states valid.
func TestRandomWalkInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for walk := range 300 {
		var c *fsm.Campaign
		var seq, ver uint64
		for i := range 40 {
			v := fsm.Verbs[rng.IntN(len(fsm.Verbs))]
			command := cmd(v)
			command.ID = fmt.Sprintf("w%d-%d", walk, i)
			if v == fsm.Advance && c != nil {
				command = advanceFor(*c)
				if rng.IntN(4) == 0 {
					command.Advance.Version++ // stale on purpose
				}
			}
			r, err := fsm.Apply(c, command, now)
			var rej *fsm.RejectedError
			if err != nil && !errors.As(err, &rej) {
				continue
			}
			if r.RunStep {
				switch rng.IntN(3) {
				case 0:
					r2 := fsm.StepSucceeded(r.Campaign, command.ID, 1, nil, 0, now)
					r.Campaign, r.Events = r2.Campaign, append(r.Events, r2.Events...)
				case 1:
					r2 := fsm.StepFailed(r.Campaign, command.ID, 1, "x", 0, now)
					r.Campaign, r.Events = r2.Campaign, append(r.Events, r2.Events...)
				}
			}
			for _, e := range r.Events {
				seq++
				if e.Seq != seq {
					t.Fatalf("walk %d: event seq %d, want %d", walk, e.Seq, seq)
				}
			}
			if r.Campaign.Seq != seq || !r.Campaign.State.Valid() || r.Campaign.Version < ver || (len(r.Events) > 0 && r.Campaign.Version <= ver) {
				t.Fatalf("walk %d: campaign %+v after seq %d ver %d", walk, r.Campaign, seq, ver)
			}
			ver = r.Campaign.Version
			next := r.Campaign
			c = &next
		}
	}
}

// A failed step's campaign error and campaign.failed name the step once,
// whether or not the cause already does (the step client's errors do).
func TestStepFailedNamesTheStepOnce(t *testing.T) {
	for cause, want := range map[string]string{
		"step validate: attempt 1: 500 Internal Server Error": "step validate: attempt 1: 500 Internal Server Error",
		"output too large": "step validate: output too large",
	} {
		c := *campaignIn(t, fsm.Running)
		r, err := fsm.Apply(&c, advanceFor(c), now)
		if err != nil || !r.RunStep {
			t.Fatalf("advance: %v", err)
		}
		r = fsm.StepFailed(r.Campaign, "adv", 1, cause, time.Millisecond, now)
		if r.Campaign.Error != want {
			t.Errorf("cause %q: campaign error %q, want %q", cause, r.Campaign.Error, want)
		}
		last := r.Events[len(r.Events)-1]
		if last.Type != fsm.EvFailed {
			t.Fatalf("last event %s, want %s", last.Type, fsm.EvFailed)
		}
		if got := last.Data["error"]; got != want {
			t.Errorf("cause %q: campaign.failed error %q, want %q", cause, got, want)
		}
	}
}
