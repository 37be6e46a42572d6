package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// BareConfig configures the bare pipeline: the least a command of this kind
// of service must cost, with no state machine, no inbox, no outbox and no
// step call.
type BareConfig struct {
	// JS is the JetStream of the NATS server to use; the pipeline makes its
	// own two streams there (deleted by Close).
	JS jetstream.JetStream
	// RedisURL, when set, makes each command take a lock (SET NX PX), read
	// its state (GET), write it with one Lua script (checking the lock) and
	// release the lock with another. Empty: JetStream only (publish, fetch,
	// event publish, ack).
	RedisURL string
	// Workers is the number of goroutines handling commands (default 256);
	// the Redis client has as many connections.
	Workers int
	// Batch bounds the messages asked for by one fetch (default 64).
	Batch int
}

// Bare is a running bare pipeline: publish with id → fetch (batch) →
// SET NX PX lock → GET state → Lua write → Lua release → synchronous event
// publish → ack.
type Bare struct {
	cfg     BareConfig
	js      jetstream.JetStream
	rdb     *redis.Client
	id      string
	cmdSubj string // prefix, ends with "."
	evtSubj string
	streams []string
	next    atomic.Int64 // messages published, for unique ids
	acked   atomic.Int64
	errs    atomic.Int64
	notify  chan struct{}
	state   string
	body    []byte
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// The bare pipeline's scripts: a write that checks the lock, and a release.
var (
	bareWrite = redis.NewScript(`if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1`)
	bareRelease = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)
)

// Sizes of what the bare pipeline writes: about a campaign's state and an
// event.
const (
	bareStateBytes = 1024
	bareEventBytes = 512
	bareLockTTL    = 30 * time.Second
	bareStateTTL   = 10 * time.Minute
	bareFetchWait  = 500 * time.Millisecond
)

// NewBare creates the pipeline's streams and consumer and starts its
// workers.
func NewBare(ctx context.Context, cfg BareConfig) (_ *Bare, err error) {
	if cfg.JS == nil {
		return nil, errors.New("bare pipeline: JS is required")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 256
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 64
	}
	id := randomHex(4)
	b := &Bare{cfg: cfg, js: cfg.JS, id: id, notify: make(chan struct{}, 1),
		cmdSubj: "bench.bare." + id + ".cmd.", evtSubj: "bench.bare." + id + ".evt.",
		state: strings.Repeat("s", bareStateBytes), body: []byte(`{"name":"bench","start":true}`)}
	defer func() {
		if err != nil {
			_ = b.Close()
		}
	}()
	if cfg.RedisURL != "" {
		opt, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("bare pipeline: redis URL: %w", err)
		}
		opt.PoolSize = cfg.Workers
		b.rdb = redis.NewClient(opt)
		for _, s := range []*redis.Script{bareWrite, bareRelease} {
			if err := s.Load(ctx, b.rdb).Err(); err != nil { // EVALSHA from the first command
				return nil, fmt.Errorf("bare pipeline: redis: %w", err)
			}
		}
		// Open the pool's connections now, not during the run: hold
		// Workers of them at once, then give them back.
		conns := make([]*redis.Conn, 0, cfg.Workers)
		for range cfg.Workers {
			c := b.rdb.Conn()
			conns = append(conns, c)
			if err := c.Ping(ctx).Err(); err != nil {
				break
			}
		}
		for _, c := range conns {
			_ = c.Close()
		}
	}
	up := strings.ToUpper(id)
	cmdStream, evtStream := "BENCH_BARE_"+up+"_CMD", "BENCH_BARE_"+up+"_EVT"
	for _, sc := range []jetstream.StreamConfig{
		{Name: cmdStream, Subjects: []string{b.cmdSubj + ">"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute},
		{Name: evtStream, Subjects: []string{b.evtSubj + ">"}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute},
	} {
		if _, err := cfg.JS.CreateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("bare pipeline: stream %s: %w", sc.Name, err)
		}
		b.streams = append(b.streams, sc.Name)
	}
	cons, err := cfg.JS.CreateOrUpdateConsumer(ctx, cmdStream, jetstream.ConsumerConfig{
		Durable: "bare", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
		MaxAckPending: max(1000, 2*(cfg.Workers+cfg.Batch)),
	})
	if err != nil {
		return nil, fmt.Errorf("bare pipeline: consumer: %w", err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	work := make(chan jetstream.Msg, cfg.Batch)
	slots := make(chan struct{}, cfg.Workers) // a send takes a worker, a receive gives one back
	for range cfg.Workers {
		b.wg.Go(func() {
			for m := range work {
				b.handle(rctx, m)
				<-slots
			}
		})
	}
	b.wg.Go(func() {
		defer close(work)
		b.fetch(rctx, cons, slots, work)
	})
	return b, nil
}

// fetch asks for as many messages as there are idle workers (up to Batch),
// and hands them out as they arrive.
func (b *Bare) fetch(ctx context.Context, cons jetstream.Consumer, slots chan struct{}, work chan<- jetstream.Msg) {
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		k := 1
	more:
		for k < b.cfg.Batch {
			select {
			case slots <- struct{}{}:
				k++
			default:
				break more
			}
		}
		batch, err := cons.Fetch(k, jetstream.FetchMaxWait(bareFetchWait))
		got := 0
		if err == nil {
			for m := range batch.Messages() {
				got++
				work <- m
			}
		}
		for range k - got {
			<-slots
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return
			}
		}
	}
}

// handle is one command's work.
func (b *Bare) handle(ctx context.Context, m jetstream.Msg) {
	if err := b.process(ctx, m); err != nil {
		b.errs.Add(1)
		_ = m.NakWithDelay(100 * time.Millisecond)
		return
	}
	if m.Ack() == nil {
		b.acked.Add(1)
		select {
		case b.notify <- struct{}{}:
		default:
		}
	}
}

func (b *Bare) process(ctx context.Context, m jetstream.Msg) error {
	key := strings.TrimPrefix(m.Subject(), b.cmdSubj)
	if b.rdb != nil {
		if err := b.store(ctx, key); err != nil {
			return err
		}
	}
	ev := nats.NewMsg(b.evtSubj + key)
	ev.Header.Set(jetstream.MsgIDHeader, "evt-"+m.Headers().Get(jetstream.MsgIDHeader))
	ev.Data = []byte(b.state[:bareEventBytes])
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := b.js.PublishMsg(pctx, ev)
	return err
}

// store is the Redis part: lock, read, write, release.
func (b *Bare) store(ctx context.Context, key string) (err error) {
	lock, state := "bench:bare:"+b.id+":lock:"+key, "bench:bare:"+b.id+":state:"+key
	token := randomHex(8)
	ok, err := b.rdb.SetNX(ctx, lock, token, bareLockTTL).Result()
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("lock held")
	}
	released := false
	defer func() {
		if err != nil && !released { // give the lock back for the redelivery
			_ = bareRelease.Run(context.WithoutCancel(ctx), b.rdb, []string{lock}, token).Err()
		}
	}()
	if err := b.rdb.Get(ctx, state).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	n, err := bareWrite.Run(ctx, b.rdb, []string{lock, state}, token, b.state, bareStateTTL.Milliseconds()).Int()
	if err != nil {
		return err
	}
	if n != 1 {
		return errors.New("lock lost")
	}
	if err := bareRelease.Run(ctx, b.rdb, []string{lock}, token).Err(); err != nil {
		return err
	}
	released = true
	return nil
}

// Run publishes n commands (asynchronously, with message ids) and returns
// how long it took until all of them were acknowledged.
func (b *Bare) Run(ctx context.Context, n int) (time.Duration, error) {
	start := time.Now()
	target := b.acked.Load() + int64(n)
	futures := make([]jetstream.PubAckFuture, 0, n)
	for range n {
		k := b.next.Add(1)
		m := nats.NewMsg(b.cmdSubj + "m" + strconv.FormatInt(k, 10))
		m.Header.Set(jetstream.MsgIDHeader, "bare-"+b.id+"-"+strconv.FormatInt(k, 10))
		m.Data = b.body
		f, err := b.js.PublishMsgAsync(m)
		if err != nil {
			return 0, fmt.Errorf("bare pipeline: publish: %w", err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return 0, fmt.Errorf("bare pipeline: publish: %w", err)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	for b.acked.Load() < target {
		select {
		case <-b.notify:
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return 0, fmt.Errorf("bare pipeline: %d of %d commands acknowledged: %w", int64(n)-(target-b.acked.Load()), n, ctx.Err())
		}
	}
	return time.Since(start), nil
}

// Errors is the number of commands that failed a step and were nakked.
func (b *Bare) Errors() int64 { return b.errs.Load() }

// Close stops the workers and deletes the pipeline's streams.
func (b *Bare) Close() error {
	if b.cancel != nil {
		b.cancel()
		b.wg.Wait()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var errs []error
	for _, s := range b.streams {
		if err := b.js.DeleteStream(ctx, s); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, err)
		}
	}
	if b.rdb != nil {
		errs = append(errs, b.rdb.Close())
	}
	return errors.Join(errs...)
}

// Baseline is what the bare pipeline measured.
type Baseline struct {
	Workers      int     `json:"workers"`
	WithRedis    bool    `json:"with_redis"`
	Commands     int     `json:"commands"`
	ElapsedS     float64 `json:"elapsed_s"`
	CommandsPerS float64 `json:"commands_per_s"`
	// CommandsPerCampaign is the service's (from the same run).
	CommandsPerCampaign float64 `json:"commands_per_campaign"`
	// BareCampaignsPerS is CommandsPerS ÷ CommandsPerCampaign.
	BareCampaignsPerS float64   `json:"bare_campaigns_per_s"`
	Errors            int64     `json:"errors"`
	Resources         Resources `json:"resources"`
	// CPUPerCommandMS is the CPU per command, in milliseconds.
	CPUPerCommandMS CPU      `json:"cpu_per_command_ms"`
	SelfIncludes    string   `json:"self_includes,omitempty"`
	NotMeasured     []string `json:"not_measured,omitempty"`
}

// RunBaseline runs the bare pipeline for commands commands and measures it
// with meters.
func RunBaseline(ctx context.Context, cfg BareConfig, meters Meters, commands int, commandsPerCampaign float64) (*Baseline, error) {
	if commands <= 0 {
		return nil, errors.New("baseline: no commands")
	}
	b, err := NewBare(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer func() { _ = b.Close() }()
	mt, err := newMeter(meters)
	if err != nil {
		return nil, err
	}
	defer mt.close()
	before := mt.snapshot(ctx)
	took, err := b.Run(ctx, commands)
	if err != nil {
		return nil, err
	}
	time.Sleep(100 * time.Millisecond) // the last acks reach the server
	after := mt.snapshot(context.WithoutCancel(ctx))
	bl := &Baseline{Workers: b.cfg.Workers, WithRedis: b.rdb != nil, Commands: commands, ElapsedS: took.Seconds(),
		CommandsPerCampaign: commandsPerCampaign, Errors: b.Errors()}
	if took > 0 {
		bl.CommandsPerS = float64(commands) / took.Seconds()
	}
	if commandsPerCampaign > 0 {
		bl.BareCampaignsPerS = bl.CommandsPerS / commandsPerCampaign
	}
	bl.Resources = mt.diff(before, after, commands)
	bl.CPUPerCommandMS = bl.Resources.CPU.scaled(1000 / float64(commands))
	bl.SelfIncludes = meters.SelfIncludes
	if !bl.WithRedis {
		bl.NotMeasured = append(bl.NotMeasured, "no Redis: the bare pipeline ran without its store operations")
	}
	bl.NotMeasured = append(bl.NotMeasured, mt.errs...)
	return bl, nil
}
