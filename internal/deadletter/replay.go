package deadletter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

// ErrNotReplayable: the dead letter cannot be sent back as the command it
// was: it has no original subject or no command id (replaying it would make
// a new command, applied again), or it holds only part of the command (its
// body or headers were cut to fit in CAMPAIGN_DLQ).
var ErrNotReplayable = errors.New("dead letter not replayable")

// HdrReplayedFrom is set on a replayed command: "CAMPAIGN_DLQ/<seq>", the
// dead letter it came from. It is informative only (a DLQ copy of the
// command keeps it, so a command dead-lettered again shows it was replayed).
const HdrReplayedFrom = "Replayed-From"

// dlqOnlyHeaders are the headers of a DLQ copy that the command did not have.
var dlqOnlyHeaders = []string{events.HdrReason, events.HdrOriginalSubject, events.HdrOriginalSequence, events.HdrCommandID,
	events.HdrBodyTruncated, events.HdrHeadersTruncated}

// ReplayOptions tune Replay.
type ReplayOptions struct {
	// Purge deletes the dead letter from CAMPAIGN_DLQ once CAMPAIGN_COMMANDS
	// stored the replayed command. By default the entry stays.
	Purge bool
	// NewID, when not empty, is the command id to replay under (its
	// Nats-Msg-Id) instead of the dead letter's own: a new command, which
	// neither the duplicate window nor the campaign's ledger relate to the
	// original, so it is applied even if the original was.
	NewID string
}

// ReplayResult says what a replay did.
type ReplayResult struct {
	// Entry is the dead letter replayed.
	Entry Entry
	// StreamSeq is the replayed command's sequence in CAMPAIGN_COMMANDS; when
	// Duplicate, the sequence the stream reported for the earlier message.
	StreamSeq uint64
	// Duplicate: CAMPAIGN_COMMANDS still remembers the command id (it saw it
	// less than DuplicateWindow ago: the original, or an earlier replay) and
	// stored nothing.
	Duplicate bool
	// DuplicateWindow is CAMPAIGN_COMMANDS's duplicate window.
	DuplicateWindow time.Duration
	// Purged: the dead letter was deleted from CAMPAIGN_DLQ.
	Purged bool
	// CommandID is the id the command was published under (the entry's, or
	// ReplayOptions.NewID).
	CommandID string
}

// Replayer sends dead letters back to CAMPAIGN_COMMANDS.
type Replayer struct {
	js       jetstream.JetStream
	dlq      jetstream.Stream
	commands jetstream.Stream
}

// NewReplayer looks up CAMPAIGN_DLQ and CAMPAIGN_COMMANDS.
func NewReplayer(ctx context.Context, js jetstream.JetStream) (*Replayer, error) {
	dlq, err := js.Stream(ctx, events.StreamDLQ)
	if err != nil {
		return nil, fmt.Errorf("replay: stream %s: %w", events.StreamDLQ, err)
	}
	commands, err := js.Stream(ctx, events.StreamCommands)
	if err != nil {
		return nil, fmt.Errorf("replay: stream %s: %w", events.StreamCommands, err)
	}
	return &Replayer{js: js, dlq: dlq, commands: commands}, nil
}

// Replay replays the dead letter with CAMPAIGN_DLQ sequence seq (see
// ReplayEntry). Errors wrap ErrNotFound when there is no such entry.
func (r *Replayer) Replay(ctx context.Context, seq uint64, opt ReplayOptions) (ReplayResult, error) {
	e, err := get(ctx, r.dlq, seq)
	if err != nil {
		return ReplayResult{}, err
	}
	return r.ReplayEntry(ctx, e, opt)
}

// ReplayEntry publishes the dead letter's body to its original command
// subject with its command id as Nats-Msg-Id, and the command's own headers
// (traceparent…) without the DLQ's (Reason, Original-*, Command-Id), plus
// Replayed-From. It waits for the PubAck of CAMPAIGN_COMMANDS.
//
// Keeping the id is what makes a replay safe to repeat: within the stream's
// duplicate window JetStream drops the repeat (Duplicate), after it the
// campaign's ledger of applied command ids makes the worker acknowledge it
// without effect. The entry stays in CAMPAIGN_DLQ unless opt.Purge (and then
// only once the command was stored, not on a Duplicate, which may be the
// original still remembered).
//
// Errors wrap ErrNotReplayable for an entry without original subject or
// command id, or whose body or headers were truncated (Body-Truncated,
// Headers-Truncated: it is not the command any more); JetStream errors are
// wrapped. Errors quote the entry's headers bounded (events.QuoteBounded).
func (r *Replayer) ReplayEntry(ctx context.Context, e Entry, opt ReplayOptions) (ReplayResult, error) {
	res := ReplayResult{Entry: e, DuplicateWindow: r.commands.CachedInfo().Config.Duplicates}
	switch {
	case e.OriginalSubject == "":
		return res, fmt.Errorf("replay dead letter %d: no %s header: %w", e.Seq, events.HdrOriginalSubject, ErrNotReplayable)
	case e.CommandID == "":
		return res, fmt.Errorf("replay dead letter %d: no command id (replaying would make a new command): %w", e.Seq, ErrNotReplayable)
	case e.Header.Get(events.HdrBodyTruncated) != "" || e.Header.Get(events.HdrHeadersTruncated) != "":
		return res, fmt.Errorf("replay dead letter %d: it holds only part of the command (%s %s, %s %s): %w", e.Seq,
			events.HdrBodyTruncated, events.QuoteBounded(e.Header.Get(events.HdrBodyTruncated)),
			events.HdrHeadersTruncated, events.QuoteBounded(e.Header.Get(events.HdrHeadersTruncated)), ErrNotReplayable)
	case !sameCampaign(e.Subject, e.OriginalSubject):
		// An entry whose headers point at another tenant's or campaign's
		// commands was not written by the orchestrator: never replay it.
		return res, fmt.Errorf("replay dead letter %d: original subject %s is not the campaign of %s: %w", e.Seq,
			events.QuoteBounded(e.OriginalSubject), events.QuoteBounded(e.Subject), ErrNotReplayable)
	}
	m := nats.NewMsg(e.OriginalSubject)
	for k, v := range e.Header {
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			continue
		}
		m.Header[k] = append([]string(nil), v...)
	}
	for _, k := range dlqOnlyHeaders {
		m.Header.Del(k)
	}
	res.CommandID = e.CommandID
	if opt.NewID != "" {
		res.CommandID = opt.NewID
	}
	m.Header.Set(jetstream.MsgIDHeader, res.CommandID)
	m.Header.Set(HdrReplayedFrom, events.StreamDLQ+"/"+strconv.FormatUint(e.Seq, 10))
	m.Data = e.Data
	ack, err := r.js.PublishMsg(ctx, m, jetstream.WithExpectStream(events.StreamCommands))
	if err != nil {
		return res, fmt.Errorf("replay dead letter %d (command %s) to %s: %w", e.Seq, events.QuoteBounded(e.CommandID), events.QuoteBounded(e.OriginalSubject), err)
	}
	res.StreamSeq, res.Duplicate = ack.Sequence, ack.Duplicate
	if opt.Purge && !ack.Duplicate {
		if err := r.dlq.DeleteMsg(ctx, e.Seq); err != nil {
			return res, fmt.Errorf("replayed dead letter %d as %s/%d, but could not purge it: %w", e.Seq, events.StreamCommands, ack.Sequence, err)
		}
		res.Purged = true
	}
	return res, nil
}

// sameCampaign reports whether a command subject campaign.cmd.<t>.<c>.<verb>
// belongs to the dead-letter subject campaign.dlq.<t>.<c>. A dead letter of
// an unusable subject (tokens "_unknown") never does: replaying it could only
// dead-letter it again.
func sameCampaign(dlqSubject, cmdSubject string) bool {
	d := strings.Split(dlqSubject, ".")
	c := strings.Split(cmdSubject, ".")
	return len(d) == 4 && len(c) == 5 && d[0] == "campaign" && d[1] == "dlq" && c[0] == "campaign" && c[1] == "cmd" &&
		d[2] != events.Unknown && d[3] != events.Unknown && c[2] == d[2] && c[3] == d[3]
}
