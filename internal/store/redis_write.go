package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// The campaign's state, its fenced writes and its outbox.

// Load implements Store.
func (r *Redis) Load(ctx context.Context, k Key) (fsm.Campaign, error) {
	if err := k.check(); err != nil {
		return fsm.Campaign{}, fmt.Errorf("load %s: %w", k, err)
	}
	data, err := r.client.HGet(ctx, r.keys(k).state, "data").Bytes()
	if errors.Is(err, redis.Nil) {
		return fsm.Campaign{}, fmt.Errorf("load %s: %w", k, ErrNotFound)
	}
	if err != nil {
		return fsm.Campaign{}, fmt.Errorf("load %s: %w", k, err)
	}
	var c fsm.Campaign
	if err := json.Unmarshal(data, &c); err != nil {
		return fsm.Campaign{}, fmt.Errorf("load %s: decode: %w", k, err)
	}
	return c, nil
}

// commitSrc: KEYS state ledger inbox inboxdata outbox lock fence; ARGV
// lock-value fence version(0: no campaign) data terminal(1/0) retention_ms
// now_ms head trim_n trim_last read n_outbox outbox... n_applied applied...
// n_dequeue dequeue... n_park (id seq data)... sole(1/0) state write-id. Returns {0 (written, or written
// already by this write id), 1 (lock lost), 2 (version conflict) or 3 (head
// is not the inbox's first item), state index entry to repair or an empty
// string, the inbox head after the write when read is 1 (id, seq, data, …)}.
//
// The state, ledger and fence keys expire together after a terminal write
// and are made persistent by any other write of the campaign; the inbox and
// outbox are never given a TTL (they delete themselves when empty). A write
// that changes the state, or writes a terminal one (which moves the expiry),
// records the state index entry (ix) the campaign must now have.
// parkLua defines park(inbox, inboxdata, i), which commit and install use
// to park the items listed from ARGV[i].
var parkLua = lua("park")

var commitSrc = ixDirtyLua + snapshotLua + parkLua + lua("commit")

// Commit implements Store.
func (r *Redis) Commit(ctx context.Context, w Write) error {
	_, err := r.commit(ctx, w, false)
	return err
}

// CommitRead implements Store.
func (r *Redis) CommitRead(ctx context.Context, w Write) ([]Item, error) {
	return r.commit(ctx, w, true)
}

// commit runs the commit script. A campaign's first write (Version 1) also
// adds it to the tenant's index, just before the script (List skips an id
// whose campaign does not exist).
func (r *Redis) commit(ctx context.Context, w Write, read bool) ([]Item, error) {
	k := w.Lease.Key
	if err := checkWrite(w); err != nil {
		return nil, fmt.Errorf("commit %s: %w", k, err)
	}
	trimLast := last(w.Trim)
	readArg := "0"
	if read {
		readArg = "1"
	}
	args := make([]any, 0, 16+len(w.Outbox)+len(w.Applied)+len(w.Dequeue))
	args = append(args, lockValue(w.Lease.Token, w.Lease.Seq), w.Lease.Fence)
	if c := w.Campaign; c != nil {
		cc := *c
		cc.Fence = w.Lease.Fence
		data, err := json.Marshal(cc)
		if err != nil {
			return nil, fmt.Errorf("commit %s: encode: %w", k, err)
		}
		terminal := "0"
		if c.State.Terminal() {
			terminal = "1"
		}
		args = append(args, c.Version, data, terminal)
	} else {
		args = append(args, 0, "", "0")
	}
	args = append(args, ttlMillis(r.retention), time.Now().UnixMilli(), w.Head, len(w.Trim), trimLast, readArg, len(w.Outbox))
	for _, msg := range w.Outbox {
		args = append(args, msg)
	}
	args = append(args, len(w.Applied))
	for _, id := range w.Applied {
		args = append(args, id)
	}
	args = append(args, len(w.Dequeue))
	for _, id := range w.Dequeue {
		args = append(args, id)
	}
	args = append(args, len(w.Park))
	for _, it := range w.Park {
		args = append(args, it.ID, it.Seq, it.Data)
	}
	if c := w.Campaign; c != nil {
		args = append(args, string(c.State))
	} else {
		args = append(args, "")
	}
	if w.ID == "" {
		w.ID = NewToken()
	}
	args = append(args, w.ID)

	if c := w.Campaign; c != nil && c.Version == 1 {
		err := r.client.ZAdd(ctx, r.indexKey(k.Tenant), redis.Z{Score: float64(c.CreatedAt.UnixMilli()), Member: k.Campaign}).Err()
		if err != nil {
			return nil, fmt.Errorf("commit %s: index: %w", k, err)
		}
	}
	ks := r.keys(k)
	raw, err := r.scripts.commit.Run(ctx, r.client,
		[]string{ks.state, ks.ledger, ks.inbox, ks.inboxData, ks.outbox, ks.lock, ks.fence}, args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", k, err)
	}
	if len(raw) != 3 {
		return nil, fmt.Errorf("commit %s: unexpected script answer %v", k, raw)
	}
	items, err := readItems(raw[2])
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", k, err)
	}
	n, _ := raw[0].(int64)
	switch n {
	case 0:
		r.repairIndex(ctx, k, raw[1])
		return items, nil
	case 1:
		return nil, fmt.Errorf("commit %s: %w", k, ErrLockLost)
	case 2:
		return nil, fmt.Errorf("commit %s: version %d written: %w", k, w.Campaign.Version, ErrConflict)
	case 3:
		return items, fmt.Errorf("commit %s: %s: %w", k, w.Head, ErrNotHead)
	}
	return nil, fmt.Errorf("commit %s: unexpected script answer %d", k, n)
}

// Outbox implements Store.
func (r *Redis) Outbox(ctx context.Context, k Key) ([]Message, error) {
	if err := k.check(); err != nil {
		return nil, fmt.Errorf("outbox %s: %w", k, err)
	}
	raw, err := r.client.LRange(ctx, r.keys(k).outbox, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("outbox %s: %w", k, err)
	}
	if len(raw) == 0 {
		return nil, nil
	}
	out := make([]Message, len(raw))
	for i, s := range raw {
		out[i] = Message(s)
	}
	return out, nil
}

// trimSrc: KEYS lock outbox; ARGV lock-value n last. Trims the n oldest if
// the n-th is last. Returns 1 if held.
var trimSrc = lua("trim")

// TrimOutbox implements Store.
func (r *Redis) TrimOutbox(ctx context.Context, l Lease, published []Message) error {
	if err := l.Key.check(); err != nil {
		return fmt.Errorf("trim outbox %s: %w", l.Key, err)
	}
	ks := r.keys(l.Key)
	held, err := r.scripts.trim.Run(ctx, r.client, []string{ks.lock, ks.outbox}, lockValue(l.Token, l.Seq), len(published), last(published)).Int64()
	if err != nil {
		return fmt.Errorf("trim outbox %s: %w", l.Key, err)
	}
	if held != 1 {
		return fmt.Errorf("trim outbox %s: %w", l.Key, ErrLockLost)
	}
	return nil
}

// Applied implements Store.
func (r *Redis) Applied(ctx context.Context, k Key, id string) (bool, error) {
	if err := k.check(); err != nil {
		return false, fmt.Errorf("applied %s: %w", k, err)
	}
	err := r.client.ZScore(ctx, r.keys(k).ledger, id).Err()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("applied %s %s: %w", k, id, err)
	}
	return true, nil
}

// installSrc: KEYS state ledger inbox inboxdata lock fence; ARGV data
// version fence-floor state terminal(1/0) ended_ms retention_ms lock-value
// ("": no lease) install-id n_applied applied... n_park (id seq data)....
// Returns {0 (installed, or installed already by this id), 1 (a state
// exists), 2 (ended longer ago than the retention) or 3 (lock lost), the
// lease's new fence (0 without a lease), state index entry to repair or an
// empty string}. Like commit, it records the state index entry (ix) and
// gives the state, ledger and fence keys the expiry of a terminal campaign
// (the retention after its end) or none.
var installSrc = ixDirtyLua + parkLua + lua("install")

// Install implements Store. The tenant's index entry (List) is added just
// before the script, as Commit does for a campaign's first write, but only
// where the index has none, and taken back when nothing was written.
func (r *Redis) Install(ctx context.Context, in Install) (Installed, error) {
	k := Key{Tenant: in.Campaign.Tenant, Campaign: in.Campaign.ID}
	if err := checkInstall(in); err != nil {
		return Installed{}, fmt.Errorf("install %s: %w", k, err)
	}
	data, err := json.Marshal(in.Campaign)
	if err != nil {
		return Installed{}, fmt.Errorf("install %s: encode: %w", k, err)
	}
	terminal, ended := "0", int64(0)
	if c := in.Campaign; c.State.Terminal() {
		terminal, ended = "1", c.EndedAt.UnixMilli()
	}
	lock := ""
	if l := in.Lease; l != nil {
		lock = lockValue(l.Token, l.Seq)
	}
	if in.ID == "" {
		in.ID = NewToken()
	}
	args := make([]any, 0, 12+len(in.Applied)+3*len(in.Park))
	args = append(args, data, in.Campaign.Version, in.Campaign.Fence, string(in.Campaign.State), terminal, ended,
		ttlMillis(r.retention), lock, in.ID, len(in.Applied))
	for _, id := range in.Applied {
		args = append(args, id)
	}
	args = append(args, len(in.Park))
	for _, it := range in.Park {
		args = append(args, it.ID, it.Seq, it.Data)
	}
	// Added only where there is none (an existing campaign keeps its
	// place), before the script so that a crash right after it cannot
	// leave an installed campaign out of List; taken back below when
	// nothing was written.
	index, score := r.indexKey(k.Tenant), in.Campaign.CreatedAt.UnixMilli()
	added, err := r.client.ZAddNX(ctx, index, redis.Z{Score: float64(score), Member: k.Campaign}).Result()
	if err != nil {
		return Installed{}, fmt.Errorf("install %s: index: %w", k, err)
	}
	ks := r.keys(k)
	raw, err := r.scripts.install.Run(ctx, r.client,
		[]string{ks.state, ks.ledger, ks.inbox, ks.inboxData, ks.lock, ks.fence}, args...).Slice()
	if err != nil {
		return Installed{}, fmt.Errorf("install %s: %w", k, err)
	}
	if len(raw) != 3 {
		return Installed{}, fmt.Errorf("install %s: unexpected script answer %v", k, raw)
	}
	code, _ := raw[0].(int64)
	fence, _ := raw[1].(int64)
	r.repairIndex(ctx, k, raw[2])
	if code != 0 && added == 1 {
		if err := r.unindexUnwritten(ctx, k, index, score); err != nil {
			return Installed{}, fmt.Errorf("install %s: index: %w", k, err)
		}
	}
	switch code {
	case 0:
		return Installed{Installed: true, Fence: uint64(fence)}, nil
	case 1:
		return Installed{}, nil
	case 2:
		return Installed{Expired: true}, nil
	case 3:
		return Installed{}, fmt.Errorf("install %s: %w", k, ErrLockLost)
	}
	return Installed{}, fmt.Errorf("install %s: unexpected script answer %d", k, code)
}

// unindexUnwritten takes back the index entry (index, score) an Install
// added for k when its script wrote nothing. A state found there afterwards
// (another install, concurrent, whose own add found this entry present)
// gets it back.
func (r *Redis) unindexUnwritten(ctx context.Context, k Key, index string, score int64) error {
	if err := r.scripts.unindex.Run(ctx, r.client, []string{index}, k.Campaign, score).Err(); err != nil {
		return err
	}
	exists, err := r.client.HExists(ctx, r.keys(k).state, "data").Result()
	if err != nil || !exists {
		return err
	}
	return r.client.ZAddNX(ctx, index, redis.Z{Score: float64(score), Member: k.Campaign}).Err()
}
