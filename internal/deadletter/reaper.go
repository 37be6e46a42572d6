package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

// AdvisorySubject is where JetStream announces that a message of
// CAMPAIGN_COMMANDS reached the max_deliver of the orchestrator consumer. It
// is a core NATS message: sent to whoever listens at that moment, else lost.
const AdvisorySubject = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + events.StreamCommands + "." + events.ConsumerName

// MaxDeliverMsgID is the Nats-Msg-Id of the DLQ copy of the poison message
// with CAMPAIGN_COMMANDS sequence seq: the same from every instance, so that
// instances racing on one advisory store one copy.
func MaxDeliverMsgID(seq uint64) string {
	return maxDeliverIDPrefix + strconv.FormatUint(seq, 10)
}

// Result is what the Reaper did with one poison message.
type Result string

// Results.
const (
	// Stored: this Reaper stored the DLQ copy and removed the command.
	Stored Result = "stored"
	// AlreadyStored: a DLQ copy existed already (found in CAMPAIGN_DLQ, or
	// deduplicated by its Nats-Msg-Id); the command was removed if needed.
	AlreadyStored Result = "already-stored"
	// Gone: the command was no longer in CAMPAIGN_COMMANDS (handled before).
	Gone Result = "gone"
	// Applied: the command was in its campaign's ledger: removed, no copy.
	Applied Result = "applied"
	// Failed: see Outcome.Err; the sweep tries again later.
	Failed Result = "failed"
)

// Outcome describes one poison message handled by a Reaper.
type Outcome struct {
	// Source is "advisory" or "sweep".
	Source string
	// StreamSeq is the command's sequence in CAMPAIGN_COMMANDS.
	StreamSeq uint64
	// Result is what happened; Err is set when Failed.
	Result Result
	Err    error
	// DLQSeq is the DLQ copy's sequence in CAMPAIGN_DLQ (0 when Gone or Failed).
	DLQSeq uint64
	// CommandID and Subject identify the command (when it was still there).
	CommandID, Subject string
}

// Config tunes a Reaper. Zero values take the defaults.
type Config struct {
	// SweepEvery is the period of the sweep for poison messages whose
	// advisory nobody received (default 30s). A leftover is dead-lettered
	// once two consecutive sweeps found it, so within 2 × SweepEvery.
	SweepEvery time.Duration
	// Timeout bounds the handling of one message (default 10s).
	Timeout time.Duration
	// Observe, when set, is called after each poison message handled, from
	// the Reaper's goroutine (metrics, tests).
	Observe func(Outcome)
}

// Deps are the Reaper's collaborators.
type Deps struct {
	JS     jetstream.JetStream
	Logger *slog.Logger
	// Applied, when set, reports whether a command id is in its campaign's
	// ledger (store.Store.Applied): a command applied already is no poison,
	// whatever its deliveries (it backed a long-lived lock holder, say): it
	// is removed from the work queue without a DLQ copy (Result Applied).
	Applied func(ctx context.Context, tenant, campaign, id string) (bool, error)
}

// Reaper turns the poison messages of CAMPAIGN_COMMANDS, commands that
// reached the orchestrator consumer's max_deliver without being acknowledged,
// into exactly one CAMPAIGN_DLQ entry each, and deletes them from the work
// queue so that nothing waits there silently. Every orchestrator instance
// runs one; they need no coordination:
//
//   - each handles the MAX_DELIVERIES advisory (AdvisorySubject) and, because
//     an advisory nobody heard is lost, sweeps periodically for leftovers
//     (see Sweep);
//   - a message is handled as: read it (gone: done), look for its DLQ copy
//     in CAMPAIGN_DLQ (Original-Sequence and Original-Subject, on its
//     campaign's DLQ subject), publish the copy if there is none with
//     Nats-Msg-Id MaxDeliverMsgID(seq) (instances racing within the DLQ's
//     duplicate window store it once), then delete the message from
//     CAMPAIGN_COMMANDS. A crash anywhere leaves a state the next pass
//     completes without a second copy.
//
// The copy is built by events.NewDeadLetterMsg: the command's body and
// headers, its Command-Id, and a Reason naming the deliveries.
type Reaper struct {
	cfg        Config
	js         jetstream.JetStream
	log        *slog.Logger
	commands   jetstream.Stream
	dlq        jetstream.Stream
	cons       jetstream.Consumer
	sub        *nats.Subscription
	advisories chan *nats.Msg
	// suspects are the sequences the previous sweep found below the ack
	// floor; only those found again are dead-lettered (an acknowledged
	// message may be seen there for a moment before the work queue removes
	// it, notably on replicated streams).
	suspects map[uint64]bool
	applied  func(ctx context.Context, tenant, campaign, id string) (bool, error)
}

// New looks up the streams and the consumer and subscribes to the advisory,
// so that advisories are received from the moment it returns (and handled
// once Run runs).
func New(ctx context.Context, cfg Config, d Deps) (*Reaper, error) {
	if d.JS == nil {
		return nil, errors.New("deadletter: JS is required")
	}
	if cfg.SweepEvery <= 0 {
		cfg.SweepEvery = 30 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Reaper{cfg: cfg, js: d.JS, log: d.Logger.With("component", "deadletter"), advisories: make(chan *nats.Msg, 1024), applied: d.Applied}
	var err error
	if r.commands, err = d.JS.Stream(ctx, events.StreamCommands); err != nil {
		return nil, fmt.Errorf("deadletter: stream %s: %w", events.StreamCommands, err)
	}
	if r.dlq, err = d.JS.Stream(ctx, events.StreamDLQ); err != nil {
		return nil, fmt.Errorf("deadletter: stream %s: %w", events.StreamDLQ, err)
	}
	if r.cons, err = d.JS.Consumer(ctx, events.StreamCommands, events.ConsumerName); err != nil {
		return nil, fmt.Errorf("deadletter: consumer %s on %s: %w", events.ConsumerName, events.StreamCommands, err)
	}
	nc := d.JS.Conn()
	if r.sub, err = nc.ChanSubscribe(AdvisorySubject, r.advisories); err != nil {
		return nil, fmt.Errorf("deadletter: subscribe to %s: %w", AdvisorySubject, err)
	}
	// The server must know the subscription before New returns.
	if err := nc.FlushTimeout(cfg.Timeout); err != nil {
		_ = r.sub.Unsubscribe()
		return nil, fmt.Errorf("deadletter: subscribe to %s: %w", AdvisorySubject, err)
	}
	return r, nil
}

// Run handles advisories and sweeps every SweepEvery (the first sweep at
// once) until ctx ends; then it unsubscribes and returns nil. Failures are
// logged and left to the next sweep.
func (r *Reaper) Run(ctx context.Context) error {
	defer func() { _ = r.sub.Unsubscribe() }()
	r.log.Info("handling poison messages", "advisory", AdvisorySubject, "sweep_every", r.cfg.SweepEvery.String())
	t := time.NewTicker(r.cfg.SweepEvery)
	defer t.Stop()
	sweep := func() {
		if _, err := r.Sweep(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("sweep for poison messages failed", "err", err)
		}
	}
	sweep()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-r.advisories:
			r.handleAdvisory(ctx, m)
		case <-t.C:
			sweep()
		}
	}
}

// advisory is the part of io.nats.jetstream.advisory.v1.max_deliver read here.
type advisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

func (r *Reaper) handleAdvisory(ctx context.Context, m *nats.Msg) {
	var a advisory
	if err := json.Unmarshal(m.Data, &a); err != nil || a.StreamSeq == 0 {
		r.log.Warn("unreadable MAX_DELIVERIES advisory ignored", "subject", m.Subject, "err", err)
		return
	}
	if a.Stream != events.StreamCommands || a.Consumer != events.ConsumerName {
		return
	}
	r.bury(ctx, "advisory", a.StreamSeq, a.Deliveries)
}

// Sweep dead-letters the leftovers of CAMPAIGN_COMMANDS: messages the
// consumer delivered and will never deliver again, though they are still in
// the stream (acknowledged ones leave a work queue). A message qualifies when
// it is at or below the consumer's last delivered stream sequence and is not
// pending an ack: below the ack floor (which the server moves past such
// messages once a later one is acknowledged), or anywhere when nothing is
// pending. Only messages that qualified in the previous Sweep too are
// handled, since an acknowledged message may qualify for a moment before the
// work queue removes it.
//
// It returns how many messages it handled (whatever the result); a failure
// to handle one is logged and retried next time, not returned. Run calls it
// every SweepEvery; call it directly only when Run is not running.
func (r *Reaper) Sweep(ctx context.Context) (int, error) {
	ictx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	info, err := r.cons.Info(ictx)
	cancel()
	if err != nil {
		return 0, fmt.Errorf("sweep: consumer %s: %w", events.ConsumerName, err)
	}
	limit := info.AckFloor.Stream
	if info.NumAckPending == 0 {
		limit = info.Delivered.Stream
	}
	deliveries := uint64(max(info.Config.MaxDeliver, 0))
	seen := map[uint64]bool{}
	handled := 0
	for seq := uint64(1); seq <= limit; {
		gctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		raw, err := r.commands.GetMsg(gctx, seq, jetstream.WithGetMsgSubject(">"))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return handled, fmt.Errorf("sweep: %s from sequence %d: %w", events.StreamCommands, seq, err)
		}
		if raw.Sequence > limit {
			break
		}
		if r.suspects[raw.Sequence] {
			if o := r.bury(ctx, "sweep", raw.Sequence, deliveries); o.Result == Failed {
				seen[raw.Sequence] = true
			}
			handled++
		} else {
			seen[raw.Sequence] = true
		}
		seq = raw.Sequence + 1
	}
	r.suspects = seen
	return handled, nil
}

// bury dead-letters the message seq of CAMPAIGN_COMMANDS and removes it.
func (r *Reaper) bury(parent context.Context, source string, seq, deliveries uint64) Outcome {
	ctx, cancel := context.WithTimeout(parent, r.cfg.Timeout)
	defer cancel()
	o := Outcome{Source: source, StreamSeq: seq}
	fail := func(err error) Outcome {
		o.Result, o.Err = Failed, err
		level := slog.LevelError
		if parent.Err() != nil {
			level = slog.LevelDebug // stopping
		}
		r.log.Log(parent, level, "poison message not dead-lettered: the sweep will try again", "stream_seq", seq, "source", source, "err", err)
		r.observe(o)
		return o
	}
	raw, err := r.commands.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		o.Result = Gone
		r.observe(o)
		return o
	}
	if err != nil {
		return fail(fmt.Errorf("read %s sequence %d: %w", events.StreamCommands, seq, err))
	}
	inv := identify(raw)
	o.CommandID, o.Subject = inv.ID, raw.Subject
	if r.applied != nil && inv.ID != "" && inv.Tenant != "" && inv.Campaign != "" {
		done, err := r.applied(ctx, inv.Tenant, inv.Campaign, inv.ID)
		if err != nil {
			return fail(fmt.Errorf("ledger of %s/%s: %w", inv.Tenant, inv.Campaign, err))
		}
		if done {
			if err := r.commands.DeleteMsg(ctx, seq); err != nil {
				if _, gerr := r.commands.GetMsg(ctx, seq); !errors.Is(gerr, jetstream.ErrMsgNotFound) {
					return fail(fmt.Errorf("delete applied %s sequence %d: %w", events.StreamCommands, seq, err))
				}
			}
			r.log.Info("command at max deliveries was applied already: removed from the work queue, no dead letter",
				"tenant_id", inv.Tenant, "campaign_id", inv.Campaign, "command_id", inv.ID, "stream_seq", seq, "deliveries", deliveries, "source", source)
			o.Result = Applied
			r.observe(o)
			return o
		}
	}
	inv.Reason = fmt.Sprintf("max deliveries: delivered %d times to consumer %s without being acknowledged (its handler kept failing)", deliveries, events.ConsumerName)
	copyMsg := events.NewDeadLetterMsg(&nats.Msg{Subject: raw.Subject, Header: raw.Header, Data: raw.Data}, inv, seq)
	copyMsg.Header.Set(jetstream.MsgIDHeader, MaxDeliverMsgID(seq))

	dlqSeq, found, err := r.findCopy(ctx, copyMsg.Subject, raw, inv.ID)
	if err != nil {
		return fail(err)
	}
	o.Result, o.DLQSeq = AlreadyStored, dlqSeq
	if !found {
		ack, err := r.js.PublishMsg(ctx, copyMsg, jetstream.WithExpectStream(events.StreamDLQ))
		if err != nil {
			return fail(fmt.Errorf("dead letter %s sequence %d to %s: %w", events.StreamCommands, seq, copyMsg.Subject, err))
		}
		o.DLQSeq = ack.Sequence
		if !ack.Duplicate {
			o.Result = Stored
		}
	}
	if err := r.commands.DeleteMsg(ctx, seq); err != nil {
		// Another instance may have deleted it first.
		if _, gerr := r.commands.GetMsg(ctx, seq); !errors.Is(gerr, jetstream.ErrMsgNotFound) {
			return fail(fmt.Errorf("delete %s sequence %d after dead-lettering it: %w", events.StreamCommands, seq, err))
		}
	}
	log := r.log.With("tenant_id", inv.Tenant, "campaign_id", inv.Campaign, "command_id", inv.ID,
		"subject", raw.Subject, "stream_seq", seq, "dlq_seq", o.DLQSeq, "deliveries", deliveries, "source", source)
	if o.Result == Stored {
		log.Warn("poison command dead-lettered and removed from the work queue")
	} else {
		log.Debug("poison command already dead-lettered; removed from the work queue")
	}
	r.observe(o)
	return o
}

// findCopy looks for a DLQ copy of raw on the DLQ subject subj: an entry whose
// Original-Sequence and Original-Subject are raw's, and whose Command-Id is
// id when both have one (stream sequences start again if the stream is ever
// recreated; command ids are unique). It is what keeps a late sweep (after
// the DLQ's duplicate window) from storing a second copy when an instance
// stopped between publishing the copy and deleting the command.
func (r *Reaper) findCopy(ctx context.Context, subj string, raw *jetstream.RawStreamMsg, id string) (uint64, bool, error) {
	want := strconv.FormatUint(raw.Sequence, 10)
	for seq := uint64(1); ; {
		m, err := r.dlq.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, fmt.Errorf("look for the DLQ copy of %s sequence %d on %s: %w", events.StreamCommands, raw.Sequence, subj, err)
		}
		cid := m.Header.Get(events.HdrCommandID)
		if m.Header.Get(events.HdrOriginalSequence) == want && m.Header.Get(events.HdrOriginalSubject) == raw.Subject &&
			(cid == "" || id == "" || cid == id) {
			return m.Sequence, true, nil
		}
		seq = m.Sequence + 1
	}
}

// identify returns the command's id and tokens as an InvalidCommand without
// reason, whether the command is valid or not (the DLQ subject needs them).
func identify(raw *jetstream.RawStreamMsg) *events.InvalidCommand {
	// No workflows: a create decodes as invalid, with its id and tokens.
	cmd, err := events.DecodeCommand(raw.Subject, raw.Header, raw.Data, nil)
	var inv *events.InvalidCommand
	if errors.As(err, &inv) {
		return &events.InvalidCommand{ID: inv.ID, Tenant: inv.Tenant, Campaign: inv.Campaign, Verb: inv.Verb}
	}
	return &events.InvalidCommand{ID: cmd.ID, Tenant: cmd.Tenant, Campaign: cmd.Campaign, Verb: string(cmd.Verb)}
}

func (r *Reaper) observe(o Outcome) {
	if r.cfg.Observe != nil {
		r.cfg.Observe(o)
	}
}
