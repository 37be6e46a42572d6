package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/store"
)

// strandedPage is how many campaigns one Stranded call returns, and
// rescuesAtOnce how many a sweep drains at once (one that takes long, a
// long workflow say, does not hold the others up).
const (
	strandedPage  = 100
	rescuesAtOnce = 8
)

// sweep takes over, every SweepEvery, the campaigns that have work waiting
// (inbox or outbox) and no lock holder. Such a campaign normally comes back
// through the redelivery of an unacknowledged message; but a handler frozen
// past the ack wait can still acknowledge a message after it was redelivered
// (JetStream accepts an ack from an older delivery, and no check before the
// ack can rule a freeze out), and max_deliver can use the backing message
// up. The sweep makes progress independent of any one message: it takes the
// lock backed by no message (store.Take) and drains like a handler. The
// first sweep runs at start-up, which also recovers what a crash left.
func (w *Worker) sweep(work, run context.Context) {
	t := time.NewTicker(w.cfg.SweepEvery)
	defer t.Stop()
	for {
		if w.ready.Load() && w.stalled.Load() == 0 {
			w.sweepOnce(work, run)
		}
		select {
		case <-run.Done():
			return
		case <-t.C:
		}
	}
}

func (w *Worker) sweepOnce(work, run context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, rescuesAtOnce)
	cursor := ""
	for run.Err() == nil {
		keys, next, err := w.d.Store.Stranded(run, cursor, strandedPage)
		if err != nil {
			w.log.Debug("sweep for stranded campaigns failed", "err", err)
			return
		}
		for _, k := range keys {
			select {
			case sem <- struct{}{}:
			case <-run.Done():
				return
			}
			wg.Go(func() {
				defer func() { <-sem }()
				w.rescue(work, run, k)
			})
		}
		if cursor = next; cursor == "" {
			return
		}
	}
}

// rescue takes the lock of a stranded campaign and drains it.
func (w *Worker) rescue(work, run context.Context, k store.Key) {
	claim := store.Claim{Token: store.NewToken(), TTL: w.cfg.LockTTL}
	sent := time.Now() // no later than the lock's TTL starts
	var l *store.Lease
	if err := w.retry(run, "take", func() (err error) { l, err = w.d.Store.Take(run, k, claim); return err }); err != nil || l == nil {
		return // taken by someone else meanwhile, or the store is down: the next sweep looks again
	}
	log := w.campaignLog(work, k, "")
	log.Info("campaign with work waiting and no holder: taken over")
	w.d.Metrics.LockAcquired()
	hb := w.startHeartbeat(work, nil)
	defer hb.stop()
	switch err := w.hold(work, run, hb, *l, sent, nil, nil); {
	case err == nil:
	case errors.Is(err, store.ErrLockLost):
		log.Info("stranded campaign taken over by another holder meanwhile")
	default:
		log.Warn("stranded campaign left for the next sweep", "err", err)
	}
}
