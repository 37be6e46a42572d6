package events

import (
	"encoding/json"

	"github.com/nats-io/nats.go"
)

// InboxItem is what a campaign's inbox keeps of a command: enough to decode
// it again (DecodeCommand of Msg), to trace it and to reject it. Its JSON
// encoding (EncodeInbox) is the inbox's format; the store keeps it opaque.
type InboxItem struct {
	Subject     string `json:"subject"`
	ID          string `json:"id"`
	Body        []byte `json:"body"`
	Traceparent string `json:"traceparent,omitempty"`
	// Invalid holds the reason when the command cannot be processed: it is
	// parked only to emit campaign.command.rejected on an existing
	// campaign.
	Invalid string `json:"invalid,omitempty"`
	Verb    string `json:"verb,omitempty"`
}

// Header is the item's command headers: Nats-Msg-Id and traceparent.
func (it InboxItem) Header() nats.Header {
	h := nats.Header{}
	h.Set(nats.MsgIdHdr, it.ID)
	if it.Traceparent != "" {
		h.Set(HdrTraceparent, it.Traceparent)
	}
	return h
}

// Msg is the item as the command message it came from.
func (it InboxItem) Msg() *nats.Msg {
	return &nats.Msg{Subject: it.Subject, Header: it.Header(), Data: it.Body}
}

// EncodeInbox encodes it as the inbox keeps it.
func EncodeInbox(it InboxItem) ([]byte, error) { return json.Marshal(it) }

// DecodeInbox decodes what EncodeInbox made.
func DecodeInbox(data []byte) (InboxItem, error) {
	var it InboxItem
	err := json.Unmarshal(data, &it)
	return it, err
}
