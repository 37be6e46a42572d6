package events

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// MaxNameLength bounds a campaign's name, in characters, over NATS as over
// HTTP: the name is repeated in campaign.created and in the stored state.
const MaxNameLength = 256

// maxCommandIDLen bounds a command id: ids are kept in every campaign's
// ledger and repeated in headers and events (exported as MaxCommandIDBytes).
const maxCommandIDLen = 256

// CommandEnvelope is the JSON body of a message on a command subject
// (CONTRACT section 4).
type CommandEnvelope struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	TenantID   string          `json:"tenant_id"`
	CampaignID string          `json:"campaign_id"`
	IssuedAt   *time.Time      `json:"issued_at,omitempty"`
	Payload    json.RawMessage `json:"payload,omitempty"`
}

// InvalidCommand is why a command cannot be processed; such a command is never
// retried. Tenant and Campaign are the subject's tokens when they are valid
// ("" otherwise), Verb is the subject's last token as found (when it is no
// verb, made valid UTF-8 and cut to 64 bytes), ID is the command id when one
// was found and usable (at most MaxCommandIDBytes; "" for a longer one).
//
// From DecodeCommand, Reason is valid UTF-8 of at most MaxReasonBytes, and
// every value of the message it quotes is cut to MaxQuotedBytes (see
// QuoteBounded): a reason can always be recorded in an event, a Term and a
// DLQ copy.
type InvalidCommand struct {
	ID, Tenant, Campaign, Verb, Reason string
}

// Error implements error. It is bounded whatever the fields hold (an
// InvalidCommand built elsewhere included).
func (e *InvalidCommand) Error() string {
	id := e.ID
	if id == "" {
		id = "(no id)"
	}
	return fmt.Sprintf("invalid command %s (%s/%s %s): %s", bound(id, maxCommandIDLen),
		bound(orUnknown(e.Tenant), maxVerbBytes), bound(orUnknown(e.Campaign), maxVerbBytes), bound(orUnknown(e.Verb), maxVerbBytes),
		BoundReason(e.Reason))
}

func orUnknown(s string) string {
	if s == "" {
		return Unknown
	}
	return s
}

// Workflows resolves a workflow name for create commands.
type Workflows interface {
	// Get returns the workflow called name, and false when there is none.
	Get(name string) (fsm.Workflow, bool)
}

// DecodeCommand validates a message from CAMPAIGN_COMMANDS and returns the
// command it carries.
//
// The subject must be campaign.cmd.<tenant>.<campaign>.<verb> with valid
// tokens and a known verb; the id is the Nats-Msg-Id header, else the body's
// id (neither: invalid); the body is decoded strictly (an unknown field is
// invalid and named); its type, tenant_id and campaign_id must equal the
// subject's tokens. A create needs a payload with a name; its workflow
// (default "standard") must exist in wf, and the resolved definition is set in
// Command.Workflow. An advance needs an fsm.AdvancePayload. Other verbs take
// an optional JSON object payload that the state machine does not read.
//
// Any problem is returned as an *InvalidCommand (read it with errors.As).
func DecodeCommand(subject string, header nats.Header, data []byte, wf Workflows) (fsm.Command, error) {
	cs, reason := parseCommandSubject(subject)
	verb := cs.verb
	if !fsm.Verb(verb).Valid() {
		verb = bound(verb, maxVerbBytes)
	}
	inv := &InvalidCommand{ID: header.Get(jetstream.MsgIDHeader), Tenant: cs.tenant, Campaign: cs.campaign, Verb: verb}
	// fail sets the reason: every value of the message in it must be
	// quoted with QuoteBounded; BoundReason is the last safety net.
	fail := func(format string, args ...any) (fsm.Command, error) {
		inv.Reason = BoundReason(fmt.Sprintf(format, args...))
		return fsm.Command{}, inv
	}

	var env CommandEnvelope
	bodyErr := decodeStrict(data, &env)
	if inv.ID == "" && bodyErr == nil {
		inv.ID = env.ID
	}
	idTooLong := len(inv.ID) > maxCommandIDLen
	idNotASCII := !idTooLong && !printableASCII(inv.ID)
	if idTooLong || idNotASCII {
		// No usable id: nothing may repeat it (an event, the inbox, a
		// header would carry up to a megabyte; an id that is not printable
		// ASCII does not survive JSON unchanged, so the ledger would not
		// recognise its redelivery), and the DLQ copy is deduplicated by its
		// stream sequence instead.
		inv.ID = ""
	}
	switch {
	case reason != "":
		return fail("%s", reason)
	case bodyErr != nil:
		return fail("%s", describeJSONError(bodyErr, ""))
	case idTooLong:
		return fail("command id longer than %d bytes", maxCommandIDLen)
	case idNotASCII:
		return fail("command id must be printable ASCII")
	case inv.ID == "":
		return fail("missing command id (no Nats-Msg-Id header and no id in the body)")
	case env.Type != cs.verb:
		return fail("type %s does not match the subject's verb %s", QuoteBounded(env.Type), QuoteBounded(cs.verb))
	case env.TenantID != cs.tenant:
		return fail("tenant_id %s does not match the subject's tenant %s", QuoteBounded(env.TenantID), QuoteBounded(cs.tenant))
	case env.CampaignID != cs.campaign:
		return fail("campaign_id %s does not match the subject's campaign %s", QuoteBounded(env.CampaignID), QuoteBounded(cs.campaign))
	}

	cmd := fsm.Command{ID: inv.ID, Verb: fsm.Verb(cs.verb), Tenant: cs.tenant, Campaign: cs.campaign}
	payload := env.Payload
	if isNull(payload) {
		payload = nil
	}
	switch cmd.Verb {
	case fsm.Create:
		if payload == nil {
			return fail("create: missing payload (name is required)")
		}
		var p fsm.CreatePayload
		if err := decodeStrict(payload, &p); err != nil {
			return fail("create: %s", describeJSONError(err, " in payload"))
		}
		w, prob := CheckCreate(&p, wf)
		if prob != nil {
			return fail("%s", prob.Reason())
		}
		cmd.Create, cmd.Workflow = &p, &w
	case fsm.Advance:
		if payload == nil {
			return fail("advance: missing payload (step, run, version)")
		}
		var p fsm.AdvancePayload
		if err := decodeStrict(payload, &p); err != nil {
			return fail("advance: %s", describeJSONError(err, " in payload"))
		}
		if p.Version == 0 || p.Step < 0 || p.Run < 0 {
			return fail("advance: payload needs version > 0, step >= 0 and run >= 0")
		}
		cmd.Advance = &p
	default:
		// The payload is optional and free (a cancel may say why); it
		// must still be a JSON object.
		var obj map[string]json.RawMessage
		if payload != nil && json.Unmarshal(payload, &obj) != nil {
			return fail("%s: payload must be a JSON object", cs.verb)
		}
	}
	return cmd, nil
}

// CreateProblem is what makes a create invalid: the field of its payload
// (name, workflow or params) and what is wrong with it.
type CreateProblem struct {
	Field  string
	Detail string // e.g. "is required"; for the workflow, "unknown workflow \"x\""
}

// Reason is the problem as a dead letter's reason says it.
func (p *CreateProblem) Reason() string {
	if p.Field == "workflow" {
		return p.Detail
	}
	return "create: payload " + p.Field + " " + p.Detail
}

// CheckCreate is the validation of a create, the same over NATS
// (DecodeCommand) and HTTP (the ingress): a name that is not blank and has
// at most MaxNameLength characters, params that are a JSON object (or none:
// absent or null), a workflow that wf knows (fsm.DefaultWorkflow when p
// names none). It sets p's defaults (the workflow's name, nil params for
// null) and returns the workflow, or the first problem found.
func CheckCreate(p *fsm.CreatePayload, wf Workflows) (fsm.Workflow, *CreateProblem) {
	if strings.TrimSpace(p.Name) == "" {
		return fsm.Workflow{}, &CreateProblem{"name", "is required"}
	}
	if n := utf8.RuneCountInString(p.Name); n > MaxNameLength {
		return fsm.Workflow{}, &CreateProblem{"name", fmt.Sprintf("is %d characters, at most %d", n, MaxNameLength)}
	}
	if isNull(p.Params) {
		p.Params = nil
	}
	if len(p.Params) > 0 && firstByte(p.Params) != '{' {
		return fsm.Workflow{}, &CreateProblem{"params", "must be a JSON object"}
	}
	if p.Workflow == "" {
		p.Workflow = fsm.DefaultWorkflow
	}
	var w fsm.Workflow
	ok := false
	if wf != nil {
		w, ok = wf.Get(p.Workflow)
	}
	if !ok {
		return fsm.Workflow{}, &CreateProblem{"workflow", "unknown workflow " + QuoteBounded(p.Workflow)}
	}
	if w.Name == "" {
		w.Name = p.Workflow
	}
	return w, nil
}

// printableASCII reports whether s holds only printable ASCII (0x20-0x7e).
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// errNotObject: a body or payload that is not a JSON object.
var errNotObject = errors.New("not a JSON object")

// decodeStrict decodes one JSON object from data into v, refusing unknown
// fields and trailing data.
func decodeStrict(data []byte, v any) error {
	if firstByte(data) != '{' {
		if len(bytes.TrimSpace(data)) == 0 {
			return fmt.Errorf("empty body: %w", errNotObject)
		}
		return errNotObject
	}
	return decodeSpec(data, v)
}

// describeJSONError turns a decodeStrict error into a reason; where says
// where the problem is (e.g. " in payload"). encoding/json quotes what it
// read (an unknown field's name, a number's digits, a time's text) without
// bound: what it quotes is bounded here, and the whole text besides.
func describeJSONError(err error, where string) string {
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		if name, uerr := strconv.Unquote(f); uerr == nil {
			f = QuoteBounded(name)
		}
		return "unknown field " + bound(f, MaxQuotedBytes) + where
	}
	if errors.Is(err, errNotObject) {
		return "bad JSON" + where + ": " + msg
	}
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		// Value is "number <its digits>" for a number: keep the field.
		into := "Go value"
		if typeErr.Struct != "" || typeErr.Field != "" {
			into = "Go struct field " + bound(typeErr.Struct+"."+typeErr.Field, MaxQuotedBytes)
		}
		msg = fmt.Sprintf("cannot unmarshal %s into %s of type %s", bound(typeErr.Value, MaxQuotedBytes), into, typeErr.Type)
	}
	var timeErr *time.ParseError
	if errors.As(err, &timeErr) {
		what := "time"
		if where == "" {
			what = "issued_at" // the envelope's only time
		}
		msg = fmt.Sprintf("%s %s is not an RFC 3339 time", what, QuoteBounded(timeErr.Value))
	}
	return "bad JSON" + where + ": " + bound(strings.TrimPrefix(msg, "json: "), maxJSONErrorBytes)
}

func firstByte(b []byte) byte {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

func isNull(b json.RawMessage) bool {
	return string(bytes.TrimSpace(b)) == "null"
}

// NewCommandMsg builds the message of a command, as the ingress and the
// worker publish it: subject CommandSubject(env.TenantID, env.CampaignID,
// env.Type), header Nats-Msg-Id = env.ID (when not ""), traceparent when not
// "", body the JSON envelope.
//
// env.Payload must be valid JSON: an invalid one is kept verbatim, so that the
// command is dead-lettered as bad JSON rather than silently changed.
func NewCommandMsg(env CommandEnvelope, traceparent string) *nats.Msg {
	msg := nats.NewMsg(CommandSubject(env.TenantID, env.CampaignID, fsm.Verb(env.Type)))
	if env.ID != "" {
		msg.Header.Set(jetstream.MsgIDHeader, env.ID)
	}
	if traceparent != "" {
		msg.Header.Set(HdrTraceparent, traceparent)
	}
	body, err := json.Marshal(env)
	if err != nil {
		// Only an invalid Payload makes Marshal fail: splice it in as is.
		raw := env.Payload
		env.Payload = nil
		body, _ = json.Marshal(env) // cannot fail without a payload
		body = append(body[:len(body)-1], `,"payload":`...)
		body = append(append(body, raw...), '}')
	}
	msg.Data = body
	return msg
}

// AdvanceID is the command id of the advance scheduled for a campaign's
// version: <tenant>.<campaign>.advance.<version>.<nonce>. It is unique per
// schedule, so an advance published again after a pause is not taken for the
// old one; the nonce (random, kept with the message in the outbox, so a
// re-publish reuses it) keeps anyone who may publish on another tenant's
// subjects from guessing it and having JetStream's stream-wide
// deduplication drop the real advance.
func AdvanceID(tenant, campaign string, version uint64, nonce string) string {
	return tenant + "." + campaign + ".advance." + strconv.FormatUint(version, 10) + "." + nonce
}

// newNonce returns 16 random hex characters.
func newNonce() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// AdvanceMsg builds the internal advance command for campaign c: its payload
// holds c.Step, the run of the current step (1 if it never ran) and
// c.AdvanceVersion; its id is AdvanceID(c.Tenant, c.ID, c.AdvanceVersion,
// <a new nonce>). Its body has no issued_at: publishing the same message
// again is deduplicated by JetStream.
func AdvanceMsg(c fsm.Campaign, traceparent string) *nats.Msg {
	_, m := Advance(c, traceparent)
	return m
}

// Advance is AdvanceMsg that also returns the command as DecodeCommand
// would decode the message, for a holder that applies it itself.
func Advance(c fsm.Campaign, traceparent string) (fsm.Command, *nats.Msg) {
	name := ""
	if s, ok := c.CurrentStep(); ok {
		name = s.Name
	}
	run := c.Run(name)
	if run == 0 {
		run = 1
	}
	p := fsm.AdvancePayload{Step: c.Step, Run: run, Version: c.AdvanceVersion}
	payload, _ := json.Marshal(p) // plain struct: cannot fail
	id := AdvanceID(c.Tenant, c.ID, c.AdvanceVersion, newNonce())
	cmd := fsm.Command{ID: id, Verb: fsm.Advance, Tenant: c.Tenant, Campaign: c.ID, Advance: &p}
	return cmd, NewCommandMsg(CommandEnvelope{
		ID:         id,
		Type:       string(fsm.Advance),
		TenantID:   c.Tenant,
		CampaignID: c.ID,
		Payload:    payload,
	}, traceparent)
}
