package events

import (
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
)

// NewDeadLetterMsg builds the CAMPAIGN_DLQ copy of a command that cannot be
// processed: subject DLQSubject(inv.Tenant, inv.Campaign), the original body
// and headers (except the reserved Nats-* ones), plus Reason (inv.Reason on
// one line), Original-Subject, Original-Sequence (streamSeq, when not 0) and
// Command-Id (inv.ID, when it is a usable command id), so that the command
// can be replayed with its id. It sets no Nats-Msg-Id: the publisher chooses
// the one that deduplicates its copies (DeadLetter, or the MAX_DELIVERIES
// handler of internal/deadletter).
func NewDeadLetterMsg(original *nats.Msg, inv *InvalidCommand, streamSeq uint64) *nats.Msg {
	m := nats.NewMsg(DLQSubject(inv.Tenant, inv.Campaign))
	for k, v := range original.Header {
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			continue // Nats-Msg-Id, Nats-Expected-*, stream metadata…: not for the copy
		}
		m.Header[k] = append([]string(nil), v...)
	}
	m.Header.Set(HdrReason, oneLine(inv.Reason, maxReasonLen))
	m.Header.Set(HdrOriginalSubject, original.Subject)
	if streamSeq > 0 {
		m.Header.Set(HdrOriginalSequence, strconv.FormatUint(streamSeq, 10))
	} else {
		m.Header.Del(HdrOriginalSequence)
	}
	if inv.ID != "" && len(inv.ID) <= maxCommandIDLen && !strings.ContainsAny(inv.ID, "\r\n") {
		m.Header.Set(HdrCommandID, inv.ID)
	} else {
		m.Header.Del(HdrCommandID)
	}
	m.Data = original.Data
	return m
}
