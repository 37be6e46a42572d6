package fsm_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/workflow"
)

// benchWorkflow is the built-in standard workflow (five steps), as the
// service resolves it for a create.
var benchWorkflow = workflow.Standard("http://127.0.0.1:8081")

// benchCreate is a create of the standard workflow (cmd's, with the real
// definition instead of the tests' two-step one).
func benchCreate(start bool) fsm.Command {
	c := cmd(fsm.Create)
	c.Create = &fsm.CreatePayload{Name: "Spring", Workflow: benchWorkflow.Name, Params: json.RawMessage(`{"list":"vip"}`), Start: start}
	c.Workflow = &benchWorkflow
	return c
}

// benchCampaign builds a campaign of the standard workflow in state s, its
// first two steps done: running (the third step's advance due), inFlight
// (running, the third step started), paused or failed (the third step
// failed).
func benchCampaign(b *testing.B, s fsm.State, inFlight bool) fsm.Campaign {
	b.Helper()
	apply := func(c *fsm.Campaign, x fsm.Command) fsm.Campaign {
		r, err := fsm.Apply(c, x, now)
		if err != nil {
			b.Fatalf("%s: %v", x.Verb, err)
		}
		return r.Campaign
	}
	c := apply(nil, benchCreate(false))
	if s == fsm.Pending {
		return c
	}
	c = apply(&c, cmd(fsm.Start))
	for range 2 {
		adv := advanceFor(c)
		c = apply(&c, adv)
		c = fsm.StepSucceeded(c, adv.ID, 1, json.RawMessage(`{"n":1}`), time.Millisecond, now).Campaign
	}
	switch {
	case s == fsm.Paused:
		c = apply(&c, cmd(fsm.Pause))
	case s == fsm.Failed:
		adv := advanceFor(c)
		c = apply(&c, adv)
		c = fsm.StepFailed(c, adv.ID, 1, "boom", time.Millisecond, now).Campaign
	case inFlight:
		c = apply(&c, advanceFor(c))
	}
	if c.State != s || c.InFlight != inFlight {
		b.Fatalf("built %s (in flight %v), want %s (%v)", c.State, c.InFlight, s, inFlight)
	}
	return c
}

// BenchmarkApply measures fsm.Apply of each verb on a campaign of the
// standard workflow in the state that accepts it.
func BenchmarkApply(b *testing.B) {
	cases := []struct {
		name string
		from *fsm.Campaign // nil: the campaign does not exist
		cmd  func(c *fsm.Campaign) fsm.Command
		want fsm.State
	}{
		{"create", nil, func(*fsm.Campaign) fsm.Command { return benchCreate(false) }, fsm.Pending},
		{"create-start", nil, func(*fsm.Campaign) fsm.Command { return benchCreate(true) }, fsm.Running},
		{"start", new(benchCampaign(b, fsm.Pending, false)), func(*fsm.Campaign) fsm.Command { return cmd(fsm.Start) }, fsm.Running},
		{"pause", new(benchCampaign(b, fsm.Running, false)), func(*fsm.Campaign) fsm.Command { return cmd(fsm.Pause) }, fsm.Paused},
		{"resume", new(benchCampaign(b, fsm.Paused, false)), func(*fsm.Campaign) fsm.Command { return cmd(fsm.Resume) }, fsm.Running},
		{"cancel", new(benchCampaign(b, fsm.Running, false)), func(*fsm.Campaign) fsm.Command { return cmd(fsm.Cancel) }, fsm.Cancelled},
		{"retry", new(benchCampaign(b, fsm.Failed, false)), func(*fsm.Campaign) fsm.Command { return cmd(fsm.Retry) }, fsm.Running},
		{"advance", new(benchCampaign(b, fsm.Running, false)), func(c *fsm.Campaign) fsm.Command { return advanceFor(*c) }, fsm.Running},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			x := tc.cmd(tc.from)
			r, err := fsm.Apply(tc.from, x, now)
			if err != nil || r.Campaign.State != tc.want || len(r.Events) == 0 {
				b.Fatalf("Apply %s = %s with %d events, %v; want %s", tc.name, r.Campaign.State, len(r.Events), err, tc.want)
			}
			if tc.name == "advance" && !r.RunStep {
				b.Fatal("advance: RunStep false")
			}
			b.ReportAllocs()
			for b.Loop() {
				_, _ = fsm.Apply(tc.from, x, now)
			}
		})
	}
}

// BenchmarkStepSucceeded measures fsm.StepSucceeded of the third step of a
// standard-workflow campaign.
func BenchmarkStepSucceeded(b *testing.B) {
	c := benchCampaign(b, fsm.Running, true)
	out := json.RawMessage(`{"segment":"vip","count":1200}`)
	r := fsm.StepSucceeded(c, "adv-1", 1, out, 42*time.Millisecond, now)
	if r.Campaign.Step != c.Step+1 || r.Campaign.InFlight || !r.ScheduleAdvance || len(r.Events) != 1 || r.Events[0].Type != fsm.EvStepSucceeded {
		b.Fatalf("StepSucceeded = %+v", r)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = fsm.StepSucceeded(c, "adv-1", 1, out, 42*time.Millisecond, now)
	}
}
