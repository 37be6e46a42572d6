package store_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/store/redistest"
	"github.com/campaign-orchestrator/orchestrator/internal/workflow"
)

// benchTTL is the lock TTL of the benchmarks: long enough never to expire
// during one.
const benchTTL = time.Hour

// benchKey is the campaign every store benchmark works on.
var benchKey = store.Key{Tenant: "acme", Campaign: "spring"}

// benchStores runs bench on the in-process store and on a Redis store (a
// private redis-server, or REDIS_URL's, under a random key prefix), each new
// for every run of bench.
func benchStores(b *testing.B, bench func(b *testing.B, s store.Store)) {
	url, _ := redistest.Start(b)
	b.Run("memory", func(b *testing.B) {
		s := store.NewMemory(store.Options{})
		b.Cleanup(func() { _ = s.Close() })
		bench(b, s)
	})
	b.Run("redis", func(b *testing.B) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		prefix := redistest.Prefix(b)
		s, err := store.NewRedis(ctx, url, store.Options{Prefix: prefix})
		if err != nil {
			b.Fatalf("NewRedis: %v", err)
		}
		b.Cleanup(func() {
			// On a shared server (REDIS_URL), leave nothing behind.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			iter := s.Client().Scan(ctx, 0, prefix+":*", 1000).Iterator()
			for iter.Next(ctx) {
				s.Client().Unlink(ctx, iter.Val())
			}
			_ = s.Close()
		})
		bench(b, s)
	})
}

// lockCycle is one command handled: Enqueue takes the lock with the
// snapshot, CommitRead writes the next version of the campaign with the
// command applied and dequeued and one event in the outbox, Release trims
// that event (published) and frees the lock. It returns the campaign
// written.
type lockCycle struct {
	s        store.Store
	k        store.Key
	campaign *fsm.Campaign // the stored campaign, nil before the first cycle
	n        uint64        // commands so far: the next item's Seq is n+1
}

// newLockCycle returns the cycle of k's campaign.
func newLockCycle(s store.Store, k store.Key) *lockCycle { return &lockCycle{s: s, k: k} }

// benchCampaign is the first version of k's campaign: a create-and-start of
// the standard workflow.
func benchCampaign(b *testing.B, k store.Key) *fsm.Campaign {
	wf := workflow.Standard("http://127.0.0.1:8081")
	r, err := fsm.Apply(nil, fsm.Command{
		ID: "cmd-0", Verb: fsm.Create, Tenant: k.Tenant, Campaign: k.Campaign,
		Create:   &fsm.CreatePayload{Name: "Spring sale", Params: json.RawMessage(`{"list":"vip"}`), Start: true},
		Workflow: &wf,
	}, time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC))
	if err != nil {
		b.Fatal(err)
	}
	c := r.Campaign
	return &c
}

// item is the cycle's next command.
func (lc *lockCycle) item() store.Item {
	id := "cmd-" + strconv.FormatUint(lc.n+1, 10)
	return store.Item{ID: id, Seq: lc.n + 1, Data: []byte(`{"id":"` + id + `","type":"advance","tenant_id":"acme","campaign_id":"spring","payload":{"step":0,"run":1,"version":3}}`)}
}

// event is the outbox message of the cycle's command.
func (lc *lockCycle) event() store.Message {
	seq := strconv.FormatUint(lc.n+1, 10)
	// As internal/events encodes an event for the outbox.
	data := []byte(`{"specversion":"1.0","id":"acme/spring/` + seq + `","type":"campaign.step.started","data":{"step":"validate","run":1,"attempt":1}}`)
	return store.Message(`{"subject":"campaign.evt.acme.spring.step.started","header":{"Command-Id":"cmd-` + seq + `","Nats-Msg-Id":"acme/spring/` + seq + `"},"data":"` + base64.StdEncoding.EncodeToString(data) + `"}`)
}

// write is the commit of the cycle's command under l: the next version of
// the campaign (the first when there is none yet).
func (lc *lockCycle) write(b *testing.B, l store.Lease, it store.Item, ev store.Message) store.Write {
	var c fsm.Campaign
	if lc.campaign == nil {
		c = *benchCampaign(b, lc.k)
	} else {
		c = *lc.campaign
		c.Version++
		c.Seq++
	}
	return store.Write{Lease: l, Campaign: &c, Outbox: []store.Message{ev}, Applied: []string{it.ID}, Dequeue: []string{it.ID}, Head: it.ID}
}

// enqueue takes the lock for the cycle's next command.
func (lc *lockCycle) enqueue(b *testing.B, ctx context.Context) (store.Item, store.Lease) {
	it := lc.item()
	res, err := lc.s.Enqueue(ctx, lc.k, it, store.Claim{Token: store.NewToken(), TTL: benchTTL})
	if err != nil || res.Lease == nil || res.Snapshot == nil {
		b.Fatalf("Enqueue %s = %+v, %v; want the lock", it.ID, res, err)
	}
	return it, *res.Lease
}

// commit writes the cycle's command under l.
func (lc *lockCycle) commit(b *testing.B, ctx context.Context, l store.Lease, it store.Item) store.Message {
	ev := lc.event()
	w := lc.write(b, l, it, ev)
	items, err := lc.s.CommitRead(ctx, w)
	if err != nil || len(items) != 0 {
		b.Fatalf("CommitRead %s = %d items, %v", it.ID, len(items), err)
	}
	lc.campaign = w.Campaign
	lc.n++
	return ev
}

// release frees the lock, trimming the published event.
func (lc *lockCycle) release(b *testing.B, ctx context.Context, l store.Lease, ev store.Message) {
	if ok, err := lc.s.Release(ctx, l, []store.Message{ev}); err != nil || !ok {
		b.Fatalf("Release = %v, %v; want true", ok, err)
	}
}

// run makes one whole cycle.
func (lc *lockCycle) run(b *testing.B, ctx context.Context) {
	it, l := lc.enqueue(b, ctx)
	lc.release(b, ctx, l, lc.commit(b, ctx, l, it))
}

// BenchmarkLockCycle measures one command's store round trips:
// Enqueue (taking the lock, with the snapshot) → CommitRead (state, ledger,
// dequeue, one outbox message) → Release (trim the message, free the lock).
func BenchmarkLockCycle(b *testing.B) {
	benchStores(b, func(b *testing.B, s store.Store) {
		ctx := context.Background()
		lc := newLockCycle(s, benchKey)
		lc.run(b, ctx) // asserts each step; creates the campaign
		b.ReportAllocs()
		for b.Loop() {
			it := lc.item()
			res, _ := s.Enqueue(ctx, benchKey, it, store.Claim{Token: store.NewToken(), TTL: benchTTL})
			ev := lc.event()
			w := lc.write(b, *res.Lease, it, ev)
			_, _ = s.CommitRead(ctx, w)
			lc.campaign = w.Campaign
			lc.n++
			_, _ = s.Release(ctx, *res.Lease, []store.Message{ev})
		}
		b.StopTimer()
		lc.run(b, ctx) // the loop left the store as it found it
	})
}

// benchBatch is how many campaigns BenchmarkEnqueue and BenchmarkRelease
// prepare at a time off the clock (stopping the timer for each iteration
// would cost more than the in-process store's operation).
const benchBatch = 128

// benchCycles returns n cycles of distinct campaigns, each run once.
func benchCycles(b *testing.B, ctx context.Context, s store.Store, n int) []*lockCycle {
	cycles := make([]*lockCycle, n)
	for i := range cycles {
		cycles[i] = newLockCycle(s, store.Key{Tenant: benchKey.Tenant, Campaign: fmt.Sprintf("c%d", i)})
		cycles[i].run(b, ctx)
	}
	return cycles
}

// BenchmarkEnqueue measures Enqueue of a command for a stored campaign whose
// lock is free: it takes the lock and returns the snapshot (the campaign and
// the command in its inbox). It goes round benchBatch campaigns; their locks
// are abandoned again, off the clock, after each round. The commands stay
// the same (already in their inbox: not added again).
func BenchmarkEnqueue(b *testing.B) {
	benchStores(b, func(b *testing.B, s store.Store) {
		ctx := context.Background()
		cycles := benchCycles(b, ctx, s, benchBatch)
		items := make([]store.Item, len(cycles))
		leases := make([]store.Lease, len(cycles))
		for i, lc := range cycles {
			items[i] = lc.item()
			res, err := s.Enqueue(ctx, lc.k, items[i], store.Claim{Token: store.NewToken(), TTL: benchTTL})
			if err != nil || res.Lease == nil || res.Snapshot == nil || res.Snapshot.Campaign == nil ||
				res.Snapshot.Campaign.Version != lc.campaign.Version || len(res.Snapshot.Inbox) != 1 || res.Snapshot.Inbox[0].ID != items[i].ID {
				b.Fatalf("Enqueue = %+v, %v; want the lock and the snapshot", res, err)
			}
			leases[i] = *res.Lease
		}
		abandon := func(n int) {
			for _, l := range leases[:n] {
				if err := s.Abandon(ctx, l); err != nil {
					b.Fatal(err)
				}
			}
		}
		abandon(len(leases))
		b.ReportAllocs()
		j := 0
		for b.Loop() {
			if j == len(cycles) {
				b.StopTimer()
				abandon(j)
				j = 0
				b.StartTimer()
			}
			res, _ := s.Enqueue(ctx, cycles[j].k, items[j], store.Claim{Token: store.NewToken(), TTL: benchTTL})
			leases[j] = *res.Lease
			j++
		}
		abandon(j)
	})
}

// BenchmarkCommitRead measures CommitRead of a command's write under a held
// lock: the campaign's next version, the command applied and dequeued, one
// event added to the outbox and the previous one trimmed (published).
func BenchmarkCommitRead(b *testing.B) {
	benchStores(b, func(b *testing.B, s store.Store) {
		ctx := context.Background()
		lc := newLockCycle(s, benchKey)
		lc.run(b, ctx)
		it, l := lc.enqueue(b, ctx)
		prev := lc.commit(b, ctx, l, it) // asserts
		b.ReportAllocs()
		for b.Loop() {
			it := lc.item()
			ev := lc.event()
			w := lc.write(b, l, it, ev)
			w.Head = ""
			w.Trim = []store.Message{prev}
			_, _ = s.CommitRead(ctx, w)
			lc.campaign = w.Campaign
			lc.n++
			prev = ev
		}
		b.StopTimer()
		if got, err := s.Load(ctx, benchKey); err != nil || got.Version != lc.campaign.Version {
			b.Fatalf("after the loop: version %d, %v; want %d", got.Version, err, lc.campaign.Version)
		}
		lc.release(b, ctx, l, prev)
	})
}

// BenchmarkRelease measures Release of a lock whose inbox is empty,
// trimming the event its holder published. It goes round benchBatch
// campaigns; before each round, off the clock, it takes their locks (Take:
// each has an unpublished event left) and adds one event to each outbox, so
// that each Release trims one event and frees the lock.
func BenchmarkRelease(b *testing.B) {
	benchStores(b, func(b *testing.B, s store.Store) {
		ctx := context.Background()
		cycles := benchCycles(b, ctx, s, benchBatch)
		leases := make([]store.Lease, len(cycles))
		prev := make([]store.Message, len(cycles)) // each outbox's oldest event
		for i, lc := range cycles {
			it, l := lc.enqueue(b, ctx)
			prev[i] = lc.commit(b, ctx, l, it)
			if ok, err := s.Release(ctx, l, nil); err != nil || !ok {
				b.Fatalf("Release = %v, %v", ok, err)
			}
		}
		next := make([]store.Message, len(cycles))
		prepare := func() {
			for i, lc := range cycles {
				l, err := s.Take(ctx, lc.k, store.Claim{Token: store.NewToken(), TTL: benchTTL})
				if err != nil || l == nil {
					b.Fatalf("Take = %v, %v", l, err)
				}
				leases[i], next[i] = *l, lc.event()
				c := *lc.campaign
				c.Version++
				if err := s.Commit(ctx, store.Write{Lease: *l, Campaign: &c, Outbox: next[i : i+1]}); err != nil {
					b.Fatal(err)
				}
				lc.campaign = &c
				lc.n++
			}
		}
		prepare()
		if ok, err := s.Release(ctx, leases[0], prev[:1]); err != nil || !ok {
			b.Fatalf("Release = %v, %v; want true", ok, err)
		}
		if out, err := s.Outbox(ctx, cycles[0].k); err != nil || len(out) != 1 || !bytes.Equal(out[0], next[0]) {
			b.Fatalf("outbox after Release = %v, %v; want the one new event", out, err)
		}
		for i := 1; i < len(cycles); i++ {
			if ok, err := s.Release(ctx, leases[i], prev[i:i+1]); err != nil || !ok {
				b.Fatalf("Release = %v, %v", ok, err)
			}
		}
		copy(prev, next)
		prepare()
		b.ReportAllocs()
		j := 0
		for b.Loop() {
			if j == len(cycles) {
				b.StopTimer()
				copy(prev, next)
				prepare()
				j = 0
				b.StartTimer()
			}
			_, _ = s.Release(ctx, leases[j], prev[j:j+1])
			j++
		}
		for ; j < len(cycles); j++ {
			if ok, err := s.Release(ctx, leases[j], prev[j:j+1]); err != nil || !ok {
				b.Fatalf("Release = %v, %v", ok, err)
			}
		}
	})
}

// BenchmarkLoad measures Load of a stored campaign.
func BenchmarkLoad(b *testing.B) {
	benchStores(b, func(b *testing.B, s store.Store) {
		ctx := context.Background()
		lc := newLockCycle(s, benchKey)
		lc.run(b, ctx)
		if c, err := s.Load(ctx, benchKey); err != nil || c.Version != lc.campaign.Version || len(c.Workflow.Steps) != len(workflow.StandardSteps) {
			b.Fatalf("Load = %+v, %v", c, err)
		}
		b.ReportAllocs()
		for b.Loop() {
			_, _ = s.Load(ctx, benchKey)
		}
	})
}

// benchParked is how many commands BenchmarkInbox parks.
const benchParked = 8

// BenchmarkInbox measures Inbox of a campaign with benchParked commands
// parked (enqueued without a claim).
func BenchmarkInbox(b *testing.B) {
	benchStores(b, func(b *testing.B, s store.Store) {
		ctx := context.Background()
		lc := newLockCycle(s, benchKey)
		lc.run(b, ctx)
		for i := range benchParked {
			it := lc.item()
			it.ID = fmt.Sprintf("parked-%d", i)
			it.Seq += uint64(i)
			if res, err := s.Enqueue(ctx, benchKey, it, store.Claim{}); err != nil || res.Lease != nil || res.Duplicate {
				b.Fatalf("park %s = %+v, %v", it.ID, res, err)
			}
		}
		if items, err := s.Inbox(ctx, benchKey, 0); err != nil || len(items) != benchParked || items[0].ID != "parked-0" {
			b.Fatalf("Inbox = %d items, %v; want %d", len(items), err, benchParked)
		}
		b.ReportAllocs()
		for b.Loop() {
			_, _ = s.Inbox(ctx, benchKey, 0)
		}
	})
}
