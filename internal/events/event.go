package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// CloudEvents attributes fixed by the contract.
const (
	// SpecVersion is the CloudEvents version of every event.
	SpecVersion = "1.0"
	// Source is the CloudEvents source of every event.
	Source = "campaign-orchestrator"
	// DataContentType is the content type of every event's data.
	DataContentType = "application/json"
	// timeLayout is RFC 3339 with milliseconds.
	timeLayout = "2006-01-02T15:04:05.000Z07:00"
)

// ErrInvalidEvent is returned for an event that cannot be built or parsed.
var ErrInvalidEvent = errors.New("invalid event")

// CloudEvent is the JSON body of an event: CloudEvents 1.0 in structured mode
// with the extensions of CONTRACT section 4. Time is written in UTC with
// milliseconds.
type CloudEvent struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Subject         string    `json:"subject"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	TenantID        string    `json:"tenantid"`
	CampaignID      string    `json:"campaignid"`
	Sequence        string    `json:"sequence"`
	CommandID       string    `json:"commandid,omitempty"`
	// Fence is the writer's fencing token in decimal (CloudEvents
	// extension "fence"; text, as the CloudEvents Integer type stops at
	// 2^31-1): what a campaign rebuilt from its history raises its
	// fencing counter above. "" for events written before it existed.
	Fence       string          `json:"fence,omitempty"`
	Traceparent string          `json:"traceparent,omitempty"`
	Data        json.RawMessage `json:"data,omitempty"`
}

// cloudEventJSON is CloudEvent with the time as text.
type cloudEventJSON struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject"`
	Time            string          `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	TenantID        string          `json:"tenantid"`
	CampaignID      string          `json:"campaignid"`
	Sequence        string          `json:"sequence"`
	CommandID       string          `json:"commandid,omitempty"`
	Fence           string          `json:"fence,omitempty"`
	Traceparent     string          `json:"traceparent,omitempty"`
	Data            json.RawMessage `json:"data,omitempty"`
}

// MarshalJSON writes the event with its time in UTC, RFC 3339 with
// milliseconds ("2026-11-27T10:00:01.123Z").
func (e CloudEvent) MarshalJSON() ([]byte, error) {
	return json.Marshal(e.withTimeText())
}

// withTimeText is e converted field by field, time formatted.
func (e CloudEvent) withTimeText() cloudEventJSON {
	return cloudEventJSON{
		SpecVersion: e.SpecVersion, ID: e.ID, Source: e.Source, Type: e.Type, Subject: e.Subject,
		Time: e.Time.UTC().Format(timeLayout), DataContentType: e.DataContentType,
		TenantID: e.TenantID, CampaignID: e.CampaignID, Sequence: e.Sequence,
		CommandID: e.CommandID, Fence: e.Fence, Traceparent: e.Traceparent, Data: e.Data,
	}
}

// FenceToken returns the event's fence (0 when it has none or it is not a
// number).
func (e CloudEvent) FenceToken() uint64 {
	n, err := strconv.ParseUint(e.Fence, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// Seq returns the event's sequence number (0 when Sequence is not a number).
func (e CloudEvent) Seq() uint64 {
	n, err := strconv.ParseUint(e.Sequence, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// NewEventMsg builds the NATS message of a campaign's domain event: subject
// EventSubject(tenant, campaign, ev.Type), body the CloudEvent, headers
// Nats-Msg-Id = EventID, Campaign-Id, Tenant-Id, Command-Id, and traceparent
// when not "". It returns an error wrapping ErrInvalidEvent when a token, the
// sequence or the type cannot be used.
func NewEventMsg(tenant, campaign string, ev fsm.Event, traceparent string) (*nats.Msg, error) {
	switch {
	case !ValidToken(tenant) || !ValidToken(campaign):
		return nil, fmt.Errorf("event of %s/%s: bad tenant or campaign token: %w", tenant, campaign, ErrInvalidEvent)
	case ev.Seq == 0:
		return nil, fmt.Errorf("event %s of %s/%s: sequence 0: %w", ev.Type, tenant, campaign, ErrInvalidEvent)
	case !validEventType(ev.Type):
		return nil, fmt.Errorf("event of %s/%s: type %q is not campaign.<token>[.<token>…]: %w", tenant, campaign, ev.Type, ErrInvalidEvent)
	}
	var data json.RawMessage
	if ev.Data != nil {
		b, err := marshalRaw(ev.Data)
		if err != nil {
			return nil, fmt.Errorf("event %s of %s/%s: encode data: %w", ev.Type, tenant, campaign, err)
		}
		data = b
	}
	id := EventID(tenant, campaign, ev.Seq)
	body, err := marshalRaw(CloudEvent{
		SpecVersion:     SpecVersion,
		ID:              id,
		Source:          Source,
		Type:            ev.Type,
		Subject:         tenant + "/" + campaign,
		Time:            ev.Time,
		DataContentType: DataContentType,
		TenantID:        tenant,
		CampaignID:      campaign,
		Sequence:        FormatSequence(ev.Seq),
		CommandID:       ev.CommandID,
		Fence:           formatFence(ev.Fence),
		Traceparent:     traceparent,
		Data:            data,
	})
	if err != nil {
		return nil, fmt.Errorf("event %s: encode: %w", id, err)
	}
	if len(body) > MaxEventBytes {
		return nil, fmt.Errorf("event %s is %d bytes, more than %d: %w", id, len(body), MaxEventBytes, ErrEventTooLarge)
	}
	msg := nats.NewMsg(EventSubject(tenant, campaign, ev.Type))
	msg.Header.Set(jetstream.MsgIDHeader, id)
	msg.Header.Set(HdrCampaignID, campaign)
	msg.Header.Set(HdrTenantID, tenant)
	msg.Header.Set(HdrCommandID, ev.CommandID)
	if traceparent != "" {
		msg.Header.Set(HdrTraceparent, traceparent)
	}
	msg.Data = body
	return msg, nil
}

// formatFence is the fence extension's text of fence ("" for 0: none).
func formatFence(fence uint64) string {
	if fence == 0 {
		return ""
	}
	return strconv.FormatUint(fence, 10)
}

// MaxEventBytes bounds an event's body: CAMPAIGN_EVENTS and NATS take at most
// 1 MiB per message, headers included.
const MaxEventBytes = 1<<20 - 16<<10

// ErrEventTooLarge: an event (a step's output, usually) would not fit in a
// NATS message. Nothing can publish it; the caller must record something
// smaller (the step failing, say).
var ErrEventTooLarge = errors.New("event too large")

// marshalRaw encodes v as JSON without escaping <, > and & (a step's HTML
// output would grow up to six times and no longer fit in a message).
func marshalRaw(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// validEventType reports whether typ is "campaign." followed by dot-separated
// tokens that are legal in a subject (no wildcards, no spaces).
func validEventType(typ string) bool {
	rest, ok := strings.CutPrefix(typ, eventTypePrefix)
	if !ok || rest == "" {
		return false
	}
	for _, tok := range strings.Split(rest, ".") {
		if !ValidToken(tok) {
			return false
		}
	}
	return true
}

// ParseEvent decodes the body of an event message. It returns an error
// wrapping ErrInvalidEvent when the body is not a CloudEvents 1.0 event with
// a numeric sequence.
func ParseEvent(data []byte) (CloudEvent, error) {
	var e CloudEvent
	if err := json.Unmarshal(data, &e); err != nil {
		return CloudEvent{}, fmt.Errorf("parse event: %w: %w", ErrInvalidEvent, err)
	}
	if e.SpecVersion != SpecVersion {
		return CloudEvent{}, fmt.Errorf("parse event %q: specversion %q: %w", e.ID, e.SpecVersion, ErrInvalidEvent)
	}
	if e.Seq() == 0 {
		return CloudEvent{}, fmt.Errorf("parse event %q: sequence %q: %w", e.ID, e.Sequence, ErrInvalidEvent)
	}
	return e, nil
}
