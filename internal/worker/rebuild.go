package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/metrics"
	"github.com/campaign-orchestrator/orchestrator/internal/rebuild"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
)

// A campaign whose state the store lost (Redis restarted empty, a failover
// before replication) keeps its history in CAMPAIGN_EVENTS. CONTRACT
// guarantee 8: it is rebuilt from that history, never treated as new, and
// its fencing tokens stay above every fence the history shows. The worker
// rebuilds one when a command meets it (meetMissing); `orchestrator
// rebuild` rebuilds every one (InstallHistory). The check costs one direct
// get of the campaign's last event, made only when the store has no state
// for the campaign: for a create (which made that very get before, to
// refuse a reused id) and for a command of an unknown campaign, never for a
// command of a campaign the store holds.

// Installer is the store method a rebuild needs.
type Installer interface {
	Install(ctx context.Context, in store.Install) (store.Installed, error)
}

var _ Installer = store.Store(nil)

// Rebuilt is what InstallHistory did.
type Rebuilt struct {
	// Campaign is the campaign the history describes.
	Campaign rebuild.Campaign
	// Store is the store's answer (nothing written when it says so).
	Store store.Installed
}

// InstallHistory rebuilds a campaign from evs, its whole history in
// sequence order (events.History), and installs it in the store (see
// store.Store.Install): its state, its ledger, its fence floor and, when it
// is running, the advance it expects as its durable trigger (parked first
// when its step was in flight, behind the stream's commands otherwise, as
// the lock holder parks it). lease is the caller's lock on the campaign, or
// nil. Errors wrap rebuild.ErrHistory for a history that cannot be rebuilt.
func InstallHistory(ctx context.Context, s Installer, evs []events.CloudEvent, lease *store.Lease) (Rebuilt, error) {
	rb, err := rebuild.Rebuild(evs)
	if err != nil {
		return Rebuilt{}, err
	}
	return install(ctx, s, rb, lease, store.NewToken())
}

// install installs rb (see InstallHistory) with the install id id.
func install(ctx context.Context, s Installer, rb rebuild.Campaign, lease *store.Lease, id string) (Rebuilt, error) {
	c := rb.Campaign
	in := store.Install{ID: id, Campaign: c, Applied: rb.Applied, Lease: lease}
	if rb.Pending {
		trigger, err := advance(c, "")
		if err != nil {
			return Rebuilt{}, fmt.Errorf("rebuild %s/%s: trigger: %w", c.Tenant, c.ID, err)
		}
		if c.InFlight {
			trigger.Seq = 0 // its step is in flight: first, whatever was parked meanwhile
		}
		in.Park = []store.Item{trigger}
	}
	res, err := s.Install(ctx, in)
	if err != nil {
		return Rebuilt{}, fmt.Errorf("rebuild %s/%s: %w", c.Tenant, c.ID, err)
	}
	return Rebuilt{Campaign: rb, Store: res}, nil
}

// meetMissing runs when the store has no state for the campaign of the
// inbox item si (cmd, decoded): it looks for the campaign's history and,
// when there is one, rebuilds the campaign under the drainer's lock. It
// reports done when it dealt with si itself; then the error is the
// drainer's to return (store.ErrNotHead: start again from the inbox's head,
// now with the rebuilt campaign). Not done, the campaign is new (a create)
// or unknown, as before.
func (d *drainer) meetMissing(ctx context.Context, it events.InboxItem, si store.Item, cmd fsm.Command) (done bool, err error) {
	w := d.w
	log := w.campaignLog(ctx, d.k, it.ID)
	missingAt := time.Now()
	var used bool
	if err := w.retry(ctx, "read last event", func() (err error) {
		_, used, err = w.events.Last(ctx, d.k.Tenant, d.k.Campaign)
		return err
	}); errors.Is(err, events.ErrInvalidEvent) {
		return true, d.unrebuildable(ctx, log, it, si, cmd, err)
	} else if err != nil {
		return true, err
	}
	if !used {
		return false, nil
	}
	// A campaign that ended longer ago than the retention expired from the
	// store: its history outlives it, and nothing was lost (no wait, no
	// loss epoch).
	if w.cfg.Retention > 0 {
		if rb, _, err := d.readHistory(ctx); err == nil {
			if at, ends := store.ExpiresAt(rb.Campaign, w.cfg.Retention); ends && !time.Now().Before(at) {
				return d.expired(ctx, log, it, si, cmd)
			}
		}
	}
	// A holder that outlived the loss may still publish the event of a
	// write the store lost: wait until it cannot (it publishes nothing once
	// its lock may have expired), so that the history read below has it.
	// Only here, for a campaign whose state is gone and whose history is
	// not: never on the path of a campaign the store holds.
	until, err := w.rebuildDeadline(ctx, missingAt)
	if err != nil {
		return true, err
	}
	wait := max(time.Until(until), 0)
	log.Warn("campaign state missing but its history is kept: rebuilding it once any holder from before the loss has stopped", "verb", cmd.Verb, "wait", wait.Round(time.Millisecond))
	sleep(ctx, wait)
	if ctx.Err() != nil {
		return true, fmt.Errorf("rebuild %s: %w", d.k, context.Cause(ctx))
	}
	rb, evs, err := d.readHistory(ctx)
	if errors.Is(err, rebuild.ErrHistory) || errors.Is(err, events.ErrInvalidEvent) {
		return true, d.unrebuildable(ctx, log, it, si, cmd, err)
	}
	if err != nil {
		return true, err
	}
	// One install id for every retry: a retry after a lost reply finds its install.
	var res Rebuilt
	id := store.NewToken()
	err = w.retry(ctx, "install rebuilt campaign", func() (err error) {
		res, err = install(ctx, w.d.Store, rb, &d.l, id)
		return err
	})
	switch {
	case err != nil:
		return true, err
	case res.Store.Expired:
		return d.expired(ctx, log, it, si, cmd)
	case !res.Store.Installed:
		// Rebuilt meanwhile by someone else (orchestrator rebuild), with a
		// fence floor this lease may be below: take the lock again.
		log.Info("campaign state rebuilt by another process meanwhile: taking the lock again")
		if err := w.d.Store.Abandon(ctx, d.l); err != nil {
			return true, fmt.Errorf("rebuild %s: give the lock up: %w", d.k, err)
		}
		return true, fmt.Errorf("rebuild %s: installed by another process: %w", d.k, store.ErrLockLost)
	}
	c := res.Campaign.Campaign
	d.l.Fence = res.Store.Fence
	d.cur = &c
	log.Warn("campaign state was missing: rebuilt from its history", "events", len(evs), "state", c.State,
		"fence_floor", res.Campaign.FenceFloor, "fence", res.Store.Fence, "ledger", len(res.Campaign.Applied), "pending", res.Campaign.Pending)
	w.d.Metrics.CampaignRebuilt()
	if err := d.readInbox(ctx); err != nil {
		return true, err
	}
	return true, store.ErrNotHead
}

// expired deals with a command of a campaign that ended and expired from
// the store (CAMPAIGN_RETENTION) while its events outlive it: a create must
// not mix a second history into the first (dead-lettered); any other
// command is for an unknown campaign (not done: dead-lettered as such).
func (d *drainer) expired(ctx context.Context, log *slog.Logger, it events.InboxItem, si store.Item, cmd fsm.Command) (bool, error) {
	if cmd.Verb != fsm.Create {
		return false, nil
	}
	log.Warn("create of a campaign id whose history is still kept: dead-lettered")
	if err := d.deadLetter(ctx, it, si.Seq, invalid(cmd, "campaign id already used: its history is still in "+events.StreamEvents), metrics.DLQInvalid); err != nil {
		return true, err
	}
	return true, d.settle(ctx, si.ID)
}

// maxHistoryReads bounds how often readHistory reads a history that keeps
// growing under it.
const maxHistoryReads = 5

// readHistory reads the campaign's history from the stream's leader and
// rebuilds it, then reads the last event again: should the history have
// grown meanwhile (a publish of a holder from before the loss landing
// late), it reads it again. Errors wrap rebuild.ErrHistory or
// events.ErrInvalidEvent for a history that cannot be rebuilt.
func (d *drainer) readHistory(ctx context.Context) (rebuild.Campaign, []events.CloudEvent, error) {
	w := d.w
	for range maxHistoryReads {
		var evs []events.CloudEvent
		if err := w.retry(ctx, "read history", func() (err error) {
			evs, err = w.events.LeaderHistory(ctx, d.k.Tenant, d.k.Campaign)
			return err
		}); err != nil {
			return rebuild.Campaign{}, nil, err
		}
		rb, err := rebuild.Rebuild(evs)
		if err != nil {
			return rebuild.Campaign{}, nil, err
		}
		var last events.CloudEvent
		if err := w.retry(ctx, "read last event", func() (err error) {
			last, _, err = w.events.LastEvent(ctx, d.k.Tenant, d.k.Campaign)
			return err
		}); err != nil {
			return rebuild.Campaign{}, nil, err
		}
		if last.Seq() == rb.Campaign.Seq && last.ID == evs[len(evs)-1].ID {
			return rb, evs, nil
		}
		w.campaignLog(ctx, d.k, "").Warn("campaign history grew while it was read: reading it again", "read", rb.Campaign.Seq, "last", last.Seq())
	}
	return rebuild.Campaign{}, nil, fmt.Errorf("rebuild %s: its history kept growing over %d reads", d.k, maxHistoryReads)
}

// lossEpochName names the store Secret that marks one life of the store's
// data: a store that lost its data lost it too, and the first worker that
// meets a lost campaign afterwards stores a new one.
const lossEpochName = "loss-epoch"

// rebuildDeadline returns when a campaign whose state was found missing at
// missingAt may be rebuilt: RebuildWait after this worker first met the
// loss, by when every holder from before it has stopped publishing (each
// stops once its lock may have expired, at most LockTTL after the loss,
// which came before any campaign was found missing). One loss is waited
// out once, not once per campaign: the store's loss epoch says whether a
// missing state belongs to the loss this worker met before (same epoch)
// or to a newer one (another epoch, or none yet: a new wait from
// missingAt). A store that lost only part of its data (an evicted key)
// may keep its epoch: the rebuild then goes on at once, and a late event
// of a holder from before is refused by the publisher's comparison
// (events.ErrEventConflict), not stored twice.
func (w *Worker) rebuildDeadline(ctx context.Context, missingAt time.Time) (time.Time, error) {
	candidate := []byte(store.NewToken())
	var epoch []byte
	if err := w.retry(ctx, "read the store's loss epoch", func() (err error) {
		epoch, err = w.d.Store.Secret(ctx, lossEpochName, candidate)
		return err
	}); err != nil {
		return time.Time{}, err
	}
	w.lossMu.Lock()
	defer w.lossMu.Unlock()
	if string(epoch) != w.lossEpoch {
		w.lossEpoch, w.lossSeen = string(epoch), missingAt
	}
	return w.lossSeen.Add(w.cfg.RebuildWait), nil
}

// unrebuildable dead-letters si, a command of a campaign whose state is
// lost and whose history cannot be rebuilt (why: err): never applied as
// new, never left to block the campaign's inbox.
func (d *drainer) unrebuildable(ctx context.Context, log *slog.Logger, it events.InboxItem, si store.Item, cmd fsm.Command, err error) error {
	log.Error("campaign state missing and its history cannot be rebuilt: command dead-lettered", "verb", cmd.Verb, "err", err)
	if err := d.deadLetter(ctx, it, si.Seq, invalid(cmd, "campaign state lost and its history cannot be rebuilt: "+err.Error()), metrics.DLQInvalid); err != nil {
		return err
	}
	return d.settle(ctx, si.ID)
}
