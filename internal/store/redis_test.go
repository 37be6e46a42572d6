package store_test

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/store/redistest"
	"github.com/campaign-orchestrator/orchestrator/internal/store/storetest"
)

func TestRedis(t *testing.T) {
	url, _ := redistest.Start(t)
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	storetest.Run(t, func(t *testing.T) store.Store {
		// Through a proxy that can lose a reply (storetest.ReplyLoser).
		p := redistest.NewProxy(t, opts.Addr)
		return lossyRedis{newRedis(t, strings.Replace(url, opts.Addr, p.Addr(), 1), storetest.Retention), p}
	})
}

// lossyRedis is a Redis store behind a proxy that loses the reply of its
// next script (the connection closes after the script ran); go-redis
// retries it on a new connection.
type lossyRedis struct {
	*store.Redis
	proxy *redistest.Proxy
}

func (s lossyRedis) LoseNextReply(*testing.T) func() int {
	return s.proxy.DropReply(func(args [][]byte) bool {
		return len(args) > 0 && (strings.EqualFold(string(args[0]), "evalsha") || strings.EqualFold(string(args[0]), "eval"))
	})
}

// newRedis returns a store on url under a random key prefix, closed in
// t.Cleanup.
func newRedis(t *testing.T, url string, retention time.Duration) *store.Redis {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	prefix := redistest.Prefix(t)
	s, err := store.NewRedis(ctx, url, store.Options{Retention: retention, Prefix: prefix})
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	t.Cleanup(func() {
		// On a shared server (REDIS_URL), leave nothing behind.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := s.Client().Scan(ctx, 0, prefix+":*", 1000).Iterator()
		for iter.Next(ctx) {
			s.Client().Unlink(ctx, iter.Val())
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestNewRedisErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := store.NewRedis(ctx, "http://localhost:6379", store.Options{}); err == nil || !strings.Contains(err.Error(), "REDIS_URL") {
		t.Fatalf("NewRedis with a bad URL: %v", err)
	}
	_, err := store.NewRedis(ctx, "redis://user:s3cret@127.0.0.1:notaport/0", store.Options{})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("NewRedis with a bad port: %v (must not show the password)", err)
	}
	// Port 1 on loopback: nothing listens there.
	ctx, cancel = context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if _, err := store.NewRedis(ctx, "redis://127.0.0.1:1/0", store.Options{}); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("NewRedis with no server: %v", err)
	}
}

// TestRedisKeys checks the key layout: one hash tag per campaign, and which
// keys expire after a terminal write.
func TestRedisKeys(t *testing.T) {
	url, _ := redistest.Start(t)
	s := newRedis(t, url, time.Hour)
	ctx := t.Context()
	rdb := s.Client()
	k := store.Key{Tenant: "acme", Campaign: "spring"}
	keys := s.CampaignKeys(k)
	for _, key := range keys {
		if !strings.Contains(key, ":{acme/spring}:") {
			t.Fatalf("key %q lacks the hash tag {acme/spring}", key)
		}
	}
	state, ledger, inbox, inboxData, outbox, lock, fence := keys[0], keys[1], keys[2], keys[3], keys[4], keys[5], keys[6]
	pttl := func(key string) time.Duration {
		t.Helper()
		d, err := rdb.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	res, err := s.Enqueue(ctx, k, store.Item{ID: "a", Seq: 1}, store.Claim{Token: store.NewToken(), TTL: time.Minute})
	if err != nil || res.Lease == nil {
		t.Fatalf("Enqueue = %+v, %v", res, err)
	}
	l := *res.Lease
	if d := pttl(fence); d <= 0 || d > time.Hour {
		t.Fatalf("fence of a campaign that does not exist yet: PTTL %s, want the retention", d)
	}
	c := fsm.Campaign{Tenant: k.Tenant, ID: k.Campaign, State: fsm.Running, Version: 1}
	if err := s.Commit(ctx, store.Write{Lease: l, Campaign: &c, Applied: []string{"a"}, Dequeue: []string{"a"},
		Outbox: []store.Message{[]byte("x")}}); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{state, ledger, fence, outbox} {
		if d := pttl(key); d != -1 {
			t.Fatalf("%s after a running write: PTTL %s, want persistent", key, d)
		}
	}
	if n, _ := rdb.Exists(ctx, inbox, inboxData).Result(); n != 0 {
		t.Fatalf("empty inbox keys still exist (%d)", n)
	}
	if _, err := s.Enqueue(ctx, k, store.Item{ID: "b", Seq: 2}, store.Claim{Token: store.NewToken(), TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	c.State, c.Version = fsm.Completed, 2
	if err := s.Commit(ctx, store.Write{Lease: l, Campaign: &c}); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{state, ledger, fence} {
		if d := pttl(key); d <= 0 || d > time.Hour {
			t.Fatalf("%s after a terminal write: PTTL %s, want the retention", key, d)
		}
	}
	for _, key := range []string{inbox, inboxData, outbox} {
		if d := pttl(key); d != -1 {
			t.Fatalf("%s after a terminal write: PTTL %s, want persistent", key, d)
		}
	}
	if d := pttl(lock); d <= 0 || d > time.Minute {
		t.Fatalf("lock after a terminal write: PTTL %s, want its own TTL", d)
	}
	if ids, err := rdb.ZRange(ctx, s.IndexKey("acme"), 0, -1).Result(); err != nil || len(ids) != 1 || ids[0] != "spring" {
		t.Fatalf("tenant index: %v, %v", ids, err)
	}
	c.State, c.Version = fsm.Running, 3 // retry
	if err := s.Commit(ctx, store.Write{Lease: l, Campaign: &c}); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{state, ledger, fence} {
		if d := pttl(key); d != -1 {
			t.Fatalf("%s after a retry: PTTL %s, want persistent", key, d)
		}
	}
}

// TestRedisOutage: the store survives a server restart (scripts are loaded
// again), and after a restart that lost the data the fence starts above
// nothing it could collide with.
func TestRedisOutage(t *testing.T) {
	srv := redistest.New(t)
	s := newRedis(t, srv.URL(), time.Hour)
	ctx := t.Context()
	k := store.Key{Tenant: "acme", Campaign: "outage"}
	res, err := s.Enqueue(ctx, k, store.Item{ID: "a", Seq: 1}, store.Claim{Token: store.NewToken(), TTL: time.Minute})
	if err != nil || res.Lease == nil {
		t.Fatalf("Enqueue = %+v, %v", res, err)
	}
	l := *res.Lease
	c := fsm.Campaign{Tenant: k.Tenant, ID: k.Campaign, State: fsm.Running, Version: 1}
	if err := s.Commit(ctx, store.Write{Lease: l, Campaign: &c, Applied: []string{"a"}, Dequeue: []string{"a"}}); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	if err := s.Ping(pctx); err == nil {
		t.Fatal("Ping while the server is down: no error")
	}
	cancel()
	srv.Start()
	waitPing(t, s)
	got, err := s.Load(ctx, k)
	if err != nil || got.Fence != l.Fence {
		t.Fatalf("Load after a restart with data = %+v, %v", got, err)
	}
	if _, err := s.Release(ctx, l, nil); err != nil { // scripts run again (NOSCRIPT handled)
		t.Fatalf("Release after a restart: %v", err)
	}

	srv.Crash()
	srv.Start()
	waitPing(t, s)
	if _, err := s.Load(ctx, k); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Load after a restart without data: %v, want ErrNotFound", err)
	}
	res, err = s.Enqueue(ctx, k, store.Item{ID: "a", Seq: 1}, store.Claim{Token: store.NewToken(), TTL: time.Minute})
	if err != nil || res.Lease == nil || res.Duplicate {
		t.Fatalf("Enqueue after data loss = %+v, %v", res, err)
	}
}

func waitPing(t *testing.T, s store.Store) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		err := s.Ping(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ping after restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRedisScriptFlush(t *testing.T) {
	url, _ := redistest.Start(t)
	s := newRedis(t, url, time.Hour)
	ctx := t.Context()
	if err := s.Client().ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	k := store.Key{Tenant: "acme", Campaign: "flush"}
	if res, err := s.Enqueue(ctx, k, store.Item{ID: "a", Seq: 1}, store.Claim{Token: store.NewToken(), TTL: time.Minute}); err != nil || res.Lease == nil {
		t.Fatalf("Enqueue after SCRIPT FLUSH = %+v, %v", res, err)
	}
}

// TestRedisListDropsExpired: List removes from the tenant index the ids of
// campaigns that expired.
func TestRedisListDropsExpired(t *testing.T) {
	url, _ := redistest.Start(t)
	const retention = 200 * time.Millisecond
	s := newRedis(t, url, retention)
	ctx := t.Context()
	k := store.Key{Tenant: "acme", Campaign: "gone"}
	res, err := s.Enqueue(ctx, k, store.Item{ID: "a", Seq: 1}, store.Claim{Token: store.NewToken(), TTL: time.Minute})
	if err != nil || res.Lease == nil {
		t.Fatalf("Enqueue = %+v, %v", res, err)
	}
	now := time.Now()
	c := fsm.Campaign{Tenant: k.Tenant, ID: k.Campaign, State: fsm.Cancelled, Version: 1, CreatedAt: now, UpdatedAt: now}
	if err := s.Commit(ctx, store.Write{Lease: *res.Lease, Campaign: &c, Applied: []string{"a"}, Dequeue: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	index := s.IndexKey("acme")
	if n, err := s.Client().ZCard(ctx, index).Result(); err != nil || n != 1 {
		t.Fatalf("tenant index: %d ids, %v", n, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := s.List(ctx, "acme", "", "", 0)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		n, err := s.Client().ZCard(ctx, index).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Campaigns) == 0 && n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: List shows %d campaigns, the index holds %d ids", 10*time.Second, len(p.Campaigns), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRedisStateIndexRepair: the state index lives in its own slot and is
// updated after the commit; a crash between the two leaves it behind until
// the campaign's next Enqueue (the redelivery) or Commit repairs it, and a
// stale update (an older entry, from a holder that lost its lock) never
// undoes a newer one. Expired terminal entries are pruned.
func TestRedisStateIndexRepair(t *testing.T) {
	url, _ := redistest.Start(t)
	const retention = 300 * time.Millisecond
	s := newRedis(t, url, retention)
	ctx := t.Context()
	rdb := s.Client()
	ixKeys := s.StateIndexKeys()
	for _, key := range ixKeys {
		if !strings.Contains(key, ":{campaign-states}:") {
			t.Fatalf("state index key %q lacks the hash tag {campaign-states}", key)
		}
	}
	stampKey := ixKeys[len(ixKeys)-1]
	k := store.Key{Tenant: "acme", Campaign: "ix"}
	member := "acme/ix"
	counts := func() map[fsm.State]int64 {
		t.Helper()
		got, err := s.CountByState(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	res, err := s.Enqueue(ctx, k, store.Item{ID: "a", Seq: 1}, store.Claim{Token: store.NewToken(), TTL: time.Minute})
	if err != nil || res.Lease == nil {
		t.Fatalf("Enqueue = %+v, %v", res, err)
	}
	l := *res.Lease
	c := fsm.Campaign{Tenant: k.Tenant, ID: k.Campaign, State: fsm.Running, Version: 1}
	if err := s.Commit(ctx, store.Write{Lease: l, Campaign: &c, Applied: []string{"a"}, Dequeue: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	if got := counts(); got[fsm.Running] != 1 {
		t.Fatalf("after a running write: %v", got)
	}
	runningIx, err := rdb.HGet(ctx, s.CampaignKeys(k)[0], "ix").Result()
	if err != nil {
		t.Fatal(err)
	}

	// The crash: the state changes, the index does not hear of it.
	c.State, c.Version = fsm.Paused, 2
	if err := s.Commit(ctx, store.Write{Lease: l, Campaign: &c}); err != nil {
		t.Fatal(err)
	}
	undo := func() {
		t.Helper()
		for _, key := range ixKeys[:len(ixKeys)-1] {
			rdb.ZRem(ctx, key, member)
		}
		rdb.ZAdd(ctx, ixKeys[slices.Index(fsm.States, fsm.Running)], redis.Z{Score: math.Inf(1), Member: member}) // back in running
		rdb.HDel(ctx, stampKey, member)
		rdb.HDel(ctx, s.CampaignKeys(k)[0], "ixok")
	}
	undo()
	if got := counts(); got[fsm.Running] != 1 || got[fsm.Paused] != 0 {
		t.Fatalf("after the simulated crash: %v", got)
	}
	// The redelivery's Enqueue repairs it.
	if _, err := s.Enqueue(ctx, k, store.Item{ID: "a", Seq: 1}, store.Claim{Token: store.NewToken(), TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if got := counts(); got[fsm.Running] != 0 || got[fsm.Paused] != 1 {
		t.Fatalf("after the redelivery: %v", got)
	}
	// So does any Commit, even one without a campaign.
	undo()
	if err := s.Commit(ctx, store.Write{Lease: l, Dequeue: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	if got := counts(); got[fsm.Running] != 0 || got[fsm.Paused] != 1 {
		t.Fatalf("after a Commit: %v", got)
	}
	// A stale holder's late update of an older entry changes nothing.
	s.RepairIndex(ctx, k, runningIx)
	if got := counts(); got[fsm.Running] != 0 || got[fsm.Paused] != 1 {
		t.Fatalf("after a stale update: %v", got)
	}

	// A terminal entry expires with its campaign and is pruned.
	c.State, c.Version = fsm.Cancelled, 3
	if err := s.Commit(ctx, store.Write{Lease: l, Campaign: &c}); err != nil {
		t.Fatal(err)
	}
	if got := counts(); got[fsm.Cancelled] != 1 || got[fsm.Paused] != 0 {
		t.Fatalf("after cancel: %v", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := counts()
		n, err := rdb.ZCard(ctx, ixKeys[slices.Index(fsm.States, fsm.Cancelled)]).Result()
		if err != nil {
			t.Fatal(err)
		}
		stamps, err := rdb.HLen(ctx, stampKey).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got[fsm.Cancelled] == 0 && n == 0 && stamps == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: counts %v, %d entries in the cancelled set, %d stamps", 10*time.Second, got, n, stamps)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRedisInstallIndexOnlyWhenWritten: an Install that writes nothing (the
// campaign expired, its lock is lost, a state exists) leaves no entry of its
// own in the tenant's index and does not re-score an existing one; one
// that writes adds it.
func TestRedisInstallIndexOnlyWhenWritten(t *testing.T) {
	url, _ := redistest.Start(t)
	s := newRedis(t, url, time.Hour)
	ctx := t.Context()
	const tenant = "acme"
	index := s.IndexKey(tenant)
	campaign := func(id string, st fsm.State, created time.Time) fsm.Campaign {
		c := fsm.Campaign{Tenant: tenant, ID: id, State: st, Version: 3, Seq: 3, CreatedAt: created, UpdatedAt: created}
		if st.Terminal() {
			ended := created.Add(time.Second)
			c.EndedAt = &ended
		}
		return c
	}
	score := func(id string) (float64, bool) {
		t.Helper()
		v, err := s.Client().ZScore(ctx, index, id).Result()
		if errors.Is(err, redis.Nil) {
			return 0, false
		}
		if err != nil {
			t.Fatal(err)
		}
		return v, true
	}

	old := time.Now().Add(-3 * time.Hour)
	if res, err := s.Install(ctx, store.Install{Campaign: campaign("expired", fsm.Completed, old)}); err != nil || !res.Expired {
		t.Fatalf("Install of an expired campaign = %+v, %v", res, err)
	}
	if _, ok := score("expired"); ok {
		t.Error("an expired install left its index entry")
	}

	held := store.Key{Tenant: tenant, Campaign: "held"}
	res, err := s.Enqueue(ctx, held, store.Item{ID: "a", Seq: 1}, store.Claim{Token: store.NewToken(), TTL: time.Minute})
	if err != nil || res.Lease == nil {
		t.Fatalf("Enqueue = %+v, %v", res, err)
	}
	stranger := *res.Lease
	stranger.Token = store.NewToken()
	if _, err := s.Install(ctx, store.Install{Campaign: campaign("held", fsm.Paused, time.Now()), Lease: &stranger}); !errors.Is(err, store.ErrLockLost) {
		t.Fatalf("Install under a lock not held: %v", err)
	}
	if _, ok := score("held"); ok {
		t.Error("an install refused for its lock left its index entry")
	}

	now := time.Now().Truncate(time.Millisecond)
	if res, err := s.Install(ctx, store.Install{Campaign: campaign("there", fsm.Paused, now)}); err != nil || !res.Installed {
		t.Fatalf("Install = %+v, %v", res, err)
	}
	if v, ok := score("there"); !ok || int64(v) != now.UnixMilli() {
		t.Fatalf("index entry of an installed campaign: %v, %v; want %d", v, ok, now.UnixMilli())
	}
	if res, err := s.Install(ctx, store.Install{Campaign: campaign("there", fsm.Paused, now.Add(-time.Minute))}); err != nil || res.Installed {
		t.Fatalf("Install over a state = %+v, %v", res, err)
	}
	if v, ok := score("there"); !ok || int64(v) != now.UnixMilli() {
		t.Errorf("index entry after an install over the state: %v, %v; want it kept at %d", v, ok, now.UnixMilli())
	}
}
