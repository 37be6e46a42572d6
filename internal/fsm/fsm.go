// Package fsm is the campaign domain: states, commands, events, workflows and
// the transition function of CONTRACT section 5.
//
// It is pure: no I/O, no clocks (the caller passes now), no goroutines. Every
// other package depends on it; it depends on none of them.
package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// State is a campaign's lifecycle state.
type State string

const (
	Pending   State = "pending"
	Running   State = "running"
	Paused    State = "paused"
	Completed State = "completed"
	Failed    State = "failed"
	Cancelled State = "cancelled"
)

// States lists every state, in lifecycle order.
var States = []State{Pending, Running, Paused, Completed, Failed, Cancelled}

// Terminal reports whether no command but retry (from failed) can leave s.
func (s State) Terminal() bool { return s == Completed || s == Failed || s == Cancelled }

// Valid reports whether s is one of States.
func (s State) Valid() bool {
	for _, x := range States {
		if s == x {
			return true
		}
	}
	return false
}

// Verb is a command's type; it is also the last token of the command subject.
type Verb string

const (
	Create  Verb = "create"
	Start   Verb = "start"
	Pause   Verb = "pause"
	Resume  Verb = "resume"
	Cancel  Verb = "cancel"
	Retry   Verb = "retry"
	Advance Verb = "advance" // internal: published only by the service itself
)

// ExternalVerbs are the verbs anyone may publish.
var ExternalVerbs = []Verb{Create, Start, Pause, Resume, Cancel, Retry}

// Verbs are all verbs, Advance last.
var Verbs = append(append([]Verb{}, ExternalVerbs...), Advance)

// Valid reports whether v is one of Verbs.
func (v Verb) Valid() bool {
	for _, x := range Verbs {
		if v == x {
			return true
		}
	}
	return false
}

// Event types (CONTRACT section 4).
const (
	EvCreated       = "campaign.created"
	EvStarted       = "campaign.started"
	EvStepStarted   = "campaign.step.started"
	EvStepSucceeded = "campaign.step.succeeded"
	EvStepRetrying  = "campaign.step.retrying"
	EvStepFailed    = "campaign.step.failed"
	EvPaused        = "campaign.paused"
	EvResumed       = "campaign.resumed"
	EvCancelled     = "campaign.cancelled"
	EvRetried       = "campaign.retried"
	EvCompleted     = "campaign.completed"
	EvFailed        = "campaign.failed"
	EvRejected      = "campaign.command.rejected"
)

// RetryPolicy is a step's optional retry of listed HTTP statuses.
type RetryPolicy struct {
	MaxRetries    int           `json:"max_retries,omitempty" yaml:"max_retries"`
	BackoffBase   time.Duration `json:"backoff_base,omitempty" yaml:"backoff_base"`
	RetryOnStatus []int         `json:"retry_on_status,omitempty" yaml:"retry_on_status"`
}

// Step is one step of a workflow: a POST to URL.
type Step struct {
	Name    string        `json:"name"`
	URL     string        `json:"url"`
	Timeout time.Duration `json:"timeout,omitempty"`
	Retry   *RetryPolicy  `json:"retry,omitempty"`
}

// DefaultWorkflow is the name of the built-in workflow (internal/workflow),
// the one a create that names none runs.
const DefaultWorkflow = "standard"

// Workflow is an ordered list of steps. A campaign keeps a copy of the
// workflow it was created with.
type Workflow struct {
	Name  string `json:"name"`
	Steps []Step `json:"steps"`
}

// Campaign is the stored state of one campaign.
type Campaign struct {
	Tenant   string          `json:"tenant_id"`
	ID       string          `json:"campaign_id"`
	Name     string          `json:"name"`
	Workflow Workflow        `json:"workflow"`
	Params   json.RawMessage `json:"params,omitempty"`
	State    State           `json:"state"`
	// Step is the index in Workflow.Steps of the step to run next (or running);
	// len(Workflow.Steps) once every step succeeded.
	Step int `json:"step"`
	// Runs counts the runs of each step by name, from 1; only retry adds one.
	Runs map[string]int `json:"runs,omitempty"`
	// InFlight is true between step.started and the step's result.
	InFlight bool `json:"in_flight,omitempty"`
	// Attempt is the attempt number within the current run of the step.
	Attempt int                        `json:"attempt,omitempty"`
	Outputs map[string]json.RawMessage `json:"outputs,omitempty"`
	Error   string                     `json:"error,omitempty"`
	// Seq is the sequence number of the campaign's last event.
	Seq uint64 `json:"seq"`
	// Version grows by one with every change; the store's compare-and-set uses it.
	Version uint64 `json:"version"`
	// AdvanceVersion is the Version whose advance is expected; 0: none.
	AdvanceVersion uint64 `json:"advance_version,omitempty"`
	// Fence is the highest fencing token that wrote this campaign (at
	// most MaxFence).
	Fence     uint64     `json:"fence,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
}

// CurrentStep returns the step at c.Step, or false when all steps are done.
func (c *Campaign) CurrentStep() (Step, bool) {
	if c.Step < 0 || c.Step >= len(c.Workflow.Steps) {
		return Step{}, false
	}
	return c.Workflow.Steps[c.Step], true
}

// Run returns the current run number of the step named name (0: never run).
func (c *Campaign) Run(name string) int { return c.Runs[name] }

// CreatePayload is the payload of a create command.
type CreatePayload struct {
	Name     string          `json:"name"`
	Workflow string          `json:"workflow,omitempty"`
	Params   json.RawMessage `json:"params,omitempty"`
	Start    bool            `json:"start,omitempty"`
}

// AdvancePayload is what an advance expects: the step index, the step's run
// and the campaign version that scheduled it.
type AdvancePayload struct {
	Step    int    `json:"step"`
	Run     int    `json:"run"`
	Version uint64 `json:"version"`
}

// Command is a decoded, valid command.
type Command struct {
	ID       string
	Verb     Verb
	Tenant   string
	Campaign string
	Create   *CreatePayload  // create only
	Workflow *Workflow       // create only: the resolved definition
	Advance  *AdvancePayload // advance only
}

// Event is a domain event; internal/events turns it into a CloudEvent.
type Event struct {
	Seq       uint64
	Type      string
	Time      time.Time
	CommandID string
	// Fence is the fencing token of the lock holder that writes the event
	// (0: unknown). The state machine leaves it 0; the writer sets it, so
	// that a campaign rebuilt from its history (internal/rebuild) knows the
	// highest fence that ever wrote it.
	Fence uint64
	Data  map[string]any
}

// StepDef is a step as campaign.created's data holds it (step_definitions):
// the workflow's full definition at creation, so that rebuilding the
// campaign from its history needs no workflows file. Durations are Go
// duration text ("5s", "500ms"), as in the workflows file.
type StepDef struct {
	Name    string    `json:"name"`
	URL     string    `json:"url"`
	Timeout string    `json:"timeout,omitempty"`
	Retry   *RetryDef `json:"retry,omitempty"`
}

// RetryDef is a RetryPolicy as StepDef holds it.
type RetryDef struct {
	MaxRetries    int    `json:"max_retries,omitempty"`
	BackoffBase   string `json:"backoff_base,omitempty"`
	RetryOnStatus []int  `json:"retry_on_status,omitempty"`
}

// StepDefs returns steps as campaign.created's data holds them.
func StepDefs(steps []Step) []StepDef {
	out := make([]StepDef, len(steps))
	for i, s := range steps {
		d := StepDef{Name: s.Name, URL: s.URL}
		if s.Timeout != 0 {
			d.Timeout = s.Timeout.String()
		}
		if r := s.Retry; r != nil {
			d.Retry = &RetryDef{MaxRetries: r.MaxRetries, RetryOnStatus: append([]int(nil), r.RetryOnStatus...)}
			if r.BackoffBase != 0 {
				d.Retry.BackoffBase = r.BackoffBase.String()
			}
		}
		out[i] = d
	}
	return out
}

// ParseStepDefs is the inverse of StepDefs. It fails on a duration that
// time.ParseDuration does not accept or a step without a name.
func ParseStepDefs(defs []StepDef) ([]Step, error) {
	out := make([]Step, len(defs))
	for i, d := range defs {
		if d.Name == "" {
			return nil, fmt.Errorf("step %d: no name", i)
		}
		s := Step{Name: d.Name, URL: d.URL}
		if d.Timeout != "" {
			t, err := time.ParseDuration(d.Timeout)
			if err != nil {
				return nil, fmt.Errorf("step %s: timeout: %w", d.Name, err)
			}
			s.Timeout = t
		}
		if r := d.Retry; r != nil {
			s.Retry = &RetryPolicy{MaxRetries: r.MaxRetries, RetryOnStatus: append([]int(nil), r.RetryOnStatus...)}
			if r.BackoffBase != "" {
				b, err := time.ParseDuration(r.BackoffBase)
				if err != nil {
					return nil, fmt.Errorf("step %s: retry backoff_base: %w", d.Name, err)
				}
				s.Retry.BackoffBase = b
			}
		}
		out[i] = s
	}
	return out, nil
}

// Errors returned by Apply.
var (
	// ErrUnknownCampaign: a command other than create for a campaign that does not exist.
	ErrUnknownCampaign = errors.New("unknown campaign")
	// ErrStale: an advance that no longer matches the campaign; drop it silently.
	ErrStale = errors.New("stale advance")
)

// RejectedError is a command that is not allowed in the campaign's state. The
// Result returned with it carries the campaign.command.rejected event.
type RejectedError struct{ Reason string }

func (e *RejectedError) Error() string { return "rejected: " + e.Reason }

// Result is what a transition produced.
type Result struct {
	Campaign Campaign
	Events   []Event
	// RunStep is true when the caller must now call the current step (after
	// committing Campaign if Events is not empty).
	RunStep bool
	// ScheduleAdvance is true when the caller must publish an advance for
	// Campaign.AdvanceVersion together with the commit.
	ScheduleAdvance bool
}

// changed returns a copy of c with the version bumped and timestamps set.
func changed(c Campaign, now time.Time) Campaign {
	c.Version++
	c.UpdatedAt = now
	c.Runs = cloneMap(c.Runs)
	c.Outputs = cloneMap(c.Outputs)
	return c
}

func cloneMap[V any](m map[string]V) map[string]V {
	if m == nil {
		return nil
	}
	out := make(map[string]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (r *Result) emit(typ, cmdID string, now time.Time, data map[string]any) {
	r.Campaign.Seq++
	r.Campaign.UpdatedAt = now
	r.Events = append(r.Events, Event{Seq: r.Campaign.Seq, Type: typ, Time: now, CommandID: cmdID, Data: data})
}

func (r *Result) schedule() {
	r.Campaign.AdvanceVersion = r.Campaign.Version
	r.ScheduleAdvance = true
}

func (r *Result) end(s State, now time.Time) {
	r.Campaign.State = s
	r.Campaign.AdvanceVersion = 0
	t := now
	r.Campaign.EndedAt = &t
}

// Apply runs cmd against c (nil when the campaign does not exist).
//
// Errors: ErrUnknownCampaign (no result), ErrStale (no result), and
// *RejectedError, returned with a Result holding the rejected event.
func Apply(c *Campaign, cmd Command, now time.Time) (Result, error) {
	now = now.UTC()
	if c == nil {
		if cmd.Verb != Create {
			return Result{}, ErrUnknownCampaign
		}
		return create(cmd, now)
	}
	r := Result{Campaign: changed(*c, now)}
	reject := func(reason string) (Result, error) {
		r.emit(EvRejected, cmd.ID, now, map[string]any{"command": string(cmd.Verb), "state": string(c.State), "reason": reason})
		return r, &RejectedError{Reason: reason}
	}
	from := c.State
	switch cmd.Verb {
	case Create:
		return reject("campaign already exists")
	case Start:
		if from != Pending {
			return reject(fmt.Sprintf("cannot start a %s campaign", from))
		}
		r.Campaign.State = Running
		r.emit(EvStarted, cmd.ID, now, map[string]any{"from": string(from)})
		r.schedule()
	case Pause:
		if from != Running {
			return reject(fmt.Sprintf("cannot pause a %s campaign", from))
		}
		r.Campaign.State = Paused
		r.Campaign.AdvanceVersion = 0
		r.emit(EvPaused, cmd.ID, now, map[string]any{"from": string(from), "step": stepName(c)})
	case Resume:
		if from != Paused {
			return reject(fmt.Sprintf("cannot resume a %s campaign", from))
		}
		r.Campaign.State = Running
		r.emit(EvResumed, cmd.ID, now, map[string]any{"from": string(from), "step": stepName(c)})
		r.schedule()
	case Cancel:
		if from != Pending && from != Running && from != Paused {
			return reject(fmt.Sprintf("cannot cancel a %s campaign", from))
		}
		r.end(Cancelled, now)
		r.emit(EvCancelled, cmd.ID, now, map[string]any{"from": string(from), "step": stepName(c)})
	case Retry:
		if from != Failed {
			return reject(fmt.Sprintf("cannot retry a %s campaign", from))
		}
		r.Campaign.State = Running
		r.Campaign.EndedAt = nil
		r.Campaign.Error = ""
		r.Campaign.InFlight = false
		r.Campaign.Attempt = 0
		name := stepName(c)
		if name != "" {
			if r.Campaign.Runs == nil {
				r.Campaign.Runs = map[string]int{}
			}
			r.Campaign.Runs[name]++
		}
		r.emit(EvRetried, cmd.ID, now, map[string]any{"from": string(from), "step": name, "run": r.Campaign.Runs[name]})
		r.schedule()
	case Advance:
		return advance(c, r, cmd, now)
	default:
		return reject(fmt.Sprintf("unknown verb %q", cmd.Verb))
	}
	return r, nil
}

func create(cmd Command, now time.Time) (Result, error) {
	if cmd.Create == nil || cmd.Workflow == nil {
		return Result{}, fmt.Errorf("create %s/%s: no payload or workflow", cmd.Tenant, cmd.Campaign)
	}
	r := Result{Campaign: Campaign{
		Tenant: cmd.Tenant, ID: cmd.Campaign, Name: cmd.Create.Name,
		Workflow: *cmd.Workflow, Params: cmd.Create.Params,
		State: Pending, Version: 1, CreatedAt: now, UpdatedAt: now,
	}}
	steps := make([]string, len(cmd.Workflow.Steps))
	for i, s := range cmd.Workflow.Steps {
		steps[i] = s.Name
	}
	data := map[string]any{"name": cmd.Create.Name, "workflow": cmd.Workflow.Name, "steps": steps, "step_definitions": StepDefs(cmd.Workflow.Steps)}
	if len(cmd.Create.Params) > 0 {
		data["params"] = cmd.Create.Params
	}
	r.emit(EvCreated, cmd.ID, now, data)
	if cmd.Create.Start {
		r.Campaign.State = Running
		r.emit(EvStarted, cmd.ID, now, map[string]any{"from": string(Pending)})
		r.schedule()
	}
	return r, nil
}

func advance(c *Campaign, r Result, cmd Command, now time.Time) (Result, error) {
	p := cmd.Advance
	if p == nil || c.State != Running || c.AdvanceVersion == 0 || p.Version != c.AdvanceVersion || p.Step != c.Step {
		return Result{}, ErrStale
	}
	step, ok := c.CurrentStep()
	if !ok {
		r.end(Completed, now)
		r.emit(EvCompleted, cmd.ID, now, map[string]any{"steps": len(c.Workflow.Steps)})
		return r, nil
	}
	run := c.Run(step.Name)
	if run == 0 {
		run = 1
	}
	if p.Run != 0 && p.Run != run {
		return Result{}, ErrStale
	}
	if c.InFlight {
		// The step started before a crash: run it again, same run, no new event.
		return Result{Campaign: *c, RunStep: true}, nil
	}
	if r.Campaign.Runs == nil {
		r.Campaign.Runs = map[string]int{}
	}
	r.Campaign.Runs[step.Name] = run
	r.Campaign.InFlight = true
	r.Campaign.Attempt = 1
	r.emit(EvStepStarted, cmd.ID, now, map[string]any{"step": step.Name, "run": run, "attempt": 1})
	r.RunStep = true
	return r, nil
}

func stepName(c *Campaign) string {
	s, _ := c.CurrentStep()
	return s.Name
}

// StepRetrying records that attempt failed with a network error and the step
// will be tried again after delay.
func StepRetrying(c Campaign, cmdID string, attempt int, cause string, delay time.Duration, now time.Time) Result {
	now = now.UTC()
	r := Result{Campaign: changed(c, now)}
	r.Campaign.Attempt = attempt + 1
	r.emit(EvStepRetrying, cmdID, now, map[string]any{
		"step": stepName(&c), "run": c.Run(stepName(&c)), "attempt": attempt,
		"error": cause, "retry_in_ms": delay.Milliseconds(),
	})
	return r
}

// StepSucceeded records the current step's output and schedules the next advance.
func StepSucceeded(c Campaign, cmdID string, attempt int, output json.RawMessage, took time.Duration, now time.Time) Result {
	now = now.UTC()
	r := Result{Campaign: changed(c, now)}
	name := stepName(&c)
	if r.Campaign.Outputs == nil {
		r.Campaign.Outputs = map[string]json.RawMessage{}
	}
	if len(output) == 0 {
		output = json.RawMessage("{}")
	}
	r.Campaign.Outputs[name] = output
	r.Campaign.InFlight = false
	r.Campaign.Attempt = 0
	r.Campaign.Step++
	r.emit(EvStepSucceeded, cmdID, now, map[string]any{
		"step": name, "run": c.Run(name), "attempt": attempt,
		"duration_ms": took.Milliseconds(), "output": output,
	})
	r.schedule()
	return r
}

// StepFailed records the current step's failure, which fails the campaign.
func StepFailed(c Campaign, cmdID string, attempt int, cause string, took time.Duration, now time.Time) Result {
	now = now.UTC()
	r := Result{Campaign: changed(c, now)}
	name := stepName(&c)
	r.Campaign.InFlight = false
	// The campaign's error names the step once: the step client's errors
	// already start with it ("step segment: attempt 1: …").
	r.Campaign.Error = cause
	if !strings.HasPrefix(cause, "step "+name+":") {
		r.Campaign.Error = fmt.Sprintf("step %s: %s", name, cause)
	}
	r.emit(EvStepFailed, cmdID, now, map[string]any{
		"step": name, "run": c.Run(name), "attempt": attempt,
		"duration_ms": took.Milliseconds(), "error": cause,
	})
	r.end(Failed, now)
	r.emit(EvFailed, cmdID, now, map[string]any{"step": name, "error": r.Campaign.Error})
	return r
}

// Reject records an invalid command (bad payload, unknown verb or workflow)
// on an existing campaign: one campaign.command.rejected event.
func Reject(c Campaign, cmdID, verb, reason string, now time.Time) Result {
	now = now.UTC()
	r := Result{Campaign: changed(c, now)}
	r.emit(EvRejected, cmdID, now, map[string]any{"command": verb, "state": string(c.State), "reason": reason})
	return r
}

// MaxFence bounds the fencing tokens a campaign's history may show (2^48):
// a fence above it in CAMPAIGN_EVENTS did not come from a lock (the store's
// counter grows by one per lock taken: 2^48 is nine years of a million locks
// a second) and must not raise the fencing counter. It keeps the counter far
// below 2^53, where the store's Lua scripts, whose numbers are doubles,
// stop counting exactly.
const MaxFence = 1 << 48
