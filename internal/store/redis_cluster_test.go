package store_test

import (
	"context"
	"errors"
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/store/redistest"
	"github.com/campaign-orchestrator/orchestrator/internal/store/storetest"
)

// TestRedisCluster runs the store's contract on a real Redis Cluster of three
// masters (redis-cli --cluster create): every script's keys must hash to one
// slot, and the sweep's SCAN must visit every master.
func TestRedisCluster(t *testing.T) {
	c := redistest.NewCluster(t, 3)
	storetest.Run(t, func(t *testing.T) store.Store {
		return newClusterStore(t, c.Addrs(), storetest.Retention)
	})
}

// TestRedisClusterStrandedEveryMaster: the sweep's SCAN finds stranded
// campaigns whichever master holds their slot.
func TestRedisClusterStrandedEveryMaster(t *testing.T) {
	c := redistest.NewCluster(t, 3)
	s := newClusterStore(t, c.Addrs(), time.Hour)
	ctx := t.Context()
	want := map[store.Key]bool{}
	for i := range 30 {
		k := store.Key{Tenant: "acme", Campaign: "c" + strconv.Itoa(i)}
		if _, err := s.Enqueue(ctx, k, store.Item{ID: "id" + strconv.Itoa(i), Seq: uint64(i + 1)}, store.Claim{}); err != nil {
			t.Fatal(err)
		}
		want[k] = true
	}
	got := map[store.Key]bool{}
	cursor := ""
	for range 1000 {
		keys, next, err := s.Stranded(ctx, cursor, 5)
		if err != nil {
			t.Fatalf("Stranded: %v", err)
		}
		for _, k := range keys {
			got[k] = true
		}
		if cursor = next; cursor == "" {
			break
		}
	}
	if !maps.Equal(got, want) {
		t.Fatalf("Stranded found %d campaigns, want the %d stranded ones: %v", len(got), len(want), got)
	}
	if _, _, err := s.Stranded(ctx, "x-1", 5); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Stranded with a bad cursor: %v, want ErrInvalid", err)
	}
}

func newClusterStore(t *testing.T, addrs []string, retention time.Duration) *store.Redis {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := store.NewRedisClient(ctx, redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs}),
		store.Options{Retention: retention, Prefix: redistest.Prefix(t)})
	if err != nil {
		t.Fatalf("NewRedisClient on the cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}
