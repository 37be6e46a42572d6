package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// Verb is a command's type, the last token of its subject.
type Verb string

// The verbs anyone may publish (the service also publishes "advance" for
// itself; this package does not).
const (
	VerbCreate Verb = "create"
	VerbStart  Verb = "start"
	VerbPause  Verb = "pause"
	VerbResume Verb = "resume"
	VerbCancel Verb = "cancel"
	VerbRetry  Verb = "retry"
)

// Verbs are the verbs of Command values, in lifecycle order.
var Verbs = []Verb{VerbCreate, VerbStart, VerbPause, VerbResume, VerbCancel, VerbRetry}

func (v Verb) valid() bool {
	for _, x := range Verbs {
		if v == x {
			return true
		}
	}
	return false
}

// DefaultWorkflow is the workflow of a Create that names none.
const DefaultWorkflow = "standard"

// MaxNameLength bounds a campaign's name, in characters.
const MaxNameLength = 256

// Command is one of Create, Start, Pause, Resume, Cancel and Retry.
type Command interface {
	// Verb is the command's verb.
	Verb() Verb
	// payload is the command's payload JSON (nil: none).
	payload() (json.RawMessage, error)
}

// Create creates a campaign (state pending), and with Start also starts it
// in the same command (events campaign.created then campaign.started). A
// second Create of an existing campaign is rejected.
type Create struct {
	// Name is required: 1 to MaxNameLength characters, not only spaces.
	Name string `json:"name"`
	// Workflow names a workflow of the service's workflows file ("":
	// DefaultWorkflow).
	Workflow string `json:"workflow,omitempty"`
	// Params is passed to every step: anything that encodes to a JSON
	// object (a map, a struct), or nil.
	Params any `json:"params,omitempty"`
	// Start starts the campaign once created.
	Start bool `json:"start,omitempty"`
}

// Start starts a pending campaign: it runs its first step.
type Start struct{}

// Pause pauses a running campaign: the step in flight finishes, no further
// step starts.
type Pause struct{}

// Resume resumes a paused campaign with its next step.
type Resume struct{}

// Cancel ends a pending, running or paused campaign (state cancelled).
type Cancel struct{}

// Retry re-runs the failed step of a failed campaign.
type Retry struct{}

// Verb implements Command.
func (Create) Verb() Verb { return VerbCreate }

// Verb implements Command.
func (Start) Verb() Verb { return VerbStart }

// Verb implements Command.
func (Pause) Verb() Verb { return VerbPause }

// Verb implements Command.
func (Resume) Verb() Verb { return VerbResume }

// Verb implements Command.
func (Cancel) Verb() Verb { return VerbCancel }

// Verb implements Command.
func (Retry) Verb() Verb { return VerbRetry }

func (c Create) payload() (json.RawMessage, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, invalidf("create: encode payload: %v", err)
	}
	return b, nil
}

func (Start) payload() (json.RawMessage, error)  { return nil, nil }
func (Pause) payload() (json.RawMessage, error)  { return nil, nil }
func (Resume) payload() (json.RawMessage, error) { return nil, nil }
func (Cancel) payload() (json.RawMessage, error) { return nil, nil }
func (Retry) payload() (json.RawMessage, error)  { return nil, nil }

// ErrInvalid is what every *InvalidError matches with errors.Is.
var ErrInvalid = errors.New("invalid command")

// InvalidError is a command the service would refuse (and dead-letter): a
// bad token, id, name or params. Reason says which, as the service would.
type InvalidError struct {
	Reason string
}

// Error implements error.
func (e *InvalidError) Error() string { return "client: invalid command: " + e.Reason }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

// PublishOption is an option of Publish and NewMessage (and, where it
// says so, of HTTPClient.Publish).
type PublishOption func(*publishOptions)

type publishOptions struct {
	id, idemKey, traceparent string
	idSet, idemSet           bool
	issuedAt                 *time.Time
	noIssuedAt               bool
}

// WithID sets the command id (Nats-Msg-Id) instead of a new ULID: at most
// MaxIDBytes of printable ASCII, unique across every tenant (JetStream
// deduplicates ids across the whole command stream). Publishing again with
// the same id, after a timeout say, applies the command once. NATS only:
// over HTTP use WithIdempotencyKey (the ingress derives the id from it).
func WithID(id string) PublishOption {
	return func(o *publishOptions) { o.id, o.idSet = id, true }
}

// WithIdempotencyKey sends an Idempotency-Key (1 to 255 printable ASCII
// characters): the ingress derives the command id from it and the tenant,
// and answers a repeat with the first answer (Receipt.Replayed). HTTP only:
// over NATS use WithID.
func WithIdempotencyKey(key string) PublishOption {
	return func(o *publishOptions) { o.idemKey, o.idemSet = key, true }
}

// WithTraceparent sets the command's W3C traceparent; the service passes it
// on to the command's events.
func WithTraceparent(tp string) PublishOption {
	return func(o *publishOptions) { o.traceparent = tp }
}

// WithIssuedAt sets the command's issued_at (default: now); the zero time
// leaves it out. NATS only.
func WithIssuedAt(t time.Time) PublishOption {
	return func(o *publishOptions) {
		if t.IsZero() {
			o.issuedAt, o.noIssuedAt = nil, true
			return
		}
		u := t.UTC()
		o.issuedAt, o.noIssuedAt = &u, false
	}
}

func collect(opts []PublishOption) publishOptions {
	var o publishOptions
	for _, f := range opts {
		if f != nil {
			f(&o)
		}
	}
	return o
}

// anyWorkflow resolves every workflow name: which workflows exist is the
// service's to say (an unknown one is rejected when the command is applied).
type anyWorkflow struct{}

func (anyWorkflow) Get(name string) (fsm.Workflow, bool) { return fsm.Workflow{Name: name}, true }

// NewMessage builds the NATS message of cmd for a campaign, as Publish sends
// it: subject campaign.cmd.<tenant>.<campaign>.<verb>, header Nats-Msg-Id
// (the command id) and traceparent (when set), body the command envelope
// {"id","type","tenant_id","campaign_id","issued_at","payload"}. It checks
// the message with the service's own decoder and returns an *InvalidError
// for what the service would refuse. Use it to publish by other means (a
// core NATS publish, a request); WithIdempotencyKey is refused.
func NewMessage(tenant, campaign string, cmd Command, opts ...PublishOption) (*nats.Msg, error) {
	o := collect(opts)
	if o.idemSet {
		return nil, invalidf("WithIdempotencyKey is for HTTP: over NATS the command id is the message id (WithID)")
	}
	return newMessage(tenant, campaign, cmd, o)
}

func newMessage(tenant, campaign string, cmd Command, o publishOptions) (*nats.Msg, error) {
	if cmd == nil {
		return nil, invalidf("no command")
	}
	if err := checkTokens(tenant, campaign); err != nil {
		return nil, err
	}
	verb := cmd.Verb()
	if !verb.valid() {
		return nil, invalidf("verb %s is not one of %s", events.QuoteBounded(string(verb)), verbList())
	}
	id := o.id
	if !o.idSet {
		id = NewID()
	} else if id == "" {
		return nil, invalidf("WithID: the command id is empty")
	}
	payload, err := cmd.payload()
	if err != nil {
		return nil, err
	}
	issued := o.issuedAt
	if issued == nil && !o.noIssuedAt {
		now := time.Now().UTC()
		issued = &now
	}
	msg := events.NewCommandMsg(events.CommandEnvelope{
		ID: id, Type: string(verb), TenantID: tenant, CampaignID: campaign,
		IssuedAt: issued, Payload: payload,
	}, o.traceparent)
	// The service's decoder is the validation: what it refuses would be
	// dead-lettered.
	if _, err := events.DecodeCommand(msg.Subject, msg.Header, msg.Data, anyWorkflow{}); err != nil {
		var inv *events.InvalidCommand
		if errors.As(err, &inv) {
			return nil, &InvalidError{Reason: inv.Reason}
		}
		return nil, fmt.Errorf("client: check command: %w", err)
	}
	return msg, nil
}
