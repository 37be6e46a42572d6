package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
	"github.com/campaign-orchestrator/orchestrator/internal/connect"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/rebuild"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/worker"
)

const rebuildHelp = `
Rebuilds, from their history in CAMPAIGN_EVENTS, the campaigns whose state
the Redis store lost (Redis restarted without persistence, a failover before
replication): state, ledger of applied command ids, and a fencing counter
above every fence the history shows; a running campaign gets its next
advance parked, so that the workers' sweep picks it up. Campaigns the store
holds are skipped, never overwritten; one that ended longer ago than
CAMPAIGN_RETENTION had expired, and is left so.

It reads the whole stream (or, with --tenant and --campaign, only those
campaigns' events) once, in stream order, and keeps each campaign's events
in memory until it is rebuilt. Workers also rebuild a campaign themselves
when one of its commands arrives; run this after a loss so that campaigns
with no command coming (idle, or running with their trigger lost) are
right too. --dry-run says what it would rebuild and writes nothing. It
exits 1 if any campaign could not be rebuilt, naming why (a history whose
campaign.created aged out of the stream, an event the service did not
write).

Before it installs anything it waits --wait (LOCK_TTL plus a margin) from
when it found the states missing: a worker that held a campaign's lock when
Redis lost it may still publish the event of a write Redis lost, until its
lock's TTL has passed. Right before installing each campaign it reads the
campaign's last event again from the stream's leader, and reads its history
again should it have grown.`

// rebuildCmd is `orchestrator rebuild`.
func rebuildCmd(ctx context.Context, args []string, e *cmdEnv) error {
	c := newCommand("rebuild", "[--tenant T] [--campaign C] [--dry-run] [flags]", rebuildHelp, e.stdout, e.stderr)
	set := c.settings(e.getenv)
	natsCfg := config.NATSFlags(set, defaultNATSURL)
	redisCfg := config.RedisFlags(set)
	retention := config.RetentionFlags(set)
	lockTTL := config.LockTTLFlags(set)
	wait := c.fs.Duration("wait", 0, "how long to wait, from finding the states missing, before installing them (0: LOCK_TTL + max(2s, LOCK_TTL/4))")
	tenant := c.fs.String("tenant", "", "only this tenant's campaigns")
	campaign := c.fs.String("campaign", "", "only campaigns with this id")
	dryRun := c.fs.Bool("dry-run", false, "print what would be rebuilt; write nothing")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return c.usageErr("unexpected %q", pos[0])
	}
	for _, tok := range []string{*tenant, *campaign} {
		if tok != "" && !events.ValidToken(tok) {
			return c.usageErr("%q is not a tenant or campaign id", tok)
		}
	}
	if !redisCfg.Configured() {
		return errors.New("rebuild: no Redis configured (REDIS_URL, or Sentinel or Cluster): the in-process store lives in its serve process, whose workers rebuild campaigns as they meet them")
	}
	nc, js, err := connectOps(natsCfg, "orchestrator-rebuild")
	if err != nil {
		return err
	}
	defer nc.Close()
	client, err := connect.Redis(*redisCfg)
	if err != nil {
		return err
	}
	st, err := store.NewRedisClient(ctx, client, store.Options{Retention: *retention})
	if err != nil {
		return connect.ExplainRedis(*redisCfg, err)
	}
	defer st.Close()
	if *wait <= 0 {
		*wait = *lockTTL + max(2*time.Second, *lockTTL/4)
	}
	sum, err := rebuildAll(ctx, js, st, campaignFilter(*tenant, *campaign), rebuildOpts{dryRun: *dryRun, wait: *wait}, e.stdout)
	verb := "rebuilt"
	if *dryRun {
		verb = "would rebuild"
	}
	fmt.Fprintf(e.stdout, "%s %d, skipped %d (state present), expired %d, failed %d; fence floors raised on %d (highest %d)\n",
		verb, sum.rebuilt, sum.skipped, sum.expired, sum.failed, sum.floors, sum.highest)
	if err != nil {
		return err
	}
	if sum.failed > 0 {
		return fmt.Errorf("rebuild: %d campaign(s) could not be rebuilt", sum.failed)
	}
	return nil
}

// campaignFilter is the subject filter of the campaigns' events.
func campaignFilter(tenant, campaign string) string {
	if tenant == "" {
		tenant = "*"
	}
	if campaign == "" {
		campaign = "*"
	}
	return "campaign.evt." + tenant + "." + campaign + ".>"
}

// rebuildSummary counts what rebuildAll did.
type rebuildSummary struct {
	rebuilt, skipped, expired, failed int
	floors                            int    // rebuilt campaigns whose history shows a fence
	highest                           uint64 // the highest of those fences
}

// rebuildOpts tunes rebuildAll.
type rebuildOpts struct {
	dryRun bool
	// wait is how long to wait, from finding the states missing, before
	// installing: any holder from before the loss has stopped publishing
	// by then (worker.Config.RebuildWait).
	wait time.Duration
}

// beforeInstall, when set (by tests), runs right before the last check of a
// campaign's history.
var beforeInstall func(store.Key)

// maxHistoryReads bounds how often a campaign's history is read again
// because it grew under the rebuild.
const maxHistoryReads = 5

// rebuildAll reads the events matching filter and rebuilds each campaign
// the store has no state for, printing a line per campaign it rebuilds or
// cannot. It returns an error only when it cannot go on (NATS or Redis
// unreachable); a campaign that cannot be rebuilt counts as failed.
func rebuildAll(ctx context.Context, js jetstream.JetStream, st store.Store, filter string, o rebuildOpts, out io.Writer) (rebuildSummary, error) {
	var sum rebuildSummary
	byKey, order, bad, err := readCampaigns(ctx, js, filter)
	if err != nil {
		return sum, err
	}
	for k, why := range bad {
		fmt.Fprintf(out, "failed %s: %v\n", k, why)
		sum.failed++
	}
	var missing []store.Key
	for _, k := range order {
		if bad[k] != nil {
			continue
		}
		_, err := st.Load(ctx, k)
		switch {
		case err == nil:
			sum.skipped++
			continue
		case !errors.Is(err, store.ErrNotFound):
			return sum, fmt.Errorf("rebuild %s: %w", k, err)
		}
		missing = append(missing, k)
	}
	if o.dryRun {
		for _, k := range missing {
			evs := byKey[k]
			rb, err := rebuild.Rebuild(evs)
			if err != nil {
				fmt.Fprintf(out, "failed %s: %v\n", k, err)
				sum.failed++
				continue
			}
			fmt.Fprintf(out, "would rebuild %s: %s, %d events, fence floor %d\n", k, rb.Campaign.State, len(evs), rb.FenceFloor)
			sum.count(rb.FenceFloor)
		}
		return sum, nil
	}
	if len(missing) > 0 && o.wait > 0 {
		fmt.Fprintf(out, "%d campaign(s) without state: waiting %s for any lock holder from before the loss to stop\n", len(missing), o.wait)
		select {
		case <-ctx.Done():
			return sum, ctx.Err()
		case <-time.After(o.wait):
		}
	}
	for _, k := range missing {
		evs, err := recheck(ctx, js, k, byKey[k])
		if err != nil {
			if errors.Is(err, rebuild.ErrHistory) || errors.Is(err, events.ErrInvalidEvent) {
				fmt.Fprintf(out, "failed %s: %v\n", k, err)
				sum.failed++
				continue
			}
			return sum, err
		}
		res, err := worker.InstallHistory(ctx, st, evs, nil)
		switch {
		case errors.Is(err, rebuild.ErrHistory):
			fmt.Fprintf(out, "failed %s: %v\n", k, err)
			sum.failed++
			continue
		case err != nil:
			return sum, err
		case res.Store.Expired:
			sum.expired++
			continue
		case !res.Store.Installed:
			sum.skipped++ // written meanwhile (a worker met it)
			continue
		}
		c := res.Campaign.Campaign
		trigger := ""
		if res.Campaign.Pending {
			trigger = ", next advance parked"
		}
		fmt.Fprintf(out, "rebuilt %s: %s at step %d/%d, %d events, %d command ids, fence floor %d%s\n",
			k, c.State, c.Step, len(c.Workflow.Steps), len(evs), len(res.Campaign.Applied), res.Campaign.FenceFloor, trigger)
		sum.count(res.Campaign.FenceFloor)
	}
	return sum, nil
}

// recheck returns the campaign's history to install: evs, read at the
// start, if the campaign's last event (read now from the stream's leader)
// is still evs' last; else the history read again from the leader, until
// it stops growing. Errors wrap rebuild.ErrHistory or events.ErrInvalidEvent
// for a history that cannot be used.
func recheck(ctx context.Context, js jetstream.JetStream, k store.Key, evs []events.CloudEvent) ([]events.CloudEvent, error) {
	for range maxHistoryReads {
		if len(evs) == 0 {
			return nil, fmt.Errorf("%w: no events", rebuild.ErrHistory)
		}
		if beforeInstall != nil {
			beforeInstall(k)
		}
		last, ok, err := events.LastEvent(ctx, js, k.Tenant, k.Campaign)
		if err != nil {
			return nil, fmt.Errorf("rebuild %s: %w", k, err)
		}
		if ok && last.ID == evs[len(evs)-1].ID && last.Sequence == evs[len(evs)-1].Sequence {
			return evs, nil
		}
		if evs, err = events.LeaderHistory(ctx, js, k.Tenant, k.Campaign); err != nil {
			return nil, fmt.Errorf("rebuild %s: %w", k, err)
		}
	}
	return nil, fmt.Errorf("%w: %s: its history kept growing over %d reads", rebuild.ErrHistory, k, maxHistoryReads)
}

func (s *rebuildSummary) count(floor uint64) {
	s.rebuilt++
	if floor > 0 {
		s.floors++
		s.highest = max(s.highest, floor)
	}
}

// readCampaigns reads every event matching filter from CAMPAIGN_EVENTS
// with an ordered consumer, grouped by campaign (each in sequence order:
// stream order), the campaigns in the order of their first event. An event
// that does not decode marks its campaign bad.
func readCampaigns(ctx context.Context, js jetstream.JetStream, filter string) (map[store.Key][]events.CloudEvent, []store.Key, map[store.Key]error, error) {
	stream, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("rebuild: stream %s: %w", events.StreamEvents, err)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("rebuild: read %s: %w", events.StreamEvents, err)
	}
	// Its own deadline: a request the server refuses (a user without the
	// right to it) is never answered, and ctx may have none.
	ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
	info, err := cons.Info(ictx)
	cancel()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("rebuild: read %s: %w", events.StreamEvents, err)
	}
	byKey := map[store.Key][]events.CloudEvent{}
	bad := map[store.Key]error{}
	var order []store.Key
	for pending := info.NumPending; pending > 0; {
		// No more than pending: a fetch returns once it has them all.
		batch, err := cons.Fetch(int(min(pending, 512)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("rebuild: read %s: %w", events.StreamEvents, err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			if meta, err := msg.Metadata(); err == nil {
				pending = meta.NumPending
			}
			tenant, campaign, ok := events.ParseEventSubject(msg.Subject())
			if !ok {
				continue
			}
			k := store.Key{Tenant: tenant, Campaign: campaign}
			if _, seen := byKey[k]; !seen {
				order = append(order, k)
				byKey[k] = nil
			}
			ev, err := events.ParseEvent(msg.Data())
			if err != nil {
				if bad[k] == nil {
					bad[k] = err
				}
				continue
			}
			byKey[k] = append(byKey[k], ev)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return nil, nil, nil, fmt.Errorf("rebuild: read %s: %w", events.StreamEvents, err)
		}
		if n == 0 {
			return nil, nil, nil, fmt.Errorf("rebuild: read %s: nothing delivered with %d events pending", events.StreamEvents, pending)
		}
	}
	return byKey, order, bad, nil
}
