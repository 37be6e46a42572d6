// Package rebuild derives a campaign's state from its event history
// (CAMPAIGN_EVENTS), for a campaign whose state the store lost (CONTRACT
// guarantee 8): the fsm.Campaign the events describe, the command ids the
// campaign's ledger held, the highest fencing token that wrote it, and
// whether work is pending.
//
// It is pure: no I/O, no clock. Reading the history (internal/events) and
// installing the result (internal/store) are the caller's.
package rebuild

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// ErrHistory is returned for a history that no run of the state machine can
// have produced: empty, not starting with campaign.created at sequence 1
// (ErrTruncated when its start is gone), a gap, another campaign's event,
// an event the service did not write (ErrForged), data that does not
// decode, or a campaign.created without step_definitions (written before
// events carried them: the workflow then is not known).
var ErrHistory = errors.New("rebuild: unusable history")

// ErrTruncated (always with ErrHistory) is returned for a history whose
// first events, campaign.created among them, are no longer in
// CAMPAIGN_EVENTS (older than the stream's max_age, or purged): what the
// campaign was cannot be known.
var ErrTruncated = errors.New("history truncated")

// ErrForged (always with ErrHistory) is returned for a message on the
// campaign's event subjects that the service did not write: a source other
// than events.Source, an id that is not the event's events.EventID, a
// subject that is not the campaign's, or a fence that is not a decimal at
// most fsm.MaxFence. Only the service may publish there (deploy/nats);
// such a history is refused whole rather than trusted, so that no forged
// fence can raise the campaign's fencing counter.
var ErrForged = errors.New("event not written by the service")

// Campaign is a campaign rebuilt from its history.
type Campaign struct {
	// Campaign is the state the events describe. Derived exactly: state,
	// name, workflow (from step_definitions), params, step index, runs,
	// attempt, in-flight, outputs, error, Seq (the last event's sequence),
	// CreatedAt, UpdatedAt and EndedAt (to the millisecond: event times are
	// written with milliseconds). Not derivable, and set so that the
	// campaign goes on correctly: Version is Seq (the lost state's version
	// was at most Seq, every change emitting at least one event, so an
	// advance scheduled before the loss never matches another state),
	// AdvanceVersion is Version while running (the advance the rebuilt
	// campaign expects, see Pending) and 0 otherwise, Fence is FenceFloor.
	Campaign fsm.Campaign
	// Applied are the ids of the external commands the history shows
	// applied (each event's commandid but the internal advances'), in
	// order of first appearance: the campaign's ledger. A command that was
	// settled without an event (dead-lettered, say) is not among them.
	Applied []string
	// FenceFloor is the highest fencing token the history shows (0 for
	// events written before events carried it): the campaign's next lock
	// must take a fencing token above it.
	FenceFloor uint64
	// Pending reports whether the campaign has work waiting: it is running,
	// so an advance (the current step, or the completion) must come. A
	// store that installs the campaign parks that advance as its durable
	// trigger.
	Pending bool
}

// IsAdvanceID reports whether id is the id of an internal advance of the
// campaign (events.AdvanceID: <tenant>.<campaign>.advance.<version>.<nonce>).
func IsAdvanceID(tenant, campaign, id string) bool {
	return strings.HasPrefix(id, tenant+"."+campaign+".advance.")
}

// Rebuild returns the campaign that evs, the campaign's events in sequence
// order (1..N, as events.History returns them), describe. It fails with an
// error wrapping ErrHistory for a history it cannot use.
func Rebuild(evs []events.CloudEvent) (Campaign, error) {
	if len(evs) == 0 {
		return Campaign{}, fmt.Errorf("%w: no events", ErrHistory)
	}
	first := evs[0]
	tenant, id := first.TenantID, first.CampaignID
	var (
		out  Campaign
		c    = &out.Campaign
		seen = map[string]bool{}
	)
	if !events.ValidToken(tenant) || !events.ValidToken(id) {
		return Campaign{}, fmt.Errorf("%w: %w: tenant %s, campaign %s", ErrHistory, ErrForged, events.QuoteBounded(tenant), events.QuoteBounded(id))
	}
	if n := first.Seq(); n > 1 && first.Source == events.Source {
		return Campaign{}, fmt.Errorf("%w: %w: %s/%s's history starts at event %d (%s): its first %d events, %s among them, are no longer in %s (older than the stream's max_age, or purged), so the campaign cannot be rebuilt",
			ErrHistory, ErrTruncated, tenant, id, n, events.QuoteBounded(first.Type), n-1, fsm.EvCreated, events.StreamEvents)
	}
	for i, ev := range evs {
		where := fmt.Sprintf("%s/%s event %d (%s)", tenant, id, i+1, events.QuoteBounded(ev.Type))
		if err := written(tenant, id, uint64(i+1), ev); err != nil {
			return Campaign{}, fmt.Errorf("%w: %w: %s: %w", ErrHistory, ErrForged, where, err)
		}
		switch {
		case ev.TenantID != tenant || ev.CampaignID != id:
			return Campaign{}, fmt.Errorf("%w: %s belongs to %s/%s", ErrHistory, where, events.QuoteBounded(ev.TenantID), events.QuoteBounded(ev.CampaignID))
		case ev.Seq() != uint64(i+1):
			return Campaign{}, fmt.Errorf("%w: %s has sequence %s", ErrHistory, where, events.QuoteBounded(ev.Sequence))
		case i == 0 && ev.Type != fsm.EvCreated:
			return Campaign{}, fmt.Errorf("%w: the first event is %s, not %s", ErrHistory, events.QuoteBounded(ev.Type), fsm.EvCreated)
		case i > 0 && ev.Type == fsm.EvCreated:
			return Campaign{}, fmt.Errorf("%w: %s: a second %s", ErrHistory, where, fsm.EvCreated)
		}
		if err := apply(c, ev); err != nil {
			return Campaign{}, fmt.Errorf("%w: %s: %w", ErrHistory, where, err)
		}
		c.Seq = ev.Seq()
		c.UpdatedAt = ev.Time.UTC()
		out.FenceFloor = max(out.FenceFloor, ev.FenceToken())
		if cid := ev.CommandID; cid != "" && !seen[cid] && !IsAdvanceID(tenant, id, cid) {
			seen[cid] = true
			out.Applied = append(out.Applied, cid)
		}
	}
	c.Version = c.Seq
	c.Fence = out.FenceFloor
	c.AdvanceVersion = 0
	if c.State == fsm.Running {
		c.AdvanceVersion = c.Version
		out.Pending = true
	}
	return out, nil
}

// written checks that ev, the campaign's event number seq, is what the
// service writes (events.NewEventMsg): its source, its id, its subject and
// a fence that is "" or a decimal without leading zeros, at most
// fsm.MaxFence.
func written(tenant, campaign string, seq uint64, ev events.CloudEvent) error {
	switch want := events.EventID(tenant, campaign, seq); {
	case ev.Source != events.Source:
		return fmt.Errorf("source %s, not %q", events.QuoteBounded(ev.Source), events.Source)
	case ev.ID != want:
		return fmt.Errorf("id %s, not %q", events.QuoteBounded(ev.ID), want)
	case ev.Subject != tenant+"/"+campaign:
		return fmt.Errorf("subject %s, not %q", events.QuoteBounded(ev.Subject), tenant+"/"+campaign)
	case ev.Fence == "":
		return nil
	}
	n, err := strconv.ParseUint(ev.Fence, 10, 64)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != ev.Fence || n > fsm.MaxFence {
		return fmt.Errorf("fence %s is not a fencing token (a decimal from 1 to %d)", events.QuoteBounded(ev.Fence), uint64(fsm.MaxFence))
	}
	return nil
}

// The data of each event type, as fsm emits it.
type (
	createdData struct {
		Name            string          `json:"name"`
		Workflow        string          `json:"workflow"`
		Steps           []string        `json:"steps"`
		Params          json.RawMessage `json:"params"`
		StepDefinitions []fsm.StepDef   `json:"step_definitions"`
	}
	stepData struct {
		Step    string          `json:"step"`
		Run     int             `json:"run"`
		Attempt int             `json:"attempt"`
		Output  json.RawMessage `json:"output"`
		Error   string          `json:"error"`
	}
)

// apply changes c as the transition that emitted ev did.
func apply(c *fsm.Campaign, ev events.CloudEvent) error {
	now := ev.Time.UTC()
	switch ev.Type {
	case fsm.EvCreated:
		var d createdData
		if err := decode(ev, &d); err != nil {
			return err
		}
		if len(d.StepDefinitions) == 0 {
			return errors.New("no step_definitions (written before events carried them)")
		}
		steps, err := fsm.ParseStepDefs(d.StepDefinitions)
		if err != nil {
			return err
		}
		if len(d.Steps) != len(steps) {
			return fmt.Errorf("%d step names but %d step definitions", len(d.Steps), len(steps))
		}
		for i, s := range steps {
			if d.Steps[i] != s.Name {
				return fmt.Errorf("step %d is %q in steps but %q in step_definitions", i, d.Steps[i], s.Name)
			}
		}
		params := d.Params
		if len(params) == 0 || string(params) == "null" {
			params = nil
		}
		*c = fsm.Campaign{
			Tenant: ev.TenantID, ID: ev.CampaignID, Name: d.Name,
			Workflow: fsm.Workflow{Name: d.Workflow, Steps: steps}, Params: params,
			State: fsm.Pending, CreatedAt: now,
		}
	case fsm.EvStarted:
		c.State = fsm.Running
	case fsm.EvPaused:
		c.State = fsm.Paused
	case fsm.EvResumed:
		c.State = fsm.Running
	case fsm.EvCancelled:
		end(c, fsm.Cancelled, now)
	case fsm.EvCompleted:
		end(c, fsm.Completed, now)
	case fsm.EvRetried:
		var d stepData
		if err := decode(ev, &d); err != nil {
			return err
		}
		c.State = fsm.Running
		c.EndedAt, c.Error, c.InFlight, c.Attempt = nil, "", false, 0
		if d.Step != "" {
			setRun(c, d.Step, d.Run)
		}
	case fsm.EvStepStarted:
		var d stepData
		if err := decode(ev, &d); err != nil {
			return err
		}
		if err := current(c, d.Step); err != nil {
			return err
		}
		setRun(c, d.Step, d.Run)
		c.InFlight, c.Attempt = true, d.Attempt
	case fsm.EvStepRetrying:
		var d stepData
		if err := decode(ev, &d); err != nil {
			return err
		}
		if err := current(c, d.Step); err != nil {
			return err
		}
		c.Attempt = d.Attempt + 1
	case fsm.EvStepSucceeded:
		var d stepData
		if err := decode(ev, &d); err != nil {
			return err
		}
		if err := current(c, d.Step); err != nil {
			return err
		}
		if c.Outputs == nil {
			c.Outputs = map[string]json.RawMessage{}
		}
		out := d.Output
		if len(out) == 0 {
			out = json.RawMessage("{}")
		}
		c.Outputs[d.Step] = out
		c.InFlight, c.Attempt = false, 0
		c.Step++
	case fsm.EvStepFailed:
		var d stepData
		if err := decode(ev, &d); err != nil {
			return err
		}
		if err := current(c, d.Step); err != nil {
			return err
		}
		c.InFlight = false
	case fsm.EvFailed:
		var d stepData
		if err := decode(ev, &d); err != nil {
			return err
		}
		c.Error = d.Error
		end(c, fsm.Failed, now)
	case fsm.EvRejected:
		// No change but the sequence.
	default:
		return fmt.Errorf("unknown event type %q", ev.Type)
	}
	return nil
}

func decode(ev events.CloudEvent, v any) error {
	if len(ev.Data) == 0 {
		return errors.New("no data")
	}
	if err := json.Unmarshal(ev.Data, v); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	return nil
}

// current checks that step is the campaign's current step.
func current(c *fsm.Campaign, step string) error {
	s, ok := c.CurrentStep()
	if !ok || s.Name != step {
		return fmt.Errorf("step %q is not the current step (index %d of %d)", step, c.Step, len(c.Workflow.Steps))
	}
	return nil
}

func setRun(c *fsm.Campaign, step string, run int) {
	if c.Runs == nil {
		c.Runs = map[string]int{}
	}
	c.Runs[step] = run
}

func end(c *fsm.Campaign, s fsm.State, now time.Time) {
	c.State = s
	c.EndedAt = &now
}
