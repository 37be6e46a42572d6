package rebuild_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/rebuild"
)

var testWorkflow = fsm.Workflow{Name: "custom", Steps: []fsm.Step{
	{Name: "validate", URL: "http://validator:8080/validate", Timeout: 5 * time.Second,
		Retry: &fsm.RetryPolicy{MaxRetries: 2, BackoffBase: 500 * time.Millisecond, RetryOnStatus: []int{429, 503}}},
	{Name: "segment", URL: "http://steps/segment", Timeout: 1500 * time.Microsecond},
	{Name: "render", URL: "http://steps/render", Retry: &fsm.RetryPolicy{MaxRetries: 1}},
}}

// walk drives one campaign through the state machine as the worker does,
// at random, and keeps its events as CAMPAIGN_EVENTS would (encoded by
// events.NewEventMsg, decoded by events.ParseEvent), the external command
// ids that produced events (the ledger) and the highest fence.
type walk struct {
	t       *testing.T
	rng     *rand.Rand
	c       *fsm.Campaign
	now     time.Time
	fence   uint64
	n       int
	history []events.CloudEvent
	ledger  []string
	ops     []string
}

func (w *walk) id(prefix string) string {
	w.n++
	return fmt.Sprintf("%s-%d", prefix, w.n)
}

func (w *walk) tick() time.Time {
	// Not whole milliseconds: event times keep only milliseconds.
	w.now = w.now.Add(time.Duration(1+w.rng.IntN(5000)) * time.Microsecond * 7)
	return w.now
}

// record keeps r's events, written under the current fence (which grows
// now and then: another lock holder took over).
func (w *walk) record(r fsm.Result, cmdID string, external bool) {
	if w.rng.IntN(4) == 0 {
		w.fence += uint64(1 + w.rng.IntN(3))
	}
	for _, ev := range r.Events {
		ev.Fence = w.fence
		m, err := events.NewEventMsg(r.Campaign.Tenant, r.Campaign.ID, ev, "")
		if err != nil {
			w.t.Fatalf("NewEventMsg: %v", err)
		}
		ce, err := events.ParseEvent(m.Data)
		if err != nil {
			w.t.Fatalf("ParseEvent: %v", err)
		}
		w.history = append(w.history, ce)
	}
	if external && len(r.Events) > 0 && !slices.Contains(w.ledger, cmdID) {
		w.ledger = append(w.ledger, cmdID)
	}
	c := r.Campaign
	w.c = &c
}

func (w *walk) apply(cmd fsm.Command) {
	w.ops = append(w.ops, string(cmd.Verb))
	r, err := fsm.Apply(w.c, cmd, w.tick())
	var rej *fsm.RejectedError
	switch {
	case errors.Is(err, fsm.ErrStale), errors.Is(err, fsm.ErrUnknownCampaign):
		return
	case err != nil && !errors.As(err, &rej):
		w.t.Fatalf("apply %s: %v", cmd.Verb, err)
	}
	w.record(r, cmd.ID, cmd.Verb != fsm.Advance)
}

func (w *walk) external(v fsm.Verb) {
	cmd := fsm.Command{ID: w.id(string(v)), Verb: v, Tenant: "acme", Campaign: "c1"}
	if v == fsm.Create {
		cmd.Create = &fsm.CreatePayload{Name: "Spring sale", Workflow: testWorkflow.Name, Start: w.rng.IntN(2) == 0}
		if w.rng.IntN(2) == 0 {
			cmd.Create.Params = json.RawMessage(`{"discount":"20%","n":3}`)
		}
		wf := testWorkflow
		cmd.Workflow = &wf
	}
	// A command delivered again (its id already applied) changes nothing
	// in the worker: the ledger stops it before the state machine.
	if w.rng.IntN(8) == 0 && len(w.ledger) > 0 {
		return
	}
	w.apply(cmd)
}

// advance applies the advance the campaign expects, then the step's
// outcome when it started one.
func (w *walk) advance() {
	c := w.c
	cmd, _ := events.Advance(*c, "")
	before := len(w.history)
	w.ops = append(w.ops, "advance")
	r, err := fsm.Apply(c, cmd, w.tick())
	if errors.Is(err, fsm.ErrStale) {
		return
	}
	if err != nil {
		w.t.Fatalf("advance: %v", err)
	}
	if len(r.Events) > 0 {
		w.record(r, cmd.ID, false)
	}
	if !r.RunStep || len(w.history) == before && w.rng.IntN(2) == 0 {
		return
	}
	// The step's outcome (or none: the worker died during the call).
	cur := *w.c
	attempt := max(cur.Attempt, 1)
	for range 3 {
		switch w.rng.IntN(6) {
		case 0:
			return // crash: the advance comes again
		case 1:
			w.ops = append(w.ops, "retrying")
			rr := fsm.StepRetrying(cur, cmd.ID, attempt, "connection refused", 500*time.Millisecond, w.tick())
			w.record(rr, cmd.ID, false)
			cur, attempt = *w.c, attempt+1
			continue
		case 2:
			w.ops = append(w.ops, "step failed")
			w.record(fsm.StepFailed(cur, cmd.ID, attempt, "status 500: boom", 17*time.Millisecond, w.tick()), cmd.ID, false)
		default:
			w.ops = append(w.ops, "step succeeded")
			out := json.RawMessage(fmt.Sprintf(`{"step":%q,"n":%d}`, cur.Workflow.Steps[cur.Step].Name, w.rng.IntN(100)))
			if w.rng.IntN(5) == 0 {
				out = nil // an empty body: {}
			}
			w.record(fsm.StepSucceeded(cur, cmd.ID, attempt, out, 42*time.Millisecond, w.tick()), cmd.ID, false)
		}
		return
	}
}

func (w *walk) step() {
	if w.c == nil {
		w.external(fsm.Create)
		return
	}
	switch k := w.rng.IntN(12); {
	case k < 5 && w.c.State == fsm.Running:
		w.advance()
	case k == 5:
		w.ops = append(w.ops, "invalid")
		id := w.id("invalid")
		w.record(fsm.Reject(*w.c, id, "start", "payload is not JSON", w.tick()), id, true)
	default:
		verbs := []fsm.Verb{fsm.Create, fsm.Start, fsm.Pause, fsm.Resume, fsm.Cancel, fsm.Retry, fsm.Start, fsm.Resume, fsm.Retry}
		w.external(verbs[w.rng.IntN(len(verbs))])
	}
}

// want is what Rebuild must return for the walk's campaign: the campaign
// as the state machine left it, with the fields Rebuild documents as not
// derivable set as it documents, and times to the millisecond.
func (w *walk) want() fsm.Campaign {
	c := *w.c
	ms := func(t time.Time) time.Time { return t.Truncate(time.Millisecond) }
	c.CreatedAt, c.UpdatedAt = ms(c.CreatedAt), ms(c.UpdatedAt)
	if c.EndedAt != nil {
		e := ms(*c.EndedAt)
		c.EndedAt = &e
	}
	c.Version = c.Seq
	c.Fence = w.fence
	c.AdvanceVersion = 0
	if c.State == fsm.Running {
		c.AdvanceVersion = c.Version
	}
	return c
}

func TestRebuildMatchesStateMachine(t *testing.T) {
	for seed := range uint64(300) {
		w := &walk{t: t, rng: rand.New(rand.NewPCG(seed, 7)), now: time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC), fence: 1}
		for range 20 + w.rng.IntN(40) {
			w.step()
			if w.c == nil {
				continue
			}
			if (w.c.State == fsm.Running) != (w.c.AdvanceVersion != 0) {
				t.Fatalf("seed %d: the state machine's %s campaign has advance version %d", seed, w.c.State, w.c.AdvanceVersion)
			}
			got, err := rebuild.Rebuild(w.history)
			if err != nil {
				t.Fatalf("seed %d after %v: Rebuild: %v", seed, w.ops, err)
			}
			if want := w.want(); !reflect.DeepEqual(got.Campaign, want) {
				t.Fatalf("seed %d after %v:\n got %+v\nwant %+v", seed, w.ops, got.Campaign, want)
			}
			if !slices.Equal(got.Applied, w.ledger) {
				t.Fatalf("seed %d after %v: applied %v, want %v", seed, w.ops, got.Applied, w.ledger)
			}
			if got.FenceFloor != w.fence || got.Pending != (w.c.State == fsm.Running) {
				t.Fatalf("seed %d: fence floor %d pending %v, want %d %v (%s)", seed, got.FenceFloor, got.Pending, w.fence, w.c.State == fsm.Running, w.c.State)
			}
		}
	}
}

// TestRebuildGoesOn: a running campaign rebuilt mid-step goes on exactly as
// the lost one would have: the advance it expects re-runs the step in
// flight (same run, no new event), and its result applies.
func TestRebuildGoesOn(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	w := &walk{t: t, rng: rand.New(rand.NewPCG(1, 1)), now: now, fence: 4}
	wf := testWorkflow
	w.apply(fsm.Command{ID: "create-1", Verb: fsm.Create, Tenant: "acme", Campaign: "c1", Workflow: &wf,
		Create: &fsm.CreatePayload{Name: "n", Workflow: wf.Name, Start: true}})
	adv, _ := events.Advance(*w.c, "")
	r, err := fsm.Apply(w.c, adv, w.tick())
	if err != nil || !r.RunStep || len(r.Events) != 1 {
		t.Fatalf("advance: %v %+v", err, r)
	}
	w.record(r, adv.ID, false)

	got, err := rebuild.Rebuild(w.history)
	if err != nil {
		t.Fatal(err)
	}
	c := got.Campaign
	if !got.Pending || !c.InFlight || c.Step != 0 || c.Run("validate") != 1 || got.FenceFloor != w.fence {
		t.Fatalf("rebuilt %+v", got)
	}
	if !reflect.DeepEqual(got.Applied, []string{"create-1"}) {
		t.Errorf("applied %v, want only the create (not the advance)", got.Applied)
	}
	again, _ := events.Advance(c, "")
	r, err = fsm.Apply(&c, again, now.Add(time.Minute))
	if err != nil || !r.RunStep || len(r.Events) != 0 {
		t.Fatalf("the rebuilt campaign's advance: %v, run step %v, events %v", err, r.RunStep, r.Events)
	}
	r = fsm.StepSucceeded(r.Campaign, again.ID, 1, json.RawMessage(`{}`), time.Millisecond, now.Add(time.Minute))
	if r.Campaign.Step != 1 || r.Events[0].Seq != c.Seq+1 || r.Campaign.Version != c.Version+1 {
		t.Errorf("after the step: %+v", r.Campaign)
	}
}

func TestRebuildRefusesBadHistory(t *testing.T) {
	mk := func(seq uint64, typ, data string) events.CloudEvent {
		return events.CloudEvent{SpecVersion: "1.0", ID: events.EventID("acme", "c1", seq), Source: events.Source, Subject: "acme/c1",
			Type: typ, TenantID: "acme", CampaignID: "c1", Sequence: events.FormatSequence(seq), Data: json.RawMessage(data), Time: time.Now()}
	}
	created := mk(1, fsm.EvCreated, `{"name":"n","workflow":"w","steps":["a"],"step_definitions":[{"name":"a","url":"http://x/a"}]}`)
	if _, err := rebuild.Rebuild([]events.CloudEvent{created, mk(2, fsm.EvStarted, `{}`)}); err != nil {
		t.Fatalf("the valid history: %v", err)
	}
	other := created
	other.CampaignID = "c2"
	other.Sequence = events.FormatSequence(2)
	other.ID = events.EventID("acme", "c1", 2)
	forged := func(f func(*events.CloudEvent)) []events.CloudEvent {
		ev := mk(2, fsm.EvStarted, `{}`)
		ev.Fence = "7"
		f(&ev)
		return []events.CloudEvent{created, ev}
	}
	tests := []struct {
		name string
		evs  []events.CloudEvent
	}{
		{"forged source", forged(func(e *events.CloudEvent) { e.Source = "someone" })},
		{"forged id", forged(func(e *events.CloudEvent) { e.ID = "x" })},
		{"another campaign's id", forged(func(e *events.CloudEvent) { e.ID = events.EventID("acme", "c2", 2) })},
		{"forged subject", forged(func(e *events.CloudEvent) { e.Subject = "acme/c2" })},
		{"fence above MaxFence", forged(func(e *events.CloudEvent) { e.Fence = strconv.FormatUint(fsm.MaxFence+1, 10) })},
		{"fence near 2^64", forged(func(e *events.CloudEvent) { e.Fence = "18446744073709551615" })},
		{"fence not a number", forged(func(e *events.CloudEvent) { e.Fence = "x" })},
		{"fence with a leading zero", forged(func(e *events.CloudEvent) { e.Fence = "07" })},
		{"fence 0", forged(func(e *events.CloudEvent) { e.Fence = "0" })},
		{"empty", nil},
		{"not created first", []events.CloudEvent{mk(1, fsm.EvStarted, `{"from":"pending"}`)}},
		{"gap", []events.CloudEvent{created, mk(3, fsm.EvStarted, `{"from":"pending"}`)}},
		{"another campaign's", []events.CloudEvent{created, other}},
		{"no step definitions", []events.CloudEvent{mk(1, fsm.EvCreated, `{"name":"n","workflow":"w","steps":["a"]}`)}},
		{"names disagree", []events.CloudEvent{mk(1, fsm.EvCreated, `{"name":"n","workflow":"w","steps":["b"],"step_definitions":[{"name":"a","url":"u"}]}`)}},
		{"bad duration", []events.CloudEvent{mk(1, fsm.EvCreated, `{"name":"n","workflow":"w","steps":["a"],"step_definitions":[{"name":"a","url":"u","timeout":"soon"}]}`)}},
		{"not the current step", []events.CloudEvent{created, mk(2, fsm.EvStarted, `{}`), mk(3, fsm.EvStepStarted, `{"step":"z","run":1,"attempt":1}`)}},
		{"unknown type", []events.CloudEvent{created, mk(2, "campaign.exploded", `{}`)}},
		{"second created", []events.CloudEvent{created, mk(2, fsm.EvCreated, string(created.Data))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rebuild.Rebuild(tt.evs)
			if !errors.Is(err, rebuild.ErrHistory) {
				t.Errorf("Rebuild = %v, want ErrHistory", err)
			}
			if strings.HasPrefix(tt.name, "forged") || strings.HasPrefix(tt.name, "fence") || strings.HasPrefix(tt.name, "another campaign's id") {
				if !errors.Is(err, rebuild.ErrForged) {
					t.Errorf("Rebuild = %v, want ErrForged", err)
				}
			}
		})
	}
	// A forged fence at the bound is the most a history can raise the
	// counter to.
	ok := forged(func(e *events.CloudEvent) { e.Fence = strconv.FormatUint(fsm.MaxFence, 10) })
	if rb, err := rebuild.Rebuild(ok); err != nil || rb.FenceFloor != fsm.MaxFence {
		t.Errorf("fence at MaxFence: %+v, %v", rb, err)
	}
}

// TestRebuildTruncatedHistory: a campaign whose first events (its
// campaign.created among them) aged out of CAMPAIGN_EVENTS cannot be
// rebuilt, and the error says so.
func TestRebuildTruncatedHistory(t *testing.T) {
	w := &walk{t: t, rng: rand.New(rand.NewPCG(3, 3)), now: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), fence: 1}
	for len(w.history) < 6 {
		w.step()
	}
	_, err := rebuild.Rebuild(w.history[3:])
	if !errors.Is(err, rebuild.ErrHistory) || !errors.Is(err, rebuild.ErrTruncated) {
		t.Fatalf("Rebuild of a history without its first 3 events = %v, want ErrTruncated", err)
	}
	for _, want := range []string{"starts at event 4", "first 3 events", fsm.EvCreated, "no longer in " + events.StreamEvents} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
