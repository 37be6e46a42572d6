package store_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/store/storetest"
)

func TestMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return newMemory(t, store.Options{Retention: storetest.Retention})
	})
}

func newMemory(t *testing.T, opts store.Options) *store.Memory {
	t.Helper()
	s := store.NewMemory(opts)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestMemoryClock(t *testing.T) {
	ctx := t.Context()
	clock := &fakeClock{now: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	s := newMemory(t, store.Options{Retention: time.Hour, Now: clock.Now})
	k := store.Key{Tenant: "acme", Campaign: "clock"}

	// The lock lasts exactly its TTL.
	res, err := s.Enqueue(ctx, k, store.Item{ID: "a", Seq: 1}, store.Claim{Token: store.NewToken(), TTL: time.Second})
	if err != nil || res.Lease == nil {
		t.Fatalf("Enqueue = %+v, %v", res, err)
	}
	l := *res.Lease
	clock.Add(999 * time.Millisecond)
	if res, err := s.Enqueue(ctx, k, store.Item{ID: "b", Seq: 2}, store.Claim{Token: store.NewToken(), TTL: time.Second}); err != nil || res.Lease != nil {
		t.Fatalf("Enqueue before the TTL = %+v, %v; want no lease", res, err)
	}
	clock.Add(time.Millisecond)
	c := fsm.Campaign{Tenant: k.Tenant, ID: k.Campaign, State: fsm.Completed, Version: 1}
	if err := s.Commit(ctx, store.Write{Lease: l, Campaign: &c}); !errors.Is(err, store.ErrLockLost) {
		t.Fatalf("Commit at the TTL: %v, want ErrLockLost", err)
	}
	res, err = s.Enqueue(ctx, k, store.Item{ID: "b", Seq: 2}, store.Claim{Token: store.NewToken(), TTL: time.Minute})
	if err != nil || res.Lease == nil {
		t.Fatalf("Enqueue after the TTL = %+v, %v; want a lease", res, err)
	}
	l = *res.Lease

	// An ended campaign lasts exactly the retention, its ledger with it.
	if err := s.Commit(ctx, store.Write{Lease: l, Campaign: &c, Applied: []string{"a", "b"}, Dequeue: []string{"a", "b"}}); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	clock.Add(time.Hour - time.Millisecond)
	if _, err := s.Load(ctx, k); err != nil {
		t.Fatalf("Load before the retention: %v", err)
	}
	clock.Add(time.Millisecond)
	if _, err := s.Load(ctx, k); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Load after the retention: %v, want ErrNotFound", err)
	}
	if ok, _ := s.Applied(ctx, k, "a"); ok {
		t.Fatal("the ledger outlived the campaign")
	}

	// Idempotency records last their TTL.
	if _, found, _ := s.ReserveIdem(ctx, "acme", "k", store.IdemRecord{Fingerprint: "f"}, time.Second); found {
		t.Fatal("fresh key found")
	}
	clock.Add(999 * time.Millisecond)
	if _, found, _ := s.ReserveIdem(ctx, "acme", "k", store.IdemRecord{Fingerprint: "g"}, time.Second); !found {
		t.Fatal("record gone before its TTL")
	}
	clock.Add(time.Millisecond)
	if _, found, _ := s.ReserveIdem(ctx, "acme", "k", store.IdemRecord{Fingerprint: "g"}, time.Second); found {
		t.Fatal("record kept after its TTL")
	}
}

func TestMemoryClose(t *testing.T) {
	s := store.NewMemory(store.Options{})
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	for range 2 {
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	if err := s.Ping(t.Context()); err == nil {
		t.Fatal("Ping after Close: no error")
	}
}
