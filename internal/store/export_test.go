package store

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// Test hooks, compiled only into this directory's tests.

// ResetFence simulates the loss of k's fencing counter (a Redis restart
// without persistence, a failover): the counter starts again from zero.
func (m *Memory) ResetFence(ctx context.Context, k Key) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.camps[k]; c != nil {
		c.fenceCtr = 0
	}
	return nil
}

// ResetFence deletes k's fencing counter key.
func (r *Redis) ResetFence(ctx context.Context, k Key) error {
	return r.client.Del(ctx, r.keys(k).fence).Err()
}

// Client returns the store's Redis client.
func (r *Redis) Client() redis.UniversalClient { return r.client }

// CampaignKeys returns the Redis keys of k: state, ledger, inbox,
// inboxdata, outbox, lock, fence.
func (r *Redis) CampaignKeys(k Key) []string {
	ks := r.keys(k)
	return []string{ks.state, ks.ledger, ks.inbox, ks.inboxData, ks.outbox, ks.lock, ks.fence}
}

// IndexKey returns the Redis key of the tenant's campaign index.
func (r *Redis) IndexKey(tenant string) string { return r.indexKey(tenant) }

// StateIndexKeys returns the Redis keys of the state index: one set per
// state in fsm.States order, then the stamp hash.
func (r *Redis) StateIndexKeys() []string { return r.stateIndexKeys() }

// RepairIndex runs the state index update for entry ix of k.
func (r *Redis) RepairIndex(ctx context.Context, k Key, ix string) { r.repairIndex(ctx, k, ix) }
