package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// The lock and the inbox of a campaign: parking, taking, extending and
// releasing the lock, reading the inbox and the snapshot a holder starts from.

// enqueueSrc: KEYS state ledger inbox inboxdata lock fence outbox; ARGV id
// ("": take the lock only, see Take) seq data lock-value ("": park only)
// ttl_ms retention_ms. Returns {duplicate, acquired, fence, state index
// entry to repair or an empty string, value of the lock when held by
// someone else or an empty string}, and when acquired the snapshot: the
// campaign's data (or an empty string), its inbox head (id, seq, data, …)
// and its outbox.
var enqueueSrc = ixDirtyLua + snapshotLua + lua("enqueue")

// Enqueue implements Store.
func (r *Redis) Enqueue(ctx context.Context, k Key, item Item, claim Claim) (Enqueued, error) {
	if err := checkEnqueue(k, item, claim); err != nil {
		return Enqueued{}, err
	}
	lock, ttl := "", int64(1)
	if claim.Token != "" {
		lock, ttl = lockValue(claim.Token, item.Seq), ttlMillis(claim.TTL)
	}
	ks := r.keys(k)
	raw, err := r.scripts.enqueue.Run(ctx, r.client,
		[]string{ks.state, ks.ledger, ks.inbox, ks.inboxData, ks.lock, ks.fence, ks.outbox},
		item.ID, item.Seq, item.Data, lock, ttl, ttlMillis(r.retention)).Slice()
	if err != nil {
		return Enqueued{}, fmt.Errorf("enqueue %s: %w", k, err)
	}
	if len(raw) != 5 && len(raw) != 8 {
		return Enqueued{}, fmt.Errorf("enqueue %s: unexpected script answer %v", k, raw)
	}
	dup, _ := raw[0].(int64)
	acquired, _ := raw[1].(int64)
	fence, _ := raw[2].(int64)
	out := Enqueued{Duplicate: dup == 1}
	if acquired == 1 && len(raw) == 8 {
		out.Lease = &Lease{Key: k, Token: claim.Token, Fence: uint64(fence), Seq: item.Seq}
		if out.Snapshot, err = readSnapshot(raw[5], raw[6], raw[7]); err != nil {
			return Enqueued{}, fmt.Errorf("enqueue %s: %w", k, err)
		}
	} else if holder, _ := raw[4].(string); holder != "" {
		out.HolderSeq, out.Held = lockSeq(holder), true
	}
	r.repairIndex(ctx, k, raw[3])
	return out, nil
}

// Take implements Store: the enqueue script without an item.
func (r *Redis) Take(ctx context.Context, k Key, claim Claim) (*Lease, error) {
	if err := checkTake(k, claim); err != nil {
		return nil, err
	}
	ks := r.keys(k)
	raw, err := r.scripts.enqueue.Run(ctx, r.client,
		[]string{ks.state, ks.ledger, ks.inbox, ks.inboxData, ks.lock, ks.fence, ks.outbox},
		"", 0, "", lockValue(claim.Token, 0), ttlMillis(claim.TTL), ttlMillis(r.retention)).Slice()
	if err != nil {
		return nil, fmt.Errorf("take %s: %w", k, err)
	}
	if len(raw) != 5 && len(raw) != 8 {
		return nil, fmt.Errorf("take %s: unexpected script answer %v", k, raw)
	}
	r.repairIndex(ctx, k, raw[3])
	if acquired, _ := raw[1].(int64); acquired != 1 {
		return nil, nil
	}
	fence, _ := raw[2].(int64)
	return &Lease{Key: k, Token: claim.Token, Fence: uint64(fence)}, nil
}

// Stranded implements Store: a SCAN of the campaigns' inbox and outbox keys
// (every key of one campaign ends in inbox or outbox only for those two),
// then one pipelined EXISTS of each one's lock. On Redis Cluster the SCAN
// visits each master in turn (scanCluster).
func (r *Redis) Stranded(ctx context.Context, cursor string, limit int) ([]Key, string, error) {
	if limit <= 0 {
		limit = DefaultListLimit
	}
	match := r.prefix + ":{*}:*box"
	var names []string
	var next string
	var err error
	if cc, ok := r.client.(*redis.ClusterClient); ok {
		names, next, err = scanCluster(ctx, cc, cursor, match, int64(limit))
	} else {
		names, next, err = scanOne(ctx, r.client, cursor, match, int64(limit))
	}
	if err != nil {
		return nil, "", fmt.Errorf("stranded: %w", err)
	}
	seen := map[Key]bool{}
	var keys []Key
	for _, name := range names {
		rest, ok := strings.CutPrefix(name, r.prefix+":{")
		i := strings.LastIndex(rest, "}:")
		if !ok || i < 0 || (rest[i+2:] != "inbox" && rest[i+2:] != "outbox") {
			continue
		}
		t, c, ok := strings.Cut(rest[:i], "/")
		k := Key{Tenant: t, Campaign: c}
		if !ok || k.check() != nil || seen[k] {
			continue
		}
		seen[k] = true
		keys = append(keys, k)
	}
	out := keys[:0]
	if len(keys) > 0 {
		pipe := r.client.Pipeline()
		held := make([]*redis.IntCmd, len(keys))
		for i, k := range keys {
			held[i] = pipe.Exists(ctx, r.keys(k).lock)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, "", fmt.Errorf("stranded: locks: %w", err)
		}
		for i, k := range keys {
			if held[i].Val() == 0 {
				out = append(out, k)
			}
		}
	}
	return out, next, nil
}

// scanOne is one SCAN step on one server; the cursor is SCAN's, "" at the
// start and the end.
func scanOne(ctx context.Context, c redis.Cmdable, cursor, match string, count int64) ([]string, string, error) {
	var cur uint64
	if cursor != "" {
		var err error
		if cur, err = strconv.ParseUint(cursor, 10, 64); err != nil {
			return nil, "", fmt.Errorf("cursor %q: %w", cursor, ErrInvalid)
		}
	}
	names, next, err := c.Scan(ctx, cur, match, count).Result()
	if err != nil {
		return nil, "", fmt.Errorf("scan: %w", err)
	}
	if next == 0 {
		return names, "", nil
	}
	return names, strconv.FormatUint(next, 10), nil
}

// scanCluster is one SCAN step on one master of a cluster: the cursor is
// "<i>-<cursor>", i indexing the masters sorted by address. A change of
// masters between two calls may skip or repeat keys, which a sweep that
// runs again later tolerates.
func scanCluster(ctx context.Context, cc *redis.ClusterClient, cursor, match string, count int64) ([]string, string, error) {
	var mu sync.Mutex
	nodes := map[string]*redis.Client{}
	if err := cc.ForEachMaster(ctx, func(_ context.Context, c *redis.Client) error {
		mu.Lock()
		nodes[c.Options().Addr] = c
		mu.Unlock()
		return nil
	}); err != nil {
		return nil, "", fmt.Errorf("cluster masters: %w", err)
	}
	addrs := make([]string, 0, len(nodes))
	for a := range nodes {
		addrs = append(addrs, a)
	}
	slices.Sort(addrs)
	i, cur := 0, ""
	if cursor != "" {
		si, sc, ok := strings.Cut(cursor, "-")
		n, err := strconv.Atoi(si)
		if !ok || err != nil || n < 0 {
			return nil, "", fmt.Errorf("cursor %q: %w", cursor, ErrInvalid)
		}
		i, cur = n, sc
	}
	if i >= len(addrs) {
		return nil, "", nil
	}
	names, next, err := scanOne(ctx, nodes[addrs[i]], cur, match, count)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", addrs[i], err)
	}
	switch {
	case next != "":
		return names, strconv.Itoa(i) + "-" + next, nil
	case i+1 < len(addrs):
		return names, strconv.Itoa(i+1) + "-", nil
	}
	return names, "", nil
}

// inboxSrc: KEYS inbox inboxdata; ARGV stop index. Returns a flat list
// id, seq, data, ... in Seq order.
var inboxSrc = snapshotLua + lua("inbox")

// snapshotLua defines inboxHead(inbox, inboxdata, n), the first n inbox
// items as a flat list id, seq, data, …, and snapshot(state, inbox,
// inboxdata, outbox): the campaign's data (or an empty string), its first
// InboxHead items and its outbox.
var snapshotLua = lua("snapshot")

// readSnapshot decodes the snapshot part of a script's answer.
func readSnapshot(data, items, outbox any) (*Snapshot, error) {
	s := &Snapshot{}
	if d, _ := data.(string); d != "" {
		var c fsm.Campaign
		if err := json.Unmarshal([]byte(d), &c); err != nil {
			return nil, fmt.Errorf("decode campaign: %w", err)
		}
		s.Campaign = &c
	}
	var err error
	if s.Inbox, err = readItems(items); err != nil {
		return nil, err
	}
	list, _ := outbox.([]any)
	for _, x := range list {
		str, _ := x.(string)
		s.Outbox = append(s.Outbox, Message(str))
	}
	return s, nil
}

// readItems decodes a flat list id, seq, data, … of inbox items.
func readItems(v any) ([]Item, error) {
	flat, _ := v.([]any)
	if len(flat)%3 != 0 {
		return nil, fmt.Errorf("unexpected inbox answer of %d values", len(flat))
	}
	var items []Item
	for i := 0; i < len(flat); i += 3 {
		id, _ := flat[i].(string)
		seqStr, _ := flat[i+1].(string)
		seq, err := strconv.ParseFloat(seqStr, 64)
		if err != nil {
			return nil, fmt.Errorf("seq of inbox item %s: %w", id, err)
		}
		it := Item{ID: id, Seq: uint64(seq)}
		if d, _ := flat[i+2].(string); d != "" {
			it.Data = []byte(d)
		}
		items = append(items, it)
	}
	return items, nil
}

// Inbox implements Store.
func (r *Redis) Inbox(ctx context.Context, k Key, limit int) ([]Item, error) {
	if err := k.check(); err != nil {
		return nil, fmt.Errorf("inbox %s: %w", k, err)
	}
	stop := int64(-1)
	if limit > 0 {
		stop = int64(limit) - 1
	}
	ks := r.keys(k)
	res, err := r.scripts.inbox.Run(ctx, r.client, []string{ks.inbox, ks.inboxData}, stop).Slice()
	if err != nil {
		return nil, fmt.Errorf("inbox %s: %w", k, err)
	}
	items, err := readItems(any(res))
	if err != nil {
		return nil, fmt.Errorf("inbox %s: %w", k, err)
	}
	return items, nil
}

// extendSrc: KEYS lock; ARGV token ttl_ms. Returns 1 if extended.
var extendSrc = lua("extend")

// Extend implements Store.
func (r *Redis) Extend(ctx context.Context, l Lease, ttl time.Duration) error {
	if err := l.Key.check(); err != nil {
		return fmt.Errorf("extend %s: %w", l.Key, err)
	}
	if err := checkTTL("extend "+l.Key.String(), ttl); err != nil {
		return err
	}
	n, err := r.scripts.extend.Run(ctx, r.client, []string{r.keys(l.Key).lock}, lockValue(l.Token, l.Seq), ttlMillis(ttl)).Int64()
	if err != nil {
		return fmt.Errorf("extend %s: %w", l.Key, err)
	}
	if n != 1 {
		return fmt.Errorf("extend %s: %w", l.Key, ErrLockLost)
	}
	return nil
}

// ExtendAll implements Store: the extend script for every lease in one
// pipeline (a script not loaded yet is run again alone, as Run would).
func (r *Redis) ExtendAll(ctx context.Context, leases []Lease, ttl time.Duration) []error {
	errs := make([]error, len(leases))
	if len(leases) == 0 {
		return errs
	}
	if err := checkTTL("extend", ttl); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	pipe := r.client.Pipeline()
	cmds := make([]*redis.Cmd, len(leases))
	for i, l := range leases {
		if errs[i] = l.Key.check(); errs[i] != nil {
			errs[i] = fmt.Errorf("extend %s: %w", l.Key, errs[i])
			continue
		}
		cmds[i] = r.scripts.extend.EvalSha(ctx, pipe, []string{r.keys(l.Key).lock}, lockValue(l.Token, l.Seq), ttlMillis(ttl))
	}
	_, _ = pipe.Exec(ctx) // each command's own error is read below
	for i, cmd := range cmds {
		if cmd == nil {
			continue
		}
		n, err := cmd.Int64()
		switch {
		case err != nil && redis.HasErrorPrefix(err, "NOSCRIPT"):
			errs[i] = r.Extend(ctx, leases[i], ttl)
		case err != nil:
			errs[i] = fmt.Errorf("extend %s: %w", leases[i].Key, err)
		case n != 1:
			errs[i] = fmt.Errorf("extend %s: %w", leases[i].Key, ErrLockLost)
		}
	}
	return errs
}

// releaseSrc: KEYS lock inbox outbox; ARGV lock-value n last. Trims the n
// oldest outbox messages if the n-th is last (as trimSrc). Returns -1 if
// held by another or free with items or messages waiting, 0 if the inbox
// is not empty, 1 if released (or free with nothing waiting: a retry, or an
// expiry).
var releaseSrc = lua("release")

// last returns the last of msgs, or nil.
func last(msgs []Message) Message {
	if len(msgs) == 0 {
		return nil
	}
	return msgs[len(msgs)-1]
}

// Release implements Store.
func (r *Redis) Release(ctx context.Context, l Lease, published []Message) (bool, error) {
	if err := l.Key.check(); err != nil {
		return false, fmt.Errorf("release %s: %w", l.Key, err)
	}
	ks := r.keys(l.Key)
	n, err := r.scripts.release.Run(ctx, r.client, []string{ks.lock, ks.inbox, ks.outbox}, lockValue(l.Token, l.Seq), len(published), last(published)).Int64()
	if err != nil {
		return false, fmt.Errorf("release %s: %w", l.Key, err)
	}
	if n < 0 {
		return false, fmt.Errorf("release %s: %w", l.Key, ErrLockLost)
	}
	return n == 1, nil
}

// abandonSrc: KEYS lock; ARGV lock value. Compare and delete.
var abandonSrc = lua("abandon")

// Abandon implements Store.
func (r *Redis) Abandon(ctx context.Context, l Lease) error {
	if err := l.Key.check(); err != nil {
		return fmt.Errorf("abandon %s: %w", l.Key, err)
	}
	if err := r.scripts.abandon.Run(ctx, r.client, []string{r.keys(l.Key).lock}, lockValue(l.Token, l.Seq)).Err(); err != nil {
		return fmt.Errorf("abandon %s: %w", l.Key, err)
	}
	return nil
}
