package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

var _ Store = (*Redis)(nil)

// Redis is the Store for production: many processes share it.
//
// Key layout (P is Options.Prefix), every key of one campaign under the hash
// tag {<tenant>/<campaign>} so that one Lua script can touch them all, also
// on Redis Cluster:
//
//	P:{t/c}:state      HASH data (JSON of fsm.Campaign), version, fence,
//	                   wid (id of the write that wrote them), st (state),
//	                   ix and ixok (see "State index" below)
//	P:{t/c}:ledger     ZSET applied command id -> Unix ms
//	P:{t/c}:inbox      ZSET item id -> Seq
//	P:{t/c}:inboxdata  HASH item id -> Data
//	P:{t/c}:outbox     LIST of JSON Message
//	P:{t/c}:lock       STRING "<token>|<backing stream sequence>", with the
//	                   lock's TTL
//	P:{t/c}:fence      STRING fencing counter (INCR)
//	P:tenant:{t}:campaigns  ZSET campaign id -> CreatedAt Unix ms (List)
//	P:idem:{t}:<key>   STRING JSON IdemRecord, with its TTL
//	P:secret:<name>    STRING a secret shared by every process (Secret)
//	P:{campaign-states}:<state>  ZSET "t/c" -> expiry Unix ms (+inf unless
//	                   the state is terminal): the campaigns in that state
//	P:{campaign-states}:stamp    HASH "t/c" -> stamp of the entry shown
//
// Every change of a campaign is one script; the scripts check the lock token
// and the fence in the same step as the write.
//
// State index (CountByState). The per-state sets live in one slot of their
// own, so the commit script cannot update them (a script's keys must share a
// hash tag on Redis Cluster). Instead the commit script records in the
// campaign's hash, when the state changes or a terminal write moves the
// expiry, the entry the index must show: ix = "<state>|<expiry ms, 0:
// none>|<stamp>", the stamp being the server's TIME in microseconds. Right
// after the commit, the store moves the campaign to that state's set (a
// script on the index slot that ignores an entry older than the one shown,
// so a stale holder cannot undo a newer move) and then sets ixok = ix in the
// campaign's hash. The enqueue and commit scripts return ix while it differs
// from ixok, and the store repeats the move then: after a crash between a
// commit and the move, the unacknowledged command's redelivery (an Enqueue)
// repairs the index. Until then that campaign is counted in its previous
// state. The cost is two extra round trips per state change (about three per
// campaign), none per other write; every state change of every campaign goes
// to the index's slot, one shard of a cluster. Terminal entries leave the
// count when their campaign expires and are pruned by CountByState. A
// campaign last written before the index existed is counted from its next
// write.
type Redis struct {
	client    *redis.Client
	prefix    string
	retention time.Duration
	scripts   redisScripts
}

// redisScripts are the Lua scripts, run with EVALSHA (EVAL when the server
// does not know them yet, after a restart say).
type redisScripts struct {
	enqueue    *redis.Script
	inbox      *redis.Script
	extend     *redis.Script
	release    *redis.Script
	abandon    *redis.Script
	commit     *redis.Script
	trim       *redis.Script
	unindex    *redis.Script
	reserve    *redis.Script
	complete   *redis.Script
	ixMove     *redis.Script
	ixAck      *redis.Script
	ixCount    *redis.Script
	secret     *redis.Script
	deleteIdem *redis.Script
}

func newRedisScripts() redisScripts {
	return redisScripts{
		enqueue:    redis.NewScript(enqueueSrc),
		inbox:      redis.NewScript(inboxSrc),
		extend:     redis.NewScript(extendSrc),
		release:    redis.NewScript(releaseSrc),
		abandon:    redis.NewScript(abandonSrc),
		commit:     redis.NewScript(commitSrc),
		trim:       redis.NewScript(trimSrc),
		unindex:    redis.NewScript(unindexSrc),
		reserve:    redis.NewScript(reserveSrc),
		complete:   redis.NewScript(completeSrc),
		ixMove:     redis.NewScript(ixMoveSrc),
		ixAck:      redis.NewScript(ixAckSrc),
		ixCount:    redis.NewScript(ixCountSrc),
		secret:     redis.NewScript(secretSrc),
		deleteIdem: redis.NewScript(deleteIdemSrc),
	}
}

// NewRedis connects to the Redis server at url (redis:// or rediss://) and
// checks that it answers. It fails if the URL is malformed or the server is
// unreachable before ctx ends.
func NewRedis(ctx context.Context, url string, opts Options) (*Redis, error) {
	opts = opts.withDefaults()
	ro, err := redis.ParseURL(url)
	if err != nil {
		// The message may quote the URL, password included: leave it out.
		return nil, fmt.Errorf("redis: bad REDIS_URL: %s", strings.ReplaceAll(err.Error(), url, "<REDIS_URL>"))
	}
	client := redis.NewClient(ro)
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redis %s: unreachable: %w", ro.Addr, err)
	}
	return &Redis{client: client, prefix: opts.Prefix, retention: opts.Retention, scripts: newRedisScripts()}, nil
}

// campaignKeys are the keys of one campaign, in the order the scripts take
// them.
type campaignKeys struct {
	state, ledger, inbox, inboxData, outbox, lock, fence string
}

func (r *Redis) keys(k Key) campaignKeys {
	p := r.prefix + ":{" + k.Tenant + "/" + k.Campaign + "}:"
	return campaignKeys{
		state: p + "state", ledger: p + "ledger", inbox: p + "inbox", inboxData: p + "inboxdata",
		outbox: p + "outbox", lock: p + "lock", fence: p + "fence",
	}
}

func (r *Redis) indexKey(tenant string) string {
	return r.prefix + ":tenant:{" + tenant + "}:campaigns"
}

func (r *Redis) idemKey(tenant, key string) string {
	return r.prefix + ":idem:{" + tenant + "}:" + key
}

// enqueueSrc: KEYS state ledger inbox inboxdata lock fence outbox; ARGV id
// ("": take the lock only, see Take) seq data lock-value ("": park only)
// ttl_ms retention_ms. Returns {duplicate, acquired, fence, state index
// entry to repair or an empty string, value of the lock when held by
// someone else or an empty string}, and when acquired the snapshot: the
// campaign's data (or an empty string), its inbox head (id, seq, data, …)
// and its outbox.
var enqueueSrc = ixDirtyLua + snapshotLua + `
local dup = 0
if ARGV[1] == '' then
  -- Take: no item to park
elseif redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  dup = 1
else
  redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[1])
  redis.call('HSETNX', KEYS[4], ARGV[1], ARGV[3])
end
local holder = redis.call('GET', KEYS[5])
if holder and ARGV[4] ~= '' and holder == ARGV[4] then
  local data, items, out = snapshot(KEYS[1], KEYS[3], KEYS[4], KEYS[7])
  return {dup, 1, tonumber(redis.call('GET', KEYS[6]) or '0'), ixDirty(KEYS[1]), '', data, items, out}
end
if holder then return {dup, 0, 0, ixDirty(KEYS[1]), holder} end
if ARGV[4] ~= '' and (redis.call('EXISTS', KEYS[3]) == 1 or redis.call('EXISTS', KEYS[7]) == 1) then
  local f = redis.call('INCR', KEYS[6])
  local sf = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
  if f <= sf then
    f = sf + 1
    redis.call('SET', KEYS[6], f)
  end
  local pttl = redis.call('PTTL', KEYS[1])
  if pttl == -2 then
    redis.call('PEXPIRE', KEYS[6], ARGV[6])
  elseif pttl > 0 then
    redis.call('PEXPIRE', KEYS[6], pttl)
  else
    redis.call('PERSIST', KEYS[6])
  end
  redis.call('SET', KEYS[5], ARGV[4], 'PX', ARGV[5])
  local data, items, out = snapshot(KEYS[1], KEYS[3], KEYS[4], KEYS[7])
  return {dup, 1, f, ixDirty(KEYS[1]), '', data, items, out}
end
return {dup, 0, 0, ixDirty(KEYS[1]), ''}
`

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
// then one pipelined EXISTS of each one's lock. On a Redis Cluster the SCAN
// sees one node; the store uses a single client today.
func (r *Redis) Stranded(ctx context.Context, cursor string, limit int) ([]Key, string, error) {
	var cur uint64
	if cursor != "" {
		var err error
		if cur, err = strconv.ParseUint(cursor, 10, 64); err != nil {
			return nil, "", fmt.Errorf("stranded: cursor %q: %w", cursor, ErrInvalid)
		}
	}
	if limit <= 0 {
		limit = DefaultListLimit
	}
	names, next, err := r.client.Scan(ctx, cur, r.prefix+":{*}:*box", int64(limit)).Result()
	if err != nil {
		return nil, "", fmt.Errorf("stranded: scan: %w", err)
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
	if next == 0 {
		return out, "", nil
	}
	return out, strconv.FormatUint(next, 10), nil
}

// inboxSrc: KEYS inbox inboxdata; ARGV stop index. Returns a flat list
// id, seq, data, ... in Seq order.
var inboxSrc = snapshotLua + `
return inboxHead(KEYS[1], KEYS[2], tonumber(ARGV[1]) + 1)
`

// snapshotLua defines inboxHead(inbox, inboxdata, n), the first n inbox
// items as a flat list id, seq, data, …, and snapshot(state, inbox,
// inboxdata, outbox): the campaign's data (or an empty string), its first
// InboxHead items and its outbox.
var snapshotLua = `
local function inboxHead(inbox, inboxdata, n)
  local ids = redis.call('ZRANGE', inbox, 0, n - 1, 'WITHSCORES')
  local out = {}
  for i = 1, #ids, 2 do
    local d = redis.call('HGET', inboxdata, ids[i])
    if d then
      out[#out+1] = ids[i]
      out[#out+1] = ids[i+1]
      out[#out+1] = d
    end
  end
  return out
end
local function snapshot(state, inbox, inboxdata, outbox)
  return redis.call('HGET', state, 'data') or '', inboxHead(inbox, inboxdata, ` + strconv.Itoa(InboxHead) + `), redis.call('LRANGE', outbox, 0, -1)
end
`

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
	for i, x := range list {
		str, _ := x.(string)
		var m Message
		if err := json.Unmarshal([]byte(str), &m); err != nil {
			return nil, fmt.Errorf("decode outbox message %d: %w", i, err)
		}
		s.Outbox = append(s.Outbox, m)
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
const extendSrc = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`

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

// releaseSrc: KEYS lock inbox outbox; ARGV lock-value n last. Trims the n
// oldest outbox messages if the n-th is last (as trimSrc). Returns -1 if
// held by another or free with items or messages waiting, 0 if the inbox
// is not empty, 1 if released (or free with nothing waiting: a retry, or an
// expiry).
const releaseSrc = `
local v = redis.call('GET', KEYS[1])
if v ~= ARGV[1] then
  if v or redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
  return 1
end
local n = tonumber(ARGV[2])
if n > 0 and redis.call('LINDEX', KEYS[3], n - 1) == ARGV[3] then redis.call('LTRIM', KEYS[3], n, -1) end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('DEL', KEYS[1])
return 1
`

// lastJSON returns the JSON of the last of msgs as Commit stored it
// (encoding/json writes the same bytes for a Message decoded from them), or
// nil.
func lastJSON(msgs []Message) ([]byte, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	return json.Marshal(msgs[len(msgs)-1])
}

// Release implements Store.
func (r *Redis) Release(ctx context.Context, l Lease, published []Message) (bool, error) {
	if err := l.Key.check(); err != nil {
		return false, fmt.Errorf("release %s: %w", l.Key, err)
	}
	last, err := lastJSON(published)
	if err != nil {
		return false, fmt.Errorf("release %s: encode: %w", l.Key, err)
	}
	ks := r.keys(l.Key)
	n, err := r.scripts.release.Run(ctx, r.client, []string{ks.lock, ks.inbox, ks.outbox}, lockValue(l.Token, l.Seq), len(published), last).Int64()
	if err != nil {
		return false, fmt.Errorf("release %s: %w", l.Key, err)
	}
	if n < 0 {
		return false, fmt.Errorf("release %s: %w", l.Key, ErrLockLost)
	}
	return n == 1, nil
}

// abandonSrc: KEYS lock; ARGV lock value. Compare and delete.
const abandonSrc = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`

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
// n_dequeue dequeue... state write-id. Returns {0 (written, or written
// already by this write id), 1 (lock lost), 2 (version conflict) or 3 (head
// is not the inbox's first item), state index entry to repair or an empty
// string, the inbox head after the write when read is 1 (id, seq, data, …)}.
//
// The state, ledger and fence keys expire together after a terminal write
// and are made persistent by any other write of the campaign; the inbox and
// outbox are never given a TTL (they delete themselves when empty). A write
// that changes the state, or writes a terminal one (which moves the expiry),
// records the state index entry (ix) the campaign must now have.
var commitSrc = ixDirtyLua + snapshotLua + `
local function head()
  if ARGV[11] == '1' then return inboxHead(KEYS[3], KEYS[4], ` + strconv.Itoa(InboxHead) + `) end
  return {}
end
if redis.call('GET', KEYS[6]) ~= ARGV[1] then return {1, '', {}} end
local version = tonumber(ARGV[3])
if version > 0 and redis.call('HGET', KEYS[1], 'wid') == ARGV[#ARGV] then return {0, ixDirty(KEYS[1]), head()} end
if ARGV[8] ~= '' then
  local first = redis.call('ZRANGE', KEYS[3], 0, 0)
  if first[1] ~= ARGV[8] then return {3, '', head()} end
end
local fence = tonumber(ARGV[2])
local sf = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
if sf > fence then return {1, '', {}} end
if version > 0 then
  local cur = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
  if cur ~= version - 1 then return {2, '', {}} end
  redis.call('HSET', KEYS[1], 'data', ARGV[4], 'version', ARGV[3], 'fence', ARGV[2], 'wid', ARGV[#ARGV])
  local state = ARGV[#ARGV-1]
  if redis.call('HGET', KEYS[1], 'st') ~= state or ARGV[5] == '1' then
    local t = redis.call('TIME')
    local exp = '0'
    if ARGV[5] == '1' then
      exp = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[6]))
    end
    redis.call('HSET', KEYS[1], 'st', state, 'ix', state .. '|' .. exp .. '|' .. t[1] .. string.format('%06d', tonumber(t[2])))
  end
end
local tn = tonumber(ARGV[9])
if tn > 0 and redis.call('LINDEX', KEYS[5], tn - 1) == ARGV[10] then redis.call('LTRIM', KEYS[5], tn, -1) end
local i = 12
local n = tonumber(ARGV[i])
for j = 1, n do redis.call('RPUSH', KEYS[5], ARGV[i+j]) end
i = i + n + 1
n = tonumber(ARGV[i])
for j = 1, n do redis.call('ZADD', KEYS[2], ARGV[7], ARGV[i+j]) end
i = i + n + 1
n = tonumber(ARGV[i])
for j = 1, n do
  redis.call('ZREM', KEYS[3], ARGV[i+j])
  redis.call('HDEL', KEYS[4], ARGV[i+j])
end
local kept = {KEYS[1], KEYS[2], KEYS[7]}
if version > 0 then
  for _, key in ipairs(kept) do
    if ARGV[5] == '1' then redis.call('PEXPIRE', key, ARGV[6]) else redis.call('PERSIST', key) end
  end
else
  local pttl = redis.call('PTTL', KEYS[1])
  if pttl == -2 then
    redis.call('PEXPIRE', KEYS[2], ARGV[6])
    redis.call('PEXPIRE', KEYS[7], ARGV[6])
  elseif pttl > 0 then
    redis.call('PEXPIRE', KEYS[2], pttl)
    redis.call('PEXPIRE', KEYS[7], pttl)
  end
end
return {0, ixDirty(KEYS[1]), head()}
`

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
	trimLast, err := lastJSON(w.Trim)
	if err != nil {
		return nil, fmt.Errorf("commit %s: encode: %w", k, err)
	}
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
		b, err := json.Marshal(msg)
		if err != nil {
			return nil, fmt.Errorf("commit %s: encode outbox message: %w", k, err)
		}
		args = append(args, b)
	}
	args = append(args, len(w.Applied))
	for _, id := range w.Applied {
		args = append(args, id)
	}
	args = append(args, len(w.Dequeue))
	for _, id := range w.Dequeue {
		args = append(args, id)
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
		if err := json.Unmarshal([]byte(s), &out[i]); err != nil {
			return nil, fmt.Errorf("outbox %s: decode message %d: %w", k, i, err)
		}
	}
	return out, nil
}

// trimSrc: KEYS lock outbox; ARGV lock-value n last. Trims the n oldest if
// the n-th is last. Returns 1 if held.
const trimSrc = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[2])
if n > 0 and redis.call('LINDEX', KEYS[2], n - 1) == ARGV[3] then redis.call('LTRIM', KEYS[2], n, -1) end
return 1
`

// TrimOutbox implements Store.
func (r *Redis) TrimOutbox(ctx context.Context, l Lease, published []Message) error {
	if err := l.Key.check(); err != nil {
		return fmt.Errorf("trim outbox %s: %w", l.Key, err)
	}
	// The message's JSON is what Commit stored: encoding/json writes the
	// same bytes for a Message decoded from them.
	var last []byte
	if n := len(published); n > 0 {
		var err error
		if last, err = json.Marshal(published[n-1]); err != nil {
			return fmt.Errorf("trim outbox %s: encode: %w", l.Key, err)
		}
	}
	ks := r.keys(l.Key)
	held, err := r.scripts.trim.Run(ctx, r.client, []string{ks.lock, ks.outbox}, lockValue(l.Token, l.Seq), len(published), last).Int64()
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

// listBatch is how many index entries List reads at a time; listScan bounds
// how many one call examines (a rare state filter may give a short page).
const (
	listBatch = 100
	listScan  = 5000
)

// unindexSrc: KEYS index; ARGV id score. Removes id if its score is
// still score (a create retried meanwhile re-scores it).
const unindexSrc = `
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
`

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
const ixDirtyLua = `
local function ixDirty(key)
  local v = redis.call('HMGET', key, 'ix', 'ixok')
  if v[1] and v[1] ~= v[2] then return v[1] end
  return ''
end
`

// ixMoveSrc: KEYS one set per state (fsm.States order), then the stamp
// hash; ARGV member, position of the state's set in KEYS, score, stamp.
// Moves member to that set unless the index shows an entry as recent.
// Returns 1 if moved.
const ixMoveSrc = `
local cur = redis.call('HGET', KEYS[#KEYS], ARGV[1])
if cur and tonumber(cur) >= tonumber(ARGV[4]) then return 0 end
for i = 1, #KEYS - 1 do redis.call('ZREM', KEYS[i], ARGV[1]) end
redis.call('ZADD', KEYS[tonumber(ARGV[2])], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[#KEYS], ARGV[1], ARGV[4])
return 1
`

// ixAckSrc: KEYS state; ARGV ix. Records that the index shows ix, if ix
// is still the campaign's entry (the hash may have expired or moved on).
const ixAckSrc = `
if redis.call('HGET', KEYS[1], 'ix') == ARGV[1] then redis.call('HSET', KEYS[1], 'ixok', ARGV[1]) end
return 0
`

// ixCountSrc: KEYS one set per state, then the stamp hash. Prunes up to
// 1000 expired entries per set, then returns the number of live entries of
// each set, in KEYS order.
const ixCountSrc = `
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local out = {}
for i = 1, #KEYS - 1 do
  local old = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now, 'LIMIT', 0, 1000)
  for _, m in ipairs(old) do
    redis.call('ZREM', KEYS[i], m)
    redis.call('HDEL', KEYS[#KEYS], m)
  end
  out[#out+1] = redis.call('ZCOUNT', KEYS[i], '(' .. now, '+inf')
end
return out
`

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

// reserveSrc: KEYS record; ARGV json ttl_ms owner. Returns the existing
// record, or false after storing the new one or finding the caller's own
// in-progress reservation (same owner).
const reserveSrc = `
local cur = redis.call('GET', KEYS[1])
if cur then
  if ARGV[3] ~= '' then
    local ok, rec = pcall(cjson.decode, cur)
    if ok and type(rec) == 'table' and rec['owner'] == ARGV[3] and (tonumber(rec['status']) or 0) == 0 then return false end
  end
  return cur
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
`

// ReserveIdem implements Store.
func (r *Redis) ReserveIdem(ctx context.Context, tenant, key string, rec IdemRecord, ttl time.Duration) (IdemRecord, bool, error) {
	if err := checkTenant(tenant); err != nil {
		return IdemRecord{}, false, fmt.Errorf("reserve idempotency key: %w", err)
	}
	if err := checkTTL("reserve idempotency key", ttl); err != nil {
		return IdemRecord{}, false, err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return IdemRecord{}, false, fmt.Errorf("reserve idempotency key %s/%s: encode: %w", tenant, key, err)
	}
	cur, err := r.scripts.reserve.Run(ctx, r.client, []string{r.idemKey(tenant, key)}, b, ttlMillis(ttl), rec.Owner).Text()
	if errors.Is(err, redis.Nil) {
		return IdemRecord{}, false, nil
	}
	if err != nil {
		return IdemRecord{}, false, fmt.Errorf("reserve idempotency key %s/%s: %w", tenant, key, err)
	}
	var got IdemRecord
	if err := json.Unmarshal([]byte(cur), &got); err != nil {
		return IdemRecord{}, false, fmt.Errorf("reserve idempotency key %s/%s: decode: %w", tenant, key, err)
	}
	return got, true, nil
}

// completeSrc: KEYS record; ARGV json fingerprint ttl_ms. Returns 0 if
// the stored record has another fingerprint, else 1 after writing.
const completeSrc = `
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, rec = pcall(cjson.decode, cur)
  if ok and type(rec) == 'table' and (rec['fingerprint'] or '') ~= ARGV[2] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
`

// CompleteIdem implements Store.
func (r *Redis) CompleteIdem(ctx context.Context, tenant, key string, rec IdemRecord, ttl time.Duration) error {
	if err := checkTenant(tenant); err != nil {
		return fmt.Errorf("complete idempotency key: %w", err)
	}
	if err := checkTTL("complete idempotency key", ttl); err != nil {
		return err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("complete idempotency key %s/%s: encode: %w", tenant, key, err)
	}
	n, err := r.scripts.complete.Run(ctx, r.client, []string{r.idemKey(tenant, key)}, b, rec.Fingerprint, ttlMillis(ttl)).Int64()
	if err != nil {
		return fmt.Errorf("complete idempotency key %s/%s: %w", tenant, key, err)
	}
	if n != 1 {
		return fmt.Errorf("complete idempotency key %s/%s: %w", tenant, key, ErrIdempotencyMismatch)
	}
	return nil
}

// deleteIdemSrc: KEYS record; ARGV owner. Deletes the record unless owner
// is given and the record is another's. Returns the number deleted.
const deleteIdemSrc = `
if ARGV[1] ~= '' then
  local cur = redis.call('GET', KEYS[1])
  if not cur then return 0 end
  local ok, rec = pcall(cjson.decode, cur)
  if not ok or type(rec) ~= 'table' or rec['owner'] ~= ARGV[1] then return 0 end
end
return redis.call('DEL', KEYS[1])
`

// DeleteIdem implements Store.
func (r *Redis) DeleteIdem(ctx context.Context, tenant, key, owner string) error {
	if err := checkTenant(tenant); err != nil {
		return fmt.Errorf("delete idempotency key: %w", err)
	}
	if err := r.scripts.deleteIdem.Run(ctx, r.client, []string{r.idemKey(tenant, key)}, owner).Err(); err != nil {
		return fmt.Errorf("delete idempotency key %s/%s: %w", tenant, key, err)
	}
	return nil
}

// secretSrc: KEYS secret; ARGV candidate. Stores candidate unless a secret
// is stored, and returns the stored one.
const secretSrc = `
local cur = redis.call('GET', KEYS[1])
if cur then return cur end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
`

// Secret implements Store. The secret is kept under P:secret:<name>, with
// no expiry.
func (r *Redis) Secret(ctx context.Context, name string, candidate []byte) ([]byte, error) {
	if name == "" || len(candidate) == 0 {
		return nil, fmt.Errorf("secret %q: empty name or candidate: %w", name, ErrInvalid)
	}
	b, err := r.scripts.secret.Run(ctx, r.client, []string{r.prefix + ":secret:" + name}, candidate).Text()
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	return []byte(b), nil
}

// Ping implements Store.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	return nil
}

// Close closes the connections.
func (r *Redis) Close() error {
	if err := r.client.Close(); err != nil {
		return fmt.Errorf("redis close: %w", err)
	}
	return nil
}

// slogPrintf adapts a slog.Logger to go-redis's internal logger.
type slogPrintf struct{ l *slog.Logger }

func (s slogPrintf) Printf(ctx context.Context, format string, v ...any) {
	s.l.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}

// RouteRedisLogs sends go-redis's own messages (dial failures, pool
// warnings; its logger is process-wide) to l at debug level instead of
// stderr: the store's callers see and log the errors themselves.
func RouteRedisLogs(l *slog.Logger) { redis.SetLogger(slogPrintf{l}) }
