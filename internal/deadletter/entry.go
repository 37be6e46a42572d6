package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

// ErrNotFound: CAMPAIGN_DLQ holds no message with that sequence.
var ErrNotFound = errors.New("dead letter not found")

// Entry is one dead letter: a message of CAMPAIGN_DLQ with what its headers
// say about the original command.
type Entry struct {
	// Seq is the entry's stream sequence in CAMPAIGN_DLQ.
	Seq uint64 `json:"seq"`
	// Time is when CAMPAIGN_DLQ stored the entry.
	Time time.Time `json:"time"`
	// Subject is the entry's subject, campaign.dlq.<tenant>.<campaign>.
	Subject string `json:"subject"`
	// OriginalSubject is the command subject the command was published on
	// (header Original-Subject).
	OriginalSubject string `json:"original_subject"`
	// OriginalSeq is the command's CAMPAIGN_COMMANDS stream sequence
	// (header Original-Sequence; 0 when unknown).
	OriginalSeq uint64 `json:"original_seq,omitempty"`
	// CommandID is the command's id ("" when the command had none, or none
	// of at most events.MaxCommandIDBytes): header Command-Id, else the
	// entry's Nats-Msg-Id "dlq.id.<tenant>.<campaign>.<id>" (or, from older
	// releases, "dlq.<id>"),
	// else the body's id.
	CommandID string `json:"command_id,omitempty"`
	// Reason says why the command was dead-lettered (header Reason).
	Reason string `json:"reason"`
	// Header holds every header of the entry; Data its body, the command's.
	Header nats.Header `json:"-"`
	Data   []byte      `json:"-"`
}

// Prefixes of the Nats-Msg-Id of DLQ copies; only dlqIDPrefix is followed by
// the command id.
const (
	seqIDPrefix        = "dlq.seq."        // events.DeadLetter, command without id
	maxDeliverIDPrefix = "dlq.maxdeliver." // the Reaper
	dlqIDPrefix        = "dlq."            // before events.DLQIDPrefix: "dlq.<command id>"
)

// newEntry reads a CAMPAIGN_DLQ message.
func newEntry(raw *jetstream.RawStreamMsg) Entry {
	h := raw.Header
	if h == nil {
		h = nats.Header{}
	}
	e := Entry{
		Seq: raw.Sequence, Time: raw.Time, Subject: raw.Subject,
		OriginalSubject: h.Get(events.HdrOriginalSubject),
		Reason:          h.Get(events.HdrReason),
		Header:          h, Data: raw.Data,
	}
	e.OriginalSeq, _ = strconv.ParseUint(h.Get(events.HdrOriginalSequence), 10, 64)
	e.CommandID = commandID(h, raw.Data)
	return e
}

// commandID finds the command id of a dead letter (see Entry.CommandID). An
// id longer than events.MaxCommandIDBytes is no command id: it is ignored.
func commandID(h nats.Header, data []byte) string {
	usable := func(id string) bool { return id != "" && len(id) <= events.MaxCommandIDBytes }
	if id := h.Get(events.HdrCommandID); usable(id) {
		return id
	}
	msgID := h.Get(jetstream.MsgIDHeader)
	if rest, ok := strings.CutPrefix(msgID, events.DLQIDPrefix); ok {
		if parts := strings.SplitN(rest, ".", 3); len(parts) == 3 && usable(parts[2]) {
			return parts[2] // dlq.id.<tenant>.<campaign>.<id>
		}
	}
	if strings.HasPrefix(msgID, dlqIDPrefix) && !strings.HasPrefix(msgID, seqIDPrefix) && !strings.HasPrefix(msgID, maxDeliverIDPrefix) {
		if id := msgID[len(dlqIDPrefix):]; usable(id) {
			return id
		}
	}
	var body struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(data, &body) == nil && usable(body.ID) {
		return body.ID
	}
	return ""
}

// List returns every entry of CAMPAIGN_DLQ in stream order. It walks the
// stream with one (direct) get per entry, so it reads what is stored when it
// runs and never consumes anything.
func List(ctx context.Context, js jetstream.JetStream) ([]Entry, error) {
	stream, err := js.Stream(ctx, events.StreamDLQ)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: stream %s: %w", events.StreamDLQ, err)
	}
	var out []Entry
	for seq := uint64(1); ; {
		raw, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list dead letters from %s sequence %d: %w", events.StreamDLQ, seq, err)
		}
		out = append(out, newEntry(raw))
		seq = raw.Sequence + 1
	}
}

// Get returns the entry of CAMPAIGN_DLQ with stream sequence seq; an error
// wrapping ErrNotFound when there is none.
func Get(ctx context.Context, js jetstream.JetStream, seq uint64) (Entry, error) {
	stream, err := js.Stream(ctx, events.StreamDLQ)
	if err != nil {
		return Entry{}, fmt.Errorf("dead letter %d: stream %s: %w", seq, events.StreamDLQ, err)
	}
	return get(ctx, stream, seq)
}

func get(ctx context.Context, dlq jetstream.Stream, seq uint64) (Entry, error) {
	if seq == 0 {
		return Entry{}, fmt.Errorf("%w: no sequence 0 in %s", ErrNotFound, events.StreamDLQ)
	}
	raw, err := dlq.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Entry{}, fmt.Errorf("%w: no sequence %d in %s", ErrNotFound, seq, events.StreamDLQ)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("dead letter %d: %w", seq, err)
	}
	return newEntry(raw), nil
}
