package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/metrics"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/tracing"
)

// process applies one inbox item, in its own span (startApply).
func (d *drainer) process(ctx context.Context, si store.Item) (err error) {
	w := d.w
	known, isKnown := d.recall(si)
	it := known.it
	if !isKnown {
		if it, err = events.DecodeInbox(si.Data); err != nil {
			w.campaignLog(ctx, d.k, si.ID).Error("undecodable inbox item dropped", "err", err)
			return d.settle(ctx, si.ID)
		}
	}
	ctx, span := w.startApply(ctx, d.k, it)
	started := time.Now()
	defer func() {
		failSpan(span, err)
		span.End()
		w.d.Metrics.CommandApplyDuration(verbOf(it.Subject), time.Since(started), sampledTraceID(ctx))
	}()
	log := w.campaignLog(ctx, d.k, it.ID)
	cur := d.cur
	now := w.d.Now()
	reject := func(reason string) error {
		if cur == nil {
			return d.settle(ctx, si.ID)
		}
		err := d.commit(ctx, it, fsm.Reject(*cur, it.ID, it.Verb, reason, now), true, si.ID)
		if errors.Is(err, events.ErrEventTooLarge) {
			// Never block the campaign on its own rejection: say less.
			log.Warn("rejection does not fit in an event: recorded with a short reason", "err", err)
			err = d.commit(ctx, it, fsm.Reject(*cur, it.ID, events.BoundReason(it.Verb), events.ReasonTooLarge, now), true, si.ID)
		}
		return err
	}
	// tooLarge: a command whose events cannot be published (a create whose
	// name or params fill an event, say) is invalid: dead-lettered once and
	// rejected, so that the campaign's other commands go on.
	tooLarge := func(cmd fsm.Command, cause error) error {
		log.Warn("command's events do not fit: dead-lettered", "verb", cmd.Verb, "err", cause)
		reason := "its events do not fit in a message: " + cause.Error()
		if err := d.deadLetter(ctx, it, si.Seq, invalid(cmd, reason), metrics.DLQInvalid); err != nil {
			return err
		}
		it.Verb = string(cmd.Verb)
		return reject(reason)
	}
	if it.Invalid != "" {
		return reject(it.Invalid)
	}
	cmd := known.cmd
	if !isKnown {
		cmd, err = events.DecodeCommand(it.Subject, it.Header(), it.Body, w.d.Workflows)
	}
	var inv *events.InvalidCommand
	if errors.As(err, &inv) {
		// Valid when received, no longer (a workflow removed since, say).
		if err := d.deadLetter(ctx, it, si.Seq, inv, metrics.DLQInvalid); err != nil {
			return err
		}
		it.Verb = inv.Verb
		return reject(inv.Reason)
	} else if err != nil {
		return err
	}
	if cur == nil {
		// Its state may have been lost: rebuilt, never new (rebuild.go).
		if done, err := d.meetMissing(ctx, it, si, cmd); done {
			return err
		}
	}
	r, err := fsm.Apply(cur, cmd, now)
	var rej *fsm.RejectedError
	switch {
	case errors.Is(err, fsm.ErrUnknownCampaign):
		// Its create may have been parked (and acked, so out of the read
		// ahead's sight) since the inbox was read: the dead letter cannot
		// wait for the head check of the write, so look now.
		if err := d.readInbox(ctx); err != nil {
			return err
		}
		if len(d.inbox) == 0 || d.inbox[0].ID != si.ID {
			return store.ErrNotHead
		}
		log.Warn("command for an unknown campaign: dead-lettered", "verb", cmd.Verb)
		if err := d.deadLetter(ctx, it, si.Seq, invalid(cmd, "unknown campaign"), metrics.DLQUnknownCampaign); err != nil {
			return err
		}
		return d.settle(ctx, si.ID)
	case errors.Is(err, fsm.ErrStale):
		noopSpan(span, "stale advance: the campaign has moved on")
		return d.dequeue(ctx, si.ID)
	case errors.As(err, &rej):
		log.Info("command rejected", "verb", cmd.Verb, "reason", rej.Reason)
		return w.countRejected(d.commit(ctx, it, r, true, si.ID), cmd.Verb)
	case err != nil:
		return fmt.Errorf("apply %s to %s: %w", cmd.Verb, d.k, err)
	}
	if !r.RunStep {
		// What r schedules (its advance, parked) is read ahead of before
		// it is applied: only once r is stored does the read see every
		// command the stream accepted before it.
		err := d.commit(ctx, it, r, cmd.Verb != fsm.Advance, si.ID)
		if errors.Is(err, events.ErrEventTooLarge) {
			return tooLarge(cmd, err)
		}
		return w.countApplied(err, cmd.Verb)
	}
	if len(r.Events) > 0 {
		// step.started: written before the call; the advance stays in the
		// inbox until the step's result is written, moved to its front
		// (whatever is parked meanwhile waits for the step's end, also on
		// a holder that takes over should this one die).
		err := d.commit(ctx, it, r, false, si.ID, store.Item{ID: si.ID, Data: si.Data})
		if errors.Is(err, events.ErrEventTooLarge) {
			return tooLarge(cmd, err)
		}
		if err != nil {
			return err
		}
	} else {
		// The step started before (its holder crashed): nothing may have
		// been parked ahead of it since the inbox was read.
		if err := d.readInbox(ctx); err != nil {
			return err
		}
		if len(d.inbox) == 0 || d.inbox[0].ID != si.ID {
			return store.ErrNotHead
		}
	}
	d.head = "" // checked: the result is written whatever is parked meanwhile
	return w.countApplied(d.runStep(ctx, r.Campaign, it, si), cmd.Verb)
}

// invalid describes a valid-looking command that cannot be applied.
func invalid(cmd fsm.Command, reason string) *events.InvalidCommand {
	return &events.InvalidCommand{ID: cmd.ID, Tenant: cmd.Tenant, Campaign: cmd.Campaign, Verb: string(cmd.Verb), Reason: reason}
}

// deadLetter copies an inbox item's command to the DLQ with inv's reason.
// The copy is published before the fenced write that settles the item: the
// lock is extended first, so that a drainer that outlived its lock (a
// freeze) finds out before acting on what it knew of the campaign.
func (d *drainer) deadLetter(ctx context.Context, it events.InboxItem, seq uint64, inv *events.InvalidCommand, class string) error {
	if err := d.w.retry(ctx, "extend lock", func() error { return d.w.fenced(d.w.d.Store.Extend(ctx, d.l, d.w.cfg.LockTTL)) }); err != nil {
		return err
	}
	if err := d.w.retry(ctx, "dead letter", func() error { return events.DeadLetter(ctx, d.w.d.JS, it.Msg(), inv, seq) }); err != nil {
		return err
	}
	d.w.d.Metrics.CommandDeadLettered(inv.Verb, class)
	return nil
}

// commit writes a transition with its events (and next advance) in the
// outbox, then publishes the outbox. park is parked again by the same
// write: the advance whose step r starts, at the inbox's front (Seq 0). The events carry the traceparent of a
// producer span "send campaign.evt…", the advance that of "send
// campaign.cmd…", both children of ctx's span (the item's apply span) and
// ended once the write and its publish are done.
func (d *drainer) commit(ctx context.Context, it events.InboxItem, r fsm.Result, applied bool, dequeue string, park ...store.Item) (err error) {
	var spans []trace.Span
	defer func() {
		for _, sp := range spans {
			failSpan(sp, err)
			sp.End()
		}
	}()
	out, span, err := d.eventMsgs(ctx, r.Events)
	if span != nil {
		spans = append(spans, span)
	}
	if err != nil {
		return err
	}
	wr := store.Write{Campaign: &r.Campaign, Outbox: out}
	wr.Park = park
	if r.ScheduleAdvance {
		adv, dec, err := advanceItem(r.Campaign, tracing.Traceparent(ctx))
		if err != nil {
			return err
		}
		d.remember(adv, dec.it, dec.cmd) // applied by this holder, most likely: not decoded again
		wr.Park = append(wr.Park, adv)
	}
	if applied {
		wr.Applied = []string{it.ID}
	}
	if dequeue != "" {
		wr.Dequeue = []string{dequeue}
	}
	return d.write(ctx, wr)
}

// eventMsgs builds the messages of evs, which carry the traceparent of a
// producer span "send campaign.evt…", a child of ctx's span (the item's
// apply span), for the caller to end once the write and its publish are
// done (nil when evs is empty).
func (d *drainer) eventMsgs(ctx context.Context, evs ...[]fsm.Event) ([]store.Message, trace.Span, error) {
	n := 0
	for _, e := range evs {
		n += len(e)
	}
	if n == 0 {
		return nil, nil, nil
	}
	pctx, span := tracing.StartProducer(ctx, d.w.tracer, tracing.EventsTemplate, events.CampaignEvents(d.k.Tenant, d.k.Campaign), n)
	tp := tracing.Traceparent(pctx)
	out := make([]store.Message, 0, n)
	for _, e := range evs {
		for _, ev := range e {
			ev.Fence = d.l.Fence // the writer's: a rebuild's fence floor
			m, err := events.EventEntry(d.k.Tenant, d.k.Campaign, ev, tp)
			if err != nil {
				return nil, span, err
			}
			out = append(out, m)
		}
	}
	return out, span, nil
}

// advance returns the advance that c schedules as the inbox item the
// holder parks (store.SeqInternal: behind every command the
// stream accepted). The advance never goes through the stream: the parked
// item is the campaign's durable trigger, found by the next holder should
// this one die (the backing message's redelivery, a new command, or the
// sweep brings one).
func advance(c fsm.Campaign, tp string) (store.Item, error) {
	si, _, err := advanceItem(c, tp)
	return si, err
}

// advanceItem is advance that also returns the advance decoded.
func advanceItem(c fsm.Campaign, tp string) (store.Item, decoded, error) {
	cmd, m := events.Advance(c, tp)
	it := events.InboxItem{Subject: m.Subject, ID: cmd.ID, Body: m.Data, Traceparent: tp}
	data, err := events.EncodeInbox(it)
	if err != nil {
		return store.Item{}, decoded{}, err
	}
	return store.Item{ID: cmd.ID, Seq: store.SeqInternal, Data: data}, decoded{data: data, it: it, cmd: cmd}, nil
}

// dequeue drops an inbox item that changes nothing (a stale advance).
func (d *drainer) dequeue(ctx context.Context, id string) error {
	return d.write(ctx, store.Write{Dequeue: []string{id}})
}

// settle drops an inbox item that was dealt with for good without a state
// change (dead-lettered, undecodable) and records its id in the ledger, so
// that a redelivery (its ack lost) is a duplicate and is not applied later,
// once the campaign exists. A ledger without a campaign expires after the
// retention.
func (d *drainer) settle(ctx context.Context, id string) error {
	return d.write(ctx, store.Write{Dequeue: []string{id}, Applied: []string{id}})
}
