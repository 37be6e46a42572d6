package store

import (
	"context"
	"embed"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

var _ Store = (*Redis)(nil)

// The Lua scripts, one file each in lua/ (their KEYS and ARGV are written
// beside the variable that holds them). INBOX_HEAD in a script stands for
// InboxHead.
//
//go:embed lua/*.lua
var luaFiles embed.FS

// lua returns the script lua/<name>.lua.
func lua(name string) string {
	b, err := luaFiles.ReadFile("lua/" + name + ".lua")
	if err != nil {
		panic("store: " + err.Error()) // embedded: cannot happen
	}
	return strings.ReplaceAll(string(b), "INBOX_HEAD", strconv.Itoa(InboxHead))
}

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
// A campaign rebuilt from its history (Install) is written by one script
// too, only where the state hash has no data, with the same fields and
// expiries as a commit.
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
	client    redis.UniversalClient
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
	install    *redis.Script
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
		install:    redis.NewScript(installSrc),
	}
}

// NewRedis connects to the Redis server at url (redis:// or rediss://) and
// checks that it answers. It fails if the URL is malformed or the server is
// unreachable before ctx ends.
func NewRedis(ctx context.Context, url string, opts Options) (*Redis, error) {
	ro, err := redis.ParseURL(url)
	if err != nil {
		// The message may quote the URL, password included: leave it out.
		return nil, fmt.Errorf("redis: bad REDIS_URL: %s", strings.ReplaceAll(err.Error(), url, "<REDIS_URL>"))
	}
	return NewRedisClient(ctx, redis.NewClient(ro), opts)
}

// NewRedisClient makes a store on client: one server (redis.NewClient),
// Sentinel (redis.NewFailoverClient) or Redis Cluster
// (redis.NewClusterClient). It checks that the server answers before ctx
// ends, and closes client when it does not. The store owns client from then
// on (Close closes it).
func NewRedisClient(ctx context.Context, client redis.UniversalClient, opts Options) (*Redis, error) {
	opts = opts.withDefaults()
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redis %s: unreachable: %w", clientAddrs(client), err)
	}
	return &Redis{client: client, prefix: opts.Prefix, retention: opts.Retention, scripts: newRedisScripts()}, nil
}

// clientAddrs names the servers client talks to, for error messages (never
// a password).
func clientAddrs(client redis.UniversalClient) string {
	switch c := client.(type) {
	case *redis.Client:
		return c.Options().Addr
	case *redis.ClusterClient:
		return "cluster " + strings.Join(c.Options().Addrs, ",")
	}
	return "server"
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
