package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// The tenant index (List) and the state index (CountByState).

// listBatch is how many index entries List reads at a time; listScan bounds
// how many one call examines (a rare state filter may give a short page).
const (
	listBatch = 100
	listScan  = 5000
)

// unindexSrc: KEYS index; ARGV id score. Removes id if its score is
// still score (a create retried meanwhile re-scores it).
var unindexSrc = lua("unindex")

// List implements Store. Ids in the index whose campaign does not exist are
// skipped; once older than the retention (so: expired, or a create that
// never committed) they are removed from the index.
func (r *Redis) List(ctx context.Context, tenant string, state fsm.State, cursor string, limit int) (Page, error) {
	if err := checkTenant(tenant); err != nil {
		return Page{}, fmt.Errorf("list: %w", err)
	}
	if state != "" && !state.Valid() {
		return Page{}, fmt.Errorf("list %s: state %q: %w", tenant, state, ErrInvalid)
	}
	start, cms, cid := "-inf", int64(0), ""
	if cursor != "" {
		var err error
		if cms, cid, err = decodeCursor(cursor); err != nil {
			return Page{}, fmt.Errorf("list %s: %w", tenant, err)
		}
		start = strconv.FormatInt(cms, 10)
	}
	limit = listLimit(limit)
	index := r.indexKey(tenant)
	stale := time.Now().Add(-r.retention).UnixMilli()

	var p Page
	var offset int64
	for examined := 0; examined < listScan; {
		zs, err := r.client.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{
			Key: index, Start: start, Stop: "+inf", ByScore: true, Offset: offset, Count: listBatch,
		}).Result()
		if err != nil {
			return Page{}, fmt.Errorf("list %s: index: %w", tenant, err)
		}
		offset += int64(len(zs))
		type entry struct {
			ms int64
			id string
		}
		entries := make([]entry, 0, len(zs))
		for _, z := range zs {
			e := entry{int64(z.Score), z.Member.(string)}
			if cursor == "" || after(e.ms, e.id, cms, cid) {
				entries = append(entries, e)
			}
		}
		pipe := r.client.Pipeline()
		cmds := make([]*redis.StringCmd, len(entries))
		for i, e := range entries {
			cmds[i] = pipe.HGet(ctx, r.keys(Key{tenant, e.id}).state, "data")
		}
		if len(entries) > 0 {
			if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
				return Page{}, fmt.Errorf("list %s: load: %w", tenant, err)
			}
		}
		for i, e := range entries {
			examined++
			data, err := cmds[i].Bytes()
			if errors.Is(err, redis.Nil) {
				if e.ms < stale {
					if err := r.scripts.unindex.Run(ctx, r.client, []string{index}, e.id, e.ms).Err(); err != nil {
						return Page{}, fmt.Errorf("list %s: unindex %s: %w", tenant, e.id, err)
					}
				}
			} else if err != nil {
				return Page{}, fmt.Errorf("list %s: load %s: %w", tenant, e.id, err)
			} else {
				var c fsm.Campaign
				if err := json.Unmarshal(data, &c); err != nil {
					return Page{}, fmt.Errorf("list %s: decode %s: %w", tenant, e.id, err)
				}
				if state == "" || c.State == state {
					p.Campaigns = append(p.Campaigns, c)
				}
			}
			if len(p.Campaigns) == limit {
				if i == len(entries)-1 && len(zs) < listBatch {
					return p, nil // the index ends here
				}
				p.Next = encodeCursor(e.ms, e.id)
				return p, nil
			}
			if examined == listScan {
				p.Next = encodeCursor(e.ms, e.id)
				return p, nil
			}
		}
		if len(zs) < listBatch {
			return p, nil
		}
	}
	return p, nil
}

// ixDirtyLua defines ixDirty(state key): the campaign's state index entry
// (ix) while it is not confirmed (ixok), else an empty string.
var ixDirtyLua = lua("ixdirty")

// ixMoveSrc: KEYS one set per state (fsm.States order), then the stamp
// hash; ARGV member, position of the state's set in KEYS, score, stamp.
// Moves member to that set unless the index shows an entry as recent.
// Returns 1 if moved.
var ixMoveSrc = lua("ixmove")

// ixAckSrc: KEYS state; ARGV ix. Records that the index shows ix, if ix
// is still the campaign's entry (the hash may have expired or moved on).
var ixAckSrc = lua("ixack")

// ixCountSrc: KEYS one set per state, then the stamp hash. Prunes up to
// 1000 expired entries per set, then returns the number of live entries of
// each set, in KEYS order.
var ixCountSrc = lua("ixcount")

// stateIndexKeys are the keys of the state index: one set per state in
// fsm.States order, then the stamp hash. They share one hash tag.
func (r *Redis) stateIndexKeys() []string {
	p := r.prefix + ":{campaign-states}:"
	keys := make([]string, 0, len(fsm.States)+1)
	for _, st := range fsm.States {
		keys = append(keys, p+string(st))
	}
	return append(keys, p+"stamp")
}

// repairIndex brings the state index up to date with ix, an entry a script
// returned ("<state>|<expiry ms>|<stamp>"; "" or nil: nothing to do), then
// confirms it in the campaign's hash. Errors are dropped on purpose: the
// write that returned ix succeeded, and the entry stays unconfirmed, so the
// campaign's next Enqueue or Commit tries again.
func (r *Redis) repairIndex(ctx context.Context, k Key, ix any) {
	s, _ := ix.(string)
	parts := strings.Split(s, "|")
	if len(parts) != 3 {
		return
	}
	pos := slices.Index(fsm.States, fsm.State(parts[0]))
	if pos < 0 {
		return
	}
	score := "+inf"
	if parts[1] != "0" {
		score = parts[1]
	}
	member := k.Tenant + "/" + k.Campaign
	if err := r.scripts.ixMove.Run(ctx, r.client, r.stateIndexKeys(), member, pos+1, score, parts[2]).Err(); err != nil {
		return
	}
	_ = r.scripts.ixAck.Run(ctx, r.client, []string{r.keys(k).state}, s).Err()
}

// CountByState implements Store: it reads the state index (see Redis), one
// script on the index's slot that also prunes expired terminal entries.
func (r *Redis) CountByState(ctx context.Context) (map[fsm.State]int64, error) {
	counts, err := r.scripts.ixCount.Run(ctx, r.client, r.stateIndexKeys()).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("count by state: %w", err)
	}
	if len(counts) != len(fsm.States) {
		return nil, fmt.Errorf("count by state: unexpected script answer %v", counts)
	}
	out := make(map[fsm.State]int64, len(fsm.States))
	for i, st := range fsm.States {
		out[st] = counts[i]
	}
	return out, nil
}
