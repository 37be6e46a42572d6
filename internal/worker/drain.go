package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/metrics"
	"github.com/campaign-orchestrator/orchestrator/internal/stepclient"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/tracing"
)

// errStopping: the worker is shutting down; the lock was abandoned and the
// message should come back to another instance.
var errStopping = errors.New("worker stopping")

// errBacksHolder: the campaign's lock is held by a handler that took over
// this very message (redelivered while this one stalled). The message must
// not be acknowledged: if that holder dies, only its redelivery brings the
// campaign back. Its current delivery is the holder's to end.
var errBacksHolder = errors.New("message backs another holder's lock")

// drainer holds one campaign's lock and empties its inbox. It knows the
// campaign as stored (from the snapshot the lock came with, then from its
// own fenced writes), the inbox's head (from the snapshot, then from each
// write) and the outbox messages it has not trimmed yet, so that applying a
// command costs one store round trip: the write, which also trims what was
// published since the previous one and returns the inbox.
type drainer struct {
	w        *Worker
	l        store.Lease
	k        store.Key
	scanFrom uint64 // stream sequences below this were read ahead already

	cur    *fsm.Campaign   // as stored; nil: none
	inbox  []store.Item    // the inbox's first items, as last seen
	outbox []store.Message // in the store's outbox, oldest first
	sent   int             // outbox[:sent] are published (trimmed by the next write or the release)
	head   string          // the item the next write acts on first (Write.Head), then ""

	known map[string]decoded // items decoded already, by ID (see recall)
}

// decoded is an inbox item as this holder knows it already, decoded: the
// handler's own command, one it read ahead, an advance it scheduled.
type decoded struct {
	data []byte // the item's Data
	it   events.InboxItem
	cmd  fsm.Command
}

// maxKnown bounds what a drainer remembers of decoded items.
const maxKnown = 64

// remember keeps a valid command's decoded form for process, which would
// otherwise decode si.Data again: a command is decoded once on its way.
func (d *drainer) remember(si store.Item, it events.InboxItem, cmd fsm.Command) {
	if d.known == nil {
		d.known = make(map[string]decoded, 4)
	}
	if len(d.known) >= maxKnown {
		clear(d.known)
	}
	d.known[si.ID] = decoded{data: si.Data, it: it, cmd: cmd}
}

// recall returns si decoded, if remembered with the same data (the inbox
// keeps the first item of an ID: another one's data is decoded).
func (d *drainer) recall(si store.Item) (decoded, bool) {
	k, ok := d.known[si.ID]
	if !ok || !bytes.Equal(k.data, si.Data) {
		return decoded{}, false
	}
	return k, true
}

// drain empties the campaign's inbox in stream order, then releases the lock.
// snap is what the lock came with (nil: read it). It returns nil once
// released; errStopping when run ended between items (the lock is then
// abandoned); a store.ErrLockLost or errCrash error otherwise.
func (w *Worker) drain(ctx, run context.Context, l store.Lease, snap *store.Snapshot, first *decoded) error {
	d := &drainer{w: w, l: l, k: l.Key, scanFrom: 1}
	if first != nil {
		d.remember(store.Item{ID: first.it.ID, Data: first.data}, first.it, first.cmd)
	}
	if snap == nil {
		var err error
		if snap, err = d.read(ctx); err != nil {
			return err
		}
	}
	d.cur, d.inbox, d.outbox = snap.Campaign, snap.Inbox, snap.Outbox
	empty := 0 // consecutive empty inbox reads the store would not release on
	// A previous holder may have crashed between a write and its publish.
	if err := d.flush(ctx); err != nil {
		return err
	}
	for {
		if len(d.inbox) == 0 {
			var released bool
			published := d.outbox[:d.sent]
			if err := w.retry(ctx, "release lock", func() (err error) { released, err = w.d.Store.Release(ctx, l, published); return err }); err != nil {
				return err
			}
			if released {
				return nil
			}
			d.outbox, d.sent = d.outbox[d.sent:], 0 // trimmed before the inbox was found not empty
			if err := d.readInbox(ctx); err != nil {
				return err
			}
			// Items arrived between the two reads; should the store ever
			// keep saying so with nothing to read, do not spin on it.
			if len(d.inbox) == 0 {
				if empty++; empty > 3 {
					if empty == 4 {
						w.campaignLog(ctx, d.k, "").Warn("inbox reads empty but the lock cannot be released")
					}
					sleep(ctx, 100*time.Millisecond)
				}
			}
			continue
		}
		empty = 0
		si := d.inbox[0]
		if run.Err() != nil {
			return w.abandon(ctx, l, nil)
		}
		var pulled bool
		if err := w.retry(ctx, "read ahead", func() (err error) { pulled, err = d.readAhead(ctx, si.Seq); return err }); err != nil {
			return err
		}
		if pulled { // an earlier command was still in transit: start again from the head
			if err := d.readInbox(ctx); err != nil {
				return err
			}
			continue
		}
		// A command parked (and acknowledged, so gone from the stream)
		// after the inbox was read sorts before si too: the first write
		// acting on si is refused then (ErrNotHead), with the inbox as it is.
		d.head = si.ID
		err := d.process(ctx, si)
		if errors.Is(err, store.ErrNotHead) {
			continue
		}
		if err != nil {
			return err
		}
		if si.Seq < store.SeqInternal { // a stream message: those before it are read
			d.scanFrom = max(d.scanFrom, si.Seq+1)
		}
	}
}

// read reads what a lease taken without a snapshot (store.Take) starts from.
func (d *drainer) read(ctx context.Context) (*store.Snapshot, error) {
	w := d.w
	snap := &store.Snapshot{}
	if err := w.retry(ctx, "load campaign", func() error {
		c, err := w.d.Store.Load(ctx, d.k)
		if errors.Is(err, store.ErrNotFound) {
			snap.Campaign = nil
			return nil
		}
		snap.Campaign = &c
		return err
	}); err != nil {
		return nil, err
	}
	if err := w.retry(ctx, "read outbox", func() (err error) { snap.Outbox, err = w.d.Store.Outbox(ctx, d.k); return err }); err != nil {
		return nil, err
	}
	if err := w.retry(ctx, "read inbox", func() (err error) { snap.Inbox, err = w.d.Store.Inbox(ctx, d.k, store.InboxHead); return err }); err != nil {
		return nil, err
	}
	return snap, nil
}

// readInbox reads the inbox's head again.
func (d *drainer) readInbox(ctx context.Context) error {
	return d.w.retry(ctx, "read inbox", func() (err error) { d.inbox, err = d.w.d.Store.Inbox(ctx, d.k, store.InboxHead); return err })
}

// readAhead makes sure no command of the campaign that the stream accepted
// before sequence `before` is still in transit (delivered to a worker that
// has not parked it yet): it parks any it finds in the inbox itself and
// reports whether it did. This is what puts a pause published while a step
// runs ahead of the campaign's next advance, whatever the workers' timing.
func (d *drainer) readAhead(ctx context.Context, before uint64) (bool, error) {
	pulled := false
	for d.scanFrom < before {
		raw, ok, err := events.NextCommandLinearizable(ctx, d.w.d.JS, d.w.commands, d.k.Tenant, d.k.Campaign, d.scanFrom)
		if err != nil {
			return pulled, fmt.Errorf("read ahead %s: %w", d.k, err)
		}
		if !ok || raw.Sequence >= before {
			return pulled, nil
		}
		d.scanFrom = raw.Sequence + 1
		// The header is the publisher's: keep it only if it is a valid traceparent.
		tp := tracing.Traceparent(tracing.WithTraceparent(context.Background(), raw.Header.Get(events.HdrTraceparent)))
		it := events.InboxItem{Subject: raw.Subject, Body: raw.Data, Traceparent: tp}
		cmd, err := events.DecodeCommand(raw.Subject, raw.Header, raw.Data, d.w.d.Workflows)
		var inv *events.InvalidCommand
		switch {
		case errors.As(err, &inv):
			// Dead-lettered by the handler that receives it, which parks
			// it too, as here, for its command.rejected, in its place.
			if inv.ID == "" || inv.Tenant != d.k.Tenant || inv.Campaign != d.k.Campaign {
				continue
			}
			it.ID, it.Invalid, it.Verb = inv.ID, inv.Reason, inv.Verb
		case err != nil:
			continue
		default:
			it.ID = cmd.ID
		}
		if queued(d.inbox, it.ID) {
			continue
		}
		data, err := events.EncodeInbox(it)
		if err != nil {
			return pulled, err
		}
		// Park only: the message is delivered to another handler, which
		// takes the lock itself should ours have expired.
		si := store.Item{ID: it.ID, Seq: raw.Sequence, Data: data}
		res, err := d.w.d.Store.Enqueue(ctx, d.k, si, store.Claim{})
		if err != nil {
			d.scanFrom = raw.Sequence
			return pulled, err
		}
		if it.Invalid == "" && !res.Duplicate {
			d.remember(si, it, cmd)
		}
		pulled = pulled || !res.Duplicate
	}
	return pulled, nil
}

func queued(items []store.Item, id string) bool {
	for _, it := range items {
		if it.ID == id {
			return true
		}
	}
	return false
}

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

// runStep calls the campaign's current step and writes its result.
func (d *drainer) runStep(ctx context.Context, c fsm.Campaign, it events.InboxItem, si store.Item) error {
	itemID := si.ID
	w := d.w
	step, _ := c.CurrentStep()
	if err := w.fault(BeforeStepCall, d.k); err != nil {
		return err
	}
	outputs, err := json.Marshal(c.Outputs)
	if err != nil {
		return err
	}
	sctx, span := w.startStep(ctx, d.k, it.ID, step.Name, c.Run(step.Name), max(c.Attempt, 1))
	log := w.campaignLog(sctx, d.k, it.ID).With("step", step.Name, "run", c.Run(step.Name))
	cur := c
	onRetry := func(n stepclient.RetryNotice) error {
		log.Warn("step attempt failed: retrying", "attempt", n.Attempt, "delay", n.Delay, "err", n.Err)
		w.d.Metrics.StepRetrying(step.Name, retryReason(n.Err))
		r := fsm.StepRetrying(cur, it.ID, n.Attempt, n.Err.Error(), n.Delay, w.d.Now())
		if err := d.commit(ctx, it, r, false, ""); err != nil {
			return err
		}
		cur = r.Campaign
		return nil
	}
	// The call may take seconds: the handler's slot goes back to pulling
	// commands, and the call waits for one of the StepsInFlight instead.
	select {
	case w.steps <- struct{}{}:
	case <-ctx.Done():
		span.End()
		return fmt.Errorf("step %s of %s: %w", step.Name, d.k, context.Cause(ctx))
	}
	freeSlot(ctx) // once the call may start: a full STEPS_IN_FLIGHT holds the pulling back
	started := time.Now()
	res, callErr := w.d.Steps.Call(sctx, stepclient.Request{
		Tenant: d.k.Tenant, Campaign: d.k.Campaign, Step: step, Run: c.Run(step.Name), Attempt: max(c.Attempt, 1),
		Params: c.Params, Outputs: outputs, Fence: d.l.Fence, Traceparent: tracing.Traceparent(sctx),
	}, onRetry)
	<-w.steps
	failSpan(span, callErr)
	span.End()
	if ctx.Err() != nil {
		return fmt.Errorf("step %s of %s interrupted: %w", step.Name, d.k, context.Cause(ctx))
	}
	if errors.Is(callErr, errCrash) || errors.Is(callErr, store.ErrLockLost) || errors.Is(callErr, store.ErrConflict) || errors.Is(callErr, store.ErrNotHead) {
		return callErr
	}
	if err := w.fault(AfterStepCall, d.k); err != nil {
		return err
	}
	took := res.Duration
	if took == 0 {
		took = time.Since(started)
	}
	attempt := max(res.Attempts, cur.Attempt, 1)
	var r fsm.Result
	if callErr != nil {
		log.Warn("step failed", "attempt", attempt, "err", callErr)
		r = fsm.StepFailed(cur, it.ID, attempt, callErr.Error(), took, w.d.Now())
	} else {
		log.Info("step succeeded", "attempt", attempt, "duration", took)
		r = fsm.StepSucceeded(cur, it.ID, attempt, res.Output, took, w.d.Now())
	}
	// The result is written alone, its advance parked behind whatever
	// waits: the step ends when its result is stored, and only a read
	// ahead made after that (by the drain loop, before the advance's
	// step.started) sees every pause or cancel the stream accepted while it
	// ran (CONTRACT section 5). Going on to the next step in the same write
	// would let one accepted after a read ahead made before it, but before
	// the write, wait behind the next step.
	err = d.commit(ctx, it, r, false, itemID)
	if callErr == nil && errors.Is(err, events.ErrEventTooLarge) {
		// Nothing was written: record the step as failed instead.
		callErr = fmt.Errorf("output of %d bytes does not fit in an event (at most %d bytes)", len(res.Output), events.MaxEventBytes)
		log.Warn("step failed", "err", callErr)
		err = d.commit(ctx, it, fsm.StepFailed(cur, it.ID, attempt, callErr.Error(), took, w.d.Now()), false, itemID)
	}
	w.noteStep(step.Name, callErr, took, sampledTraceID(sctx))
	return err
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

// write commits wr under the lease and flushes the outbox.
func (d *drainer) write(ctx context.Context, wr store.Write) error {
	w := d.w
	wr.Lease = d.l
	wr.ID = store.NewToken() // the same for every retry: a retry after a lost reply finds its write
	if wr.Head == "" {
		wr.Head = d.head
	}
	wr.Trim = d.outbox[:d.sent]
	if err := w.fault(BeforeWrite, d.k); err != nil {
		return err
	}
	var items []store.Item
	err := w.retry(ctx, "commit", func() (err error) { items, err = w.d.Store.CommitRead(ctx, wr); return w.fenced(err) })
	if errors.Is(err, store.ErrNotHead) {
		d.inbox, d.head = items, ""
		return err
	}
	if err != nil {
		return fmt.Errorf("commit %s: %w", d.k, err)
	}
	d.head, d.inbox = "", items
	d.outbox, d.sent = append(d.outbox[d.sent:len(d.outbox):len(d.outbox)], wr.Outbox...), 0
	if c := wr.Campaign; c != nil {
		cc := *c
		cc.Fence = d.l.Fence
		d.cur = &cc
	}
	if err := w.fault(AfterWrite, d.k); err != nil {
		return err
	}
	return d.flush(ctx)
}

// flush publishes the outbox messages not published yet; the next write
// (or the release) trims them. Events are published so that no sequence is
// stored twice, even long after the stream's duplicate window
// (events.Publisher.PublishOutbox).
func (d *drainer) flush(ctx context.Context) error {
	w := d.w
	msgs := d.outbox[d.sent:]
	if len(msgs) == 0 {
		return nil
	}
	if err := w.fault(BeforePublish, d.k); err != nil {
		return err
	}
	if err := w.retry(ctx, "publish events", func() error { _, err := w.events.PublishOutbox(ctx, d.k.Tenant, d.k.Campaign, msgs); return err }); err != nil {
		return fmt.Errorf("publish events of %s: %w", d.k, err)
	}
	if err := w.fault(AfterPublish, d.k); err != nil {
		return err
	}
	d.sent = len(d.outbox)
	return nil
}
