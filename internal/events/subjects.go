package events

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// Stream and consumer names (CONTRACT section 3).
const (
	// StreamCommands is the work-queue stream of commands (campaign.cmd.>).
	StreamCommands = "CAMPAIGN_COMMANDS"
	// StreamEvents is the stream of events, the history and audit log (campaign.evt.>).
	StreamEvents = "CAMPAIGN_EVENTS"
	// StreamDLQ is the stream of dead-lettered commands (campaign.dlq.>).
	StreamDLQ = "CAMPAIGN_DLQ"
	// ConsumerName is the durable pull consumer on StreamCommands shared by every worker.
	ConsumerName = "orchestrator"
)

// Message headers (CONTRACT section 4).
const (
	// HdrCampaignID carries the campaign's id on every event.
	HdrCampaignID = "Campaign-Id"
	// HdrTenantID carries the tenant on every event.
	HdrTenantID = "Tenant-Id"
	// HdrCommandID carries the id of the command that caused an event.
	HdrCommandID = "Command-Id"
	// HdrTraceparent is the W3C trace context header, passed on when present.
	HdrTraceparent = "traceparent"
	// HdrReason says why a command was dead-lettered; on DLQ copies only.
	HdrReason = "Reason"
	// HdrOriginalSubject is the subject a dead-lettered command was published on.
	HdrOriginalSubject = "Original-Subject"
	// HdrOriginalSequence is the CAMPAIGN_COMMANDS stream sequence of a
	// dead-lettered command, when known.
	HdrOriginalSequence = "Original-Sequence"
)

// Unknown replaces a token of a DLQ subject that could not be taken from the
// command's subject.
const Unknown = "_unknown"

// Subject prefixes.
const (
	cmdPrefix = "campaign.cmd."
	evtPrefix = "campaign.evt."
	dlqPrefix = "campaign.dlq."
	// eventTypePrefix is the part of an event type not repeated in its subject.
	eventTypePrefix = "campaign."
)

// IsEventSubject reports whether subject is on campaign.evt.>.
func IsEventSubject(subject string) bool { return strings.HasPrefix(subject, evtPrefix) }

// TokenRE is what a tenant or campaign token must match: no dots, no
// wildcards, no spaces, 1 to 64 characters.
var TokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ParseEventSubject returns the tenant and campaign of an event subject
// (campaign.evt.<tenant>.<campaign>.<type>), and false for any other.
func ParseEventSubject(subject string) (tenant, campaign string, ok bool) {
	rest, ok := strings.CutPrefix(subject, evtPrefix)
	if !ok {
		return "", "", false
	}
	parts := strings.SplitN(rest, ".", 3)
	if len(parts) != 3 || !ValidToken(parts[0]) || !ValidToken(parts[1]) || parts[2] == "" {
		return "", "", false
	}
	return parts[0], parts[1], true
}

// ValidToken reports whether s can be a tenant or campaign token (TokenRE).
func ValidToken(s string) bool { return TokenRE.MatchString(s) }

// CommandSubject is the subject of a command: campaign.cmd.<tenant>.<campaign>.<verb>.
// It does not validate its arguments: check them with ValidToken and Verb.Valid.
func CommandSubject(tenant, campaign string, verb fsm.Verb) string {
	return cmdPrefix + tenant + "." + campaign + "." + string(verb)
}

// CampaignCommands is the filter matching every command of one campaign:
// campaign.cmd.<tenant>.<campaign>.*.
func CampaignCommands(tenant, campaign string) string {
	return cmdPrefix + tenant + "." + campaign + ".*"
}

// EventSubject is the subject of an event: campaign.evt.<tenant>.<campaign>.<type>
// where <type> is eventType without its "campaign." prefix (and may hold dots).
func EventSubject(tenant, campaign, eventType string) string {
	return evtPrefix + tenant + "." + campaign + "." + strings.TrimPrefix(eventType, eventTypePrefix)
}

// CampaignEvents is the filter matching every event of one campaign, and only
// of that campaign: campaign.evt.<tenant>.<campaign>.>.
func CampaignEvents(tenant, campaign string) string {
	return evtPrefix + tenant + "." + campaign + ".>"
}

// DLQSubject is the subject of a dead-lettered command:
// campaign.dlq.<tenant>.<campaign>, each token replaced by Unknown when it is
// not a ValidToken.
func DLQSubject(tenant, campaign string) string {
	if !ValidToken(tenant) {
		tenant = Unknown
	}
	if !ValidToken(campaign) {
		campaign = Unknown
	}
	return dlqPrefix + tenant + "." + campaign
}

// EventID is the id of a campaign's event number seq, both in the CloudEvent
// and in Nats-Msg-Id: <tenant>.<campaign>.<seq>, seq unpadded.
func EventID(tenant, campaign string, seq uint64) string {
	return tenant + "." + campaign + "." + strconv.FormatUint(seq, 10)
}

// FormatSequence formats an event sequence for the CloudEvents sequence
// extension: decimal, zero-padded to 20 digits, so that it orders
// lexicographically.
func FormatSequence(seq uint64) string { return fmt.Sprintf("%020d", seq) }

// parseEventID returns the sequence of an EventID of the given campaign.
func parseEventID(tenant, campaign, id string) (uint64, bool) {
	prefix := tenant + "." + campaign + "."
	if !strings.HasPrefix(id, prefix) {
		return 0, false
	}
	n, err := strconv.ParseUint(id[len(prefix):], 10, 64)
	if err != nil || n == 0 {
		return 0, false
	}
	return n, true
}

// commandSubject is a command subject split into its tokens.
type commandSubject struct {
	tenant, campaign, verb string
}

// parseCommandSubject splits campaign.cmd.<tenant>.<campaign>.<verb>. It
// returns the tokens it could find (tenant and campaign only when valid) and
// a reason when the subject is unusable; the reason quotes the subject's
// tokens with QuoteBounded.
func parseCommandSubject(subject string) (commandSubject, string) {
	var cs commandSubject
	if !strings.HasPrefix(subject, cmdPrefix) {
		return cs, fmt.Sprintf("subject %s is not a command subject (campaign.cmd.<tenant>.<campaign>.<verb>)", QuoteBounded(subject))
	}
	toks := strings.SplitN(subject[len(cmdPrefix):], ".", 4)
	if len(toks) != 3 {
		return cs, fmt.Sprintf("subject %s is not a command subject (campaign.cmd.<tenant>.<campaign>.<verb>)", QuoteBounded(subject))
	}
	var bad []string
	if ValidToken(toks[0]) {
		cs.tenant = toks[0]
	} else {
		bad = append(bad, "invalid tenant token "+QuoteBounded(toks[0]))
	}
	if ValidToken(toks[1]) {
		cs.campaign = toks[1]
	} else {
		bad = append(bad, "invalid campaign token "+QuoteBounded(toks[1]))
	}
	cs.verb = toks[2]
	if len(bad) > 0 {
		return cs, strings.Join(bad, ", ") + " (want " + TokenRE.String() + ")"
	}
	if !fsm.Verb(cs.verb).Valid() {
		return cs, "unknown verb " + QuoteBounded(cs.verb)
	}
	return cs, ""
}
