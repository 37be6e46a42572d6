package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/metrics"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/tracing"
)

// subjectVerb is the last token of a command subject and whether it is
// one of fsm.Verbs.
func subjectVerb(subject string) (fsm.Verb, bool) {
	v := fsm.Verb(subject[strings.LastIndexByte(subject, '.')+1:])
	return v, v.Valid()
}

// heartbeat keeps a handler's message from being redelivered (InProgress)
// and the lock it holds, if any, from expiring, until stopped: the worker's
// keeper renews every registered heartbeat together (keepAlive). When the
// lock turns out to be lost it cancels the drain's context with
// store.ErrLockLost.
type heartbeat struct {
	w     *Worker
	msg   jetstream.Msg // nil: a sweep's, backed by no message
	mu    sync.Mutex
	lease *store.Lease
	lost  context.CancelCauseFunc
	// valid is when the lock may expire, by this process's clock: the
	// TTL after the request that took it or last extended it was sent
	// (the store started its TTL no earlier). Past it the holder no longer
	// publishes events (check), and keepAlive ends its drain.
	valid time.Time
}

// hold records l (nil: none) and when its lock may expire.
func (h *heartbeat) hold(l *store.Lease, lost context.CancelCauseFunc, valid time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lease, h.lost, h.valid = l, lost, valid
}

// extended records that the lock of l was extended by a request sent at
// sent, if h still holds l.
func (h *heartbeat) extended(l store.Lease, sent time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lease != nil && *h.lease == l {
		h.valid = sent.Add(h.w.cfg.LockTTL)
	}
}

// check fails with store.ErrLockLost once the lock may have expired: a
// holder that outlived its lock (a freeze, a store it cannot reach to
// extend it) publishes nothing after its TTL, which is what a rebuild of
// the campaign waits out (meetMissing).
func (h *heartbeat) check() error {
	h.mu.Lock()
	valid := h.valid
	h.mu.Unlock()
	if lapsed(time.Now(), valid) {
		return fmt.Errorf("lock may have expired (valid until %s): %w", valid.Format(time.RFC3339Nano), store.ErrLockLost)
	}
	return nil
}

// lapsed reports whether now is at or past valid by the monotonic clock or
// by the wall clock: the monotonic one stops while the machine is
// suspended, and a lock's TTL in the store runs on.
func lapsed(now, valid time.Time) bool {
	return !now.Before(valid) || !now.Round(0).Before(valid.Round(0))
}

func (w *Worker) startHeartbeat(_ context.Context, msg jetstream.Msg) *heartbeat {
	h := &heartbeat{w: w, msg: msg}
	w.beatsMu.Lock()
	w.beats[h] = struct{}{}
	w.beatsMu.Unlock()
	return h
}

func (h *heartbeat) stop() {
	h.w.beatsMu.Lock()
	delete(h.w.beats, h)
	h.w.beatsMu.Unlock()
}

// keepAlive renews, every w.hb until ctx ends, what every heartbeat keeps:
// each message's InProgress (a publish, no reply awaited) and every held
// lock in one ExtendAll (one pipelined round trip to Redis), so that
// thousands of campaigns in flight cost one round trip per tick.
func (w *Worker) keepAlive(ctx context.Context) {
	t := time.NewTicker(w.hb)
	defer t.Stop()
	var (
		leases []store.Lease
		lost   []context.CancelCauseFunc
		beats  []*heartbeat
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if w.stalled.Load() > 0 {
			continue
		}
		leases, lost, beats = leases[:0], lost[:0], beats[:0]
		now := time.Now()
		w.beatsMu.Lock()
		for h := range w.beats {
			if h.msg != nil {
				_ = h.msg.InProgress()
			}
			h.mu.Lock()
			if h.lease != nil {
				if lapsed(now, h.valid) {
					// Not extended for a TTL (the store unreachable): the
					// lock may be someone else's by now.
					h.lost(store.ErrLockLost)
				} else {
					leases, lost, beats = append(leases, *h.lease), append(lost, h.lost), append(beats, h)
				}
			}
			h.mu.Unlock()
		}
		w.beatsMu.Unlock()
		if len(leases) == 0 {
			continue
		}
		ectx, cancel := context.WithTimeout(ctx, w.hb)
		errs := w.d.Store.ExtendAll(ectx, leases, w.cfg.LockTTL)
		cancel()
		for i, err := range errs {
			switch {
			case err == nil:
				beats[i].extended(leases[i], now)
			case errors.Is(err, store.ErrLockLost):
				lost[i](store.ErrLockLost)
			}
		}
	}
}

// handle processes one message from the consumer. work bounds the work
// itself; run ending means the worker is stopping (finish the current item,
// leave the rest to another instance).
func (w *Worker) handle(work, run context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		w.log.Error("message without metadata: terminated", "subject", msg.Subject(), "err", err)
		w.term(msg, "no metadata")
		return
	}
	work, span := w.startHandle(work, msg, meta)
	defer span.End()
	hb := w.startHeartbeat(work, msg)
	defer hb.stop()

	w.d.Metrics.CommandReceived(verbLabel(msg.Subject()))
	cmd, derr := events.DecodeCommand(msg.Subject(), msg.Headers(), msg.Data(), w.d.Workflows)
	it := events.InboxItem{Subject: msg.Subject(), Body: msg.Data(), Traceparent: tracing.Traceparent(work)}
	k := store.Key{Tenant: cmd.Tenant, Campaign: cmd.Campaign}
	var inv *events.InvalidCommand
	switch {
	case errors.As(derr, &inv):
		w.log.With(tracing.LogAttrs(work)...).Warn("invalid command: dead-lettered", "tenant_id", inv.Tenant, "campaign_id", inv.Campaign,
			"command_id", inv.ID, "subject", msg.Subject(), "reason", inv.Reason)
		if err := w.retry(work, "dead letter", func() error { return events.DeadLetterReceived(work, w.d.JS, msg, inv, meta.Sequence.Stream) }); err != nil {
			w.log.Error("dead letter failed: left for redelivery", "subject", msg.Subject(), "err", err)
			return
		}
		w.d.Metrics.CommandDeadLettered(verbLabel(msg.Subject()), metrics.DLQInvalid)
		if inv.Tenant == "" || inv.Campaign == "" || inv.ID == "" {
			w.term(msg, inv.Reason)
			return
		}
		// Parked too, so that an existing campaign records the rejection.
		it.ID, it.Invalid, it.Verb = inv.ID, inv.Reason, inv.Verb
		k = store.Key{Tenant: inv.Tenant, Campaign: inv.Campaign}
	case derr != nil:
		w.log.Error("decode command: left for redelivery", "subject", msg.Subject(), "err", derr)
		failSpan(span, derr)
		return
	default:
		it.ID = cmd.ID
	}
	data, err := events.EncodeInbox(it)
	if err != nil {
		w.log.Error("encode inbox item", "err", err)
		return
	}
	log := w.campaignLog(work, k, it.ID)
	if span.IsRecording() {
		span.SetAttributes(tracing.Campaign(k.Tenant, k.Campaign, it.ID)...)
	}
	si := store.Item{ID: it.ID, Seq: meta.Sequence.Stream, Data: data}
	var first *decoded // the command as decoded: not decoded again by the drain
	if derr == nil {
		first = &decoded{data: data, it: it, cmd: cmd}
	}
	for {
		err := w.park(work, run, hb, k, si, first)
		if errors.Is(err, store.ErrLockLost) && work.Err() == nil {
			log.Warn("campaign lock lost while draining: taking it again")
			w.d.Metrics.LockLost()
			continue
		}
		switch {
		case errors.Is(err, errCrash):
			log.Warn("injected crash", "err", err)
			failSpan(span, err)
			return
		case errors.Is(err, errStopping):
			if err := msg.NakWithDelay(time.Second); err != nil {
				log.Warn("nak failed: the message comes back after its ack wait", "err", err)
			}
			return
		case errors.Is(err, errBacksHolder):
			log.Info("message taken over by the campaign's lock holder: left to it")
			return
		case err != nil:
			log.Warn("left for redelivery", "err", err)
			failSpan(span, err)
			return
		}
		break
	}
	if err := w.fault(BeforeAck, k); err != nil {
		return
	}
	if inv != nil {
		w.term(msg, inv.Reason)
		return
	}
	if err := msg.Ack(); err != nil {
		// The command is durably parked or applied: a redelivery finds it
		// in the ledger or the inbox.
		log.Warn("ack failed: the message comes back and is absorbed by the ledger", "err", err)
	}
}

// term ends a message that must never be delivered again. Should the
// server refuse the reason, a plain Term still ends it: a message left
// unterminated would come back, and be dead-lettered again, until
// max_deliver.
func (w *Worker) term(msg jetstream.Msg, reason string) {
	err := msg.TermWithReason(events.BoundReason(reason))
	if err == nil {
		return
	}
	if err2 := msg.Term(); err2 != nil {
		w.log.Error("term failed: the message comes back", "subject", msg.Subject(), "err", errors.Join(err, err2))
		return
	}
	w.log.Warn("term with reason failed: terminated without it", "subject", msg.Subject(), "err", err)
}

// park puts the item in the campaign's inbox and, if that made this handler
// the lock holder, drains the inbox. It returns errBacksHolder when the
// lock's holder is backed by this very message.
func (w *Worker) park(work, run context.Context, hb *heartbeat, k store.Key, si store.Item, first *decoded) error {
	advance := first != nil && first.cmd.Verb == fsm.Advance
	var res store.Enqueued
	// One token for every retry: a retry after a lost reply finds its own lock.
	claim := store.Claim{Token: store.NewToken(), TTL: w.cfg.LockTTL}
	sent := time.Now() // no later than the lock's TTL starts
	if err := w.retry(work, "enqueue", func() (err error) {
		res, err = w.d.Store.Enqueue(work, k, si, claim)
		return err
	}); err != nil {
		return err
	}
	w.noteEnqueued(res, si)
	if res.Lease == nil {
		switch {
		case res.Held && res.HolderSeq == si.Seq:
			return errBacksHolder
		case res.Held && res.HolderSeq == 0 && !res.Duplicate && !advance:
			// A sweep holds the campaign (sweep.go): it will apply the
			// item, but this message stays the command's way to
			// max_deliver should applying it keep failing; its
			// redelivery finds it applied and acks it. (An advance is
			// acked: the sweep applies or drops it, and a lost one is
			// only stale.)
			return errBacksHolder
		}
		return nil // duplicate, or the lock holder will find it
	}
	return w.hold(work, run, hb, *res.Lease, sent, res.Snapshot, first)
}

// hold drains the campaign of lease l, taken by a request sent at sent,
// under hb's lock extension, from snap (nil: read it). first, when not nil,
// is the command the lease came with, as decoded.
func (w *Worker) hold(work, run context.Context, hb *heartbeat, l store.Lease, sent time.Time, snap *store.Snapshot, first *decoded) error {
	ctx, lost := context.WithCancelCause(work)
	defer lost(nil)
	hb.hold(&l, lost, sent.Add(w.cfg.LockTTL))
	defer hb.hold(nil, nil, time.Time{})
	ctx = events.WithPublishGuard(ctx, hb.check)
	err := w.drain(ctx, run, l, snap, first)
	if err == nil {
		return nil // released: a heartbeat that raced the release changes nothing
	}
	if cause := context.Cause(ctx); errors.Is(cause, store.ErrLockLost) {
		return cause
	}
	if run.Err() != nil && !errors.Is(err, errCrash) && !errors.Is(err, errStopping) {
		// Shutting down past the grace period (a step still running, say):
		// hand the campaign over now rather than after the lock's TTL. A
		// step call cut short is repeated with the same Idempotency-Key.
		return w.abandon(ctx, l, err)
	}
	return err
}

// abandon gives the campaign's lock up at shutdown and returns errStopping
// (nak: another instance takes over at once). If the lock cannot be given up
// it returns a plain error instead: the message must then come back only
// after its ack wait, when the lock has expired, or the redelivery would find
// the lock held, leave the inbox to a holder that is gone, and be acked.
func (w *Worker) abandon(ctx context.Context, l store.Lease, cause error) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if err := w.d.Store.Abandon(actx, l); err != nil {
		return fmt.Errorf("stopping, lock of %s not given up (%v): left to expire", l.Key, err)
	}
	if cause == nil {
		return errStopping
	}
	return fmt.Errorf("%w: %v", errStopping, cause)
}

// retry runs op until it succeeds, ctx ends, or it fails with an error that
// retrying cannot fix (lock lost, conflict, injected crash). Transient
// failures (the store or NATS unreachable) back off up to 2 s; they are
// logged once, then every 10 s while they last, naming what was tried.
func (w *Worker) retry(ctx context.Context, what string, op func() error) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 50 * time.Millisecond
	b.MaxInterval = 2 * time.Second
	var logged time.Time
	for n := 1; ; n++ {
		err := op()
		if err == nil {
			if !logged.IsZero() {
				w.log.Info("recovered", "op", what, "attempts", n)
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w (last error: %v)", what, context.Cause(ctx), err)
		}
		if permanent(err) {
			return err
		}
		if time.Since(logged) > 10*time.Second {
			w.log.Warn("retrying", "op", what, "attempt", n, "err", err)
			logged = time.Now()
		}
		sleep(ctx, b.NextBackOff())
	}
}

func permanent(err error) bool {
	var inv *events.InvalidCommand
	return errors.Is(err, store.ErrLockLost) || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotHead) || errors.Is(err, errCrash) ||
		errors.Is(err, events.ErrSequenceGap) || errors.Is(err, events.ErrInvalidEvent) || errors.Is(err, events.ErrEventConflict) ||
		errors.Is(err, store.ErrNotFound) || errors.As(err, &inv)
}
