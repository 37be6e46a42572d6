package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
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
		if errors.Is(err, events.ErrEventConflict) {
			// Not a fault of this holder, and not one that goes away: the
			// store's state is behind the history. Said loudly, counted
			// and alerted on; the outbox is kept for the operator.
			w.d.Metrics.EventConflict()
			if errors.Is(err, events.ErrInvalidEvent) {
				w.campaignLog(ctx, d.k, "").Error("campaign's history holds a message that is not one of its events: it stops until the message is removed (README, Operations)", "err", err)
			} else {
				w.campaignLog(ctx, d.k, "").Error("campaign's store state is behind its history: it stops until repaired (orchestrator rebuild --campaign after removing its state; README, Operations)", "err", err)
			}
		}
		return fmt.Errorf("publish events of %s: %w", d.k, err)
	}
	if err := w.fault(AfterPublish, d.k); err != nil {
		return err
	}
	d.sent = len(d.outbox)
	return nil
}
