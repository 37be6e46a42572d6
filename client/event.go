package client

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// State is a campaign's lifecycle state.
type State string

// The states (CONTRACT section 5). Completed, Failed and Cancelled end a
// campaign, except that Retry leaves Failed.
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

// Terminal reports whether s ends a campaign (Retry may still leave Failed).
func (s State) Terminal() bool { return fsm.State(s).Terminal() }

// Event types: the CloudEvents type of each event the service emits. The
// subject's last tokens are the type without "campaign.".
const (
	TypeCreated         = "campaign.created"
	TypeStarted         = "campaign.started"
	TypeStepStarted     = "campaign.step.started"
	TypeStepSucceeded   = "campaign.step.succeeded"
	TypeStepRetrying    = "campaign.step.retrying"
	TypeStepFailed      = "campaign.step.failed"
	TypePaused          = "campaign.paused"
	TypeResumed         = "campaign.resumed"
	TypeCancelled       = "campaign.cancelled"
	TypeRetried         = "campaign.retried"
	TypeCompleted       = "campaign.completed"
	TypeFailed          = "campaign.failed"
	TypeCommandRejected = "campaign.command.rejected"
)

// EventTypes lists every event type.
var EventTypes = []string{
	TypeCreated, TypeStarted, TypeStepStarted, TypeStepSucceeded, TypeStepRetrying, TypeStepFailed,
	TypePaused, TypeResumed, TypeCancelled, TypeRetried, TypeCompleted, TypeFailed, TypeCommandRejected,
}

func knownEventType(t string) bool {
	for _, x := range EventTypes {
		if t == x {
			return true
		}
	}
	return false
}

// CloudEvents extension attributes of every event.
const (
	ExtTenantID    = "tenantid"
	ExtCampaignID  = "campaignid"
	ExtSequence    = "sequence" // the CloudEvents sequence extension: 20 zero-padded digits
	ExtCommandID   = "commandid"
	ExtTraceparent = "traceparent"
	ExtFence       = "fence" // the writer's fencing token, decimal text
)

// Event is one event of a campaign: a CloudEvents 1.0 event (the CNCF
// sdk-go type, with the extensions tenantid, campaignid, sequence,
// commandid, fence and traceparent) and those extensions decoded. Its JSON is the
// CloudEvent's, structured mode, as the service publishes it.
type Event struct {
	event.Event
	// Seq is the campaign's event number: 1, 2, … with no gap.
	Seq uint64
	// TenantID and CampaignID name the campaign.
	TenantID, CampaignID string
	// CommandID is the id of the command that caused the event.
	CommandID string
	// Traceparent is the trace context of that command, when it had one.
	Traceparent string
	// Fence is the fencing token of the worker that wrote the event (0 for
	// events written before the service recorded it).
	Fence uint64
}

// ParseEvent decodes the body of a message on campaign.evt.… with the
// service's decoder (a CloudEvents 1.0 event with a numeric sequence).
func ParseEvent(data []byte) (Event, error) {
	ce, err := events.ParseEvent(data)
	if err != nil {
		return Event{}, fmt.Errorf("client: %w", err)
	}
	e := event.New(ce.SpecVersion)
	e.SetID(ce.ID)
	e.SetSource(ce.Source)
	e.SetType(ce.Type)
	e.SetSubject(ce.Subject)
	e.SetTime(ce.Time)
	if ce.DataContentType != "" {
		e.SetDataContentType(ce.DataContentType)
	}
	e.SetExtension(ExtTenantID, ce.TenantID)
	e.SetExtension(ExtCampaignID, ce.CampaignID)
	e.SetExtension(ExtSequence, ce.Sequence)
	if ce.CommandID != "" {
		e.SetExtension(ExtCommandID, ce.CommandID)
	}
	if ce.Traceparent != "" {
		e.SetExtension(ExtTraceparent, ce.Traceparent)
	}
	if ce.Fence != "" {
		e.SetExtension(ExtFence, ce.Fence)
	}
	if len(ce.Data) > 0 && !bytes.Equal(bytes.TrimSpace(ce.Data), []byte("null")) {
		e.DataEncoded = append([]byte(nil), ce.Data...)
	}
	if err := e.Validate(); err != nil {
		return Event{}, fmt.Errorf("client: event %q: %w", ce.ID, err)
	}
	return Event{Event: e, Seq: ce.Seq(), TenantID: ce.TenantID, CampaignID: ce.CampaignID,
		CommandID: ce.CommandID, Traceparent: ce.Traceparent, Fence: ce.FenceToken()}, nil
}

// UnmarshalJSON decodes a CloudEvent as ParseEvent does.
func (e *Event) UnmarshalJSON(b []byte) error {
	ev, err := ParseEvent(b)
	if err != nil {
		return err
	}
	*e = ev
	return nil
}

// State is the campaign's state right after e, and false for an event that
// does not change it (step events, command.rejected).
func (e Event) State() (State, bool) {
	switch e.Type() {
	case TypeCreated:
		return Pending, true
	case TypeStarted, TypeResumed, TypeRetried:
		return Running, true
	case TypePaused:
		return Paused, true
	case TypeCancelled:
		return Cancelled, true
	case TypeCompleted:
		return Completed, true
	case TypeFailed:
		return Failed, true
	}
	return "", false
}

// Payload decodes e's data into the type of its event type (*CreatedData
// for campaign.created, *StepSucceededData for campaign.step.succeeded, …;
// see the table in dataTypes) and returns it. A field that the type does not
// know is an error: the data is not what this package was built for.
func (e Event) Payload() (any, error) {
	newData, ok := dataTypes[e.Type()]
	if !ok {
		return nil, fmt.Errorf("client: event %s: unknown type %q", e.ID(), e.Type())
	}
	v := newData()
	if err := decodeData(e.Data(), v); err != nil {
		return nil, fmt.Errorf("client: event %s (%s): %w", e.ID(), e.Type(), err)
	}
	return v, nil
}

// decodeData decodes an event's data strictly: one JSON object, no unknown
// field.
func decodeData(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("data after the JSON object")
	}
	return nil
}

// dataTypes maps each event type to a new value of its data type.
var dataTypes = map[string]func() any{
	TypeCreated:         func() any { return new(CreatedData) },
	TypeStarted:         func() any { return new(StartedData) },
	TypeStepStarted:     func() any { return new(StepStartedData) },
	TypeStepSucceeded:   func() any { return new(StepSucceededData) },
	TypeStepRetrying:    func() any { return new(StepRetryingData) },
	TypeStepFailed:      func() any { return new(StepFailedData) },
	TypePaused:          func() any { return new(PausedData) },
	TypeResumed:         func() any { return new(ResumedData) },
	TypeCancelled:       func() any { return new(CancelledData) },
	TypeRetried:         func() any { return new(RetriedData) },
	TypeCompleted:       func() any { return new(CompletedData) },
	TypeFailed:          func() any { return new(FailedData) },
	TypeCommandRejected: func() any { return new(CommandRejectedData) },
}

// CreatedData is the data of campaign.created.
type CreatedData struct {
	Name     string   `json:"name"`
	Workflow string   `json:"workflow"`
	Steps    []string `json:"steps"`
	// Params are the create command's params (nil when it had none).
	Params json.RawMessage `json:"params,omitempty"`
	// StepDefinitions are the workflow's steps as resolved at creation,
	// in the order of Steps (absent from events of older versions).
	StepDefinitions []StepDefinition `json:"step_definitions,omitempty"`
}

// StepDefinition is one step of a campaign's workflow as campaign.created
// records it. Durations are Go duration text ("5s", "500ms").
type StepDefinition struct {
	Name    string           `json:"name"`
	URL     string           `json:"url"`
	Timeout string           `json:"timeout,omitempty"`
	Retry   *RetryDefinition `json:"retry,omitempty"`
}

// RetryDefinition is a step's retry of listed HTTP statuses.
type RetryDefinition struct {
	MaxRetries    int    `json:"max_retries,omitempty"`
	BackoffBase   string `json:"backoff_base,omitempty"`
	RetryOnStatus []int  `json:"retry_on_status,omitempty"`
}

// StartedData is the data of campaign.started.
type StartedData struct {
	From State `json:"from"`
}

// StepStartedData is the data of campaign.step.started.
type StepStartedData struct {
	Step    string `json:"step"`
	Run     int    `json:"run"`
	Attempt int    `json:"attempt"`
}

// StepSucceededData is the data of campaign.step.succeeded; Output is the
// step service's answer.
type StepSucceededData struct {
	Step       string          `json:"step"`
	Run        int             `json:"run"`
	Attempt    int             `json:"attempt"`
	DurationMS int64           `json:"duration_ms"`
	Output     json.RawMessage `json:"output"`
}

// Duration is how long the successful attempt took.
func (d StepSucceededData) Duration() time.Duration {
	return time.Duration(d.DurationMS) * time.Millisecond
}

// StepRetryingData is the data of campaign.step.retrying: Attempt failed
// with Error and the step is tried again after RetryInMS.
type StepRetryingData struct {
	Step      string `json:"step"`
	Run       int    `json:"run"`
	Attempt   int    `json:"attempt"`
	Error     string `json:"error"`
	RetryInMS int64  `json:"retry_in_ms"`
}

// StepFailedData is the data of campaign.step.failed (campaign.failed
// follows).
type StepFailedData struct {
	Step       string `json:"step"`
	Run        int    `json:"run"`
	Attempt    int    `json:"attempt"`
	DurationMS int64  `json:"duration_ms"`
	Error      string `json:"error"`
}

// PausedData is the data of campaign.paused: the state it left and the
// step that runs next on resume.
type PausedData struct {
	From State  `json:"from"`
	Step string `json:"step"`
}

// ResumedData is the data of campaign.resumed.
type ResumedData struct {
	From State  `json:"from"`
	Step string `json:"step"`
}

// CancelledData is the data of campaign.cancelled.
type CancelledData struct {
	From State  `json:"from"`
	Step string `json:"step"`
}

// RetriedData is the data of campaign.retried: the step re-run and its new
// run number.
type RetriedData struct {
	From State  `json:"from"`
	Step string `json:"step"`
	Run  int    `json:"run"`
}

// CompletedData is the data of campaign.completed.
type CompletedData struct {
	Steps int `json:"steps"`
}

// FailedData is the data of campaign.failed.
type FailedData struct {
	Step  string `json:"step"`
	Error string `json:"error"`
}

// CommandRejectedData is the data of campaign.command.rejected: the verb
// of the command, the campaign's state, and why.
type CommandRejectedData struct {
	Command string `json:"command"`
	State   State  `json:"state"`
	Reason  string `json:"reason"`
}
