package client

import (
	"crypto/rand"
	"fmt"
	"strings"

	"github.com/oklog/ulid/v2"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// Stream names (CONTRACT section 3).
const (
	// StreamCommands is the work-queue stream of commands (campaign.cmd.>).
	StreamCommands = "CAMPAIGN_COMMANDS"
	// StreamEvents is the stream of events, the campaigns' history (campaign.evt.>).
	StreamEvents = "CAMPAIGN_EVENTS"
	// StreamDLQ is the stream of dead-lettered commands (campaign.dlq.>).
	StreamDLQ = "CAMPAIGN_DLQ"
)

// Message headers.
const (
	// HeaderMsgID is the command id on a command, the event id on an event.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderTraceparent is the W3C trace context, passed from a command to
	// its events.
	HeaderTraceparent = "traceparent"
	// HeaderCommandID is the id of the command that caused an event (and,
	// on a dead letter, of the command dead-lettered).
	HeaderCommandID = "Command-Id"
	// HeaderTenantID and HeaderCampaignID are on every event.
	HeaderTenantID   = "Tenant-Id"
	HeaderCampaignID = "Campaign-Id"
	// HeaderReason, HeaderOriginalSubject and HeaderOriginalSequence are on
	// every dead letter.
	HeaderReason           = "Reason"
	HeaderOriginalSubject  = "Original-Subject"
	HeaderOriginalSequence = "Original-Sequence"
	// HeaderReplayedFrom is on a command sent again from a dead letter
	// (orchestrator dlq replay): CAMPAIGN_DLQ/<the dead letter's sequence>.
	HeaderReplayedFrom = "Replayed-From"
)

// TokenPattern is what a tenant or campaign token must match: no dots, no
// wildcards, 1 to 64 characters.
var TokenPattern = events.TokenRE.String()

// ValidToken reports whether s can be a tenant or campaign token, exactly as
// the service decides it.
func ValidToken(s string) bool { return events.ValidToken(s) }

// checkTokens returns an *InvalidError naming the first bad token.
func checkTokens(tenant, campaign string) error {
	if !events.ValidToken(tenant) {
		return invalidf("tenant %s must match %s", events.QuoteBounded(tenant), TokenPattern)
	}
	if !events.ValidToken(campaign) {
		return invalidf("campaign %s must match %s", events.QuoteBounded(campaign), TokenPattern)
	}
	return nil
}

// CommandSubject is the subject of a command:
// campaign.cmd.<tenant>.<campaign>.<verb>. It refuses a bad token and a verb
// that is not one of Verbs.
func CommandSubject(tenant, campaign string, verb Verb) (string, error) {
	if err := checkTokens(tenant, campaign); err != nil {
		return "", err
	}
	if !verb.valid() {
		return "", invalidf("verb %s is not one of %s", events.QuoteBounded(string(verb)), verbList())
	}
	return events.CommandSubject(tenant, campaign, fsm.Verb(verb)), nil
}

// TenantCommands is the subject filter of every command of one tenant,
// campaign.cmd.<tenant>.>: what a publisher confined to that tenant may be
// allowed to publish on.
func TenantCommands(tenant string) (string, error) {
	if !events.ValidToken(tenant) {
		return "", invalidf("tenant %s must match %s", events.QuoteBounded(tenant), TokenPattern)
	}
	return "campaign.cmd." + tenant + ".>", nil
}

// EventSubject is the subject of an event: campaign.evt.<tenant>.<campaign>.<t>
// where <t> is eventType (one of EventTypes) without its "campaign." prefix.
func EventSubject(tenant, campaign, eventType string) (string, error) {
	if err := checkTokens(tenant, campaign); err != nil {
		return "", err
	}
	if !knownEventType(eventType) {
		return "", invalidf("event type %s is not one of the service's", events.QuoteBounded(eventType))
	}
	return events.EventSubject(tenant, campaign, eventType), nil
}

// CampaignEvents is the subject filter of every event of one campaign, and
// only of that campaign: campaign.evt.<tenant>.<campaign>.>.
func CampaignEvents(tenant, campaign string) (string, error) {
	if err := checkTokens(tenant, campaign); err != nil {
		return "", err
	}
	return events.CampaignEvents(tenant, campaign), nil
}

// DLQSubject is the subject of a campaign's dead letters:
// campaign.dlq.<tenant>.<campaign>. (The service files a command whose
// subject had no usable token under the token "_unknown".)
func DLQSubject(tenant, campaign string) (string, error) {
	if err := checkTokens(tenant, campaign); err != nil {
		return "", err
	}
	return events.DLQSubject(tenant, campaign), nil
}

// EventID is the id of a campaign's event number seq (1, 2, …), in the
// CloudEvent and in its Nats-Msg-Id: <tenant>.<campaign>.<seq>.
func EventID(tenant, campaign string, seq uint64) (string, error) {
	if err := checkTokens(tenant, campaign); err != nil {
		return "", err
	}
	if seq == 0 {
		return "", invalidf("event sequence 0: sequences start at 1")
	}
	return events.EventID(tenant, campaign, seq), nil
}

// NewID returns a new command id: a ULID (26 characters, ordered by time)
// whose random part comes from crypto/rand, so that nobody can predict it
// and publish under it first (JetStream deduplicates ids across the whole
// command stream). The service's ingress makes its ids with it.
func NewID() string {
	return ulid.MustNew(ulid.Now(), rand.Reader).String()
}

// MaxIDBytes bounds a command id; an id must also be printable ASCII.
const MaxIDBytes = 256

func verbList() string {
	s := make([]string, len(Verbs))
	for i, v := range Verbs {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}

// errorf-style helper for *InvalidError.
func invalidf(format string, args ...any) error {
	return &InvalidError{Reason: fmt.Sprintf(format, args...)}
}
