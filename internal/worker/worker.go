// Package worker consumes campaign commands from the shared durable consumer
// and drives each campaign: it parks every command in the campaign's inbox in
// the store, takes the campaign's lock, drains the inbox in stream order
// through the state machine, runs steps, and publishes what each state write
// put in the outbox.
//
// Its invariants (CONTRACT section 9):
//   - a command is acknowledged on JetStream only once it is durably in the
//     campaign's inbox or ledger, so nothing published is lost;
//   - while a campaign's inbox is not empty, either a live drainer holds its
//     lock, or an unacknowledged message of the campaign will be redelivered
//     after the lock expired (the consumer's ack wait exceeds LOCK_TTL), and
//     its redelivery drains the inbox; and whatever the timing of acks (a
//     frozen handler's late ack cannot be prevented), every worker sweeps
//     the store for campaigns with work and no holder and takes them over
//     (sweep.go);
//   - every state write is fenced and carries its events and the next advance
//     (the outbox), published after the write and trimmed after publishing.
//
// By concept: worker.go pulls batches from the consumer and bounds the
// handlers; consume.go handles one message (decode, park, the lock's
// heartbeat and its keeper, ack or nak); drain.go is the lock holder's loop
// (read ahead, write, publish, release); apply.go applies one inbox item
// through the state machine and commits its result; step.go runs a step's
// call outside the handlers; sweep.go takes over campaigns left without a
// holder; rebuild.go meets a campaign whose state the store lost.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/metrics"
	"github.com/campaign-orchestrator/orchestrator/internal/stepclient"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/tracing"
)

// StepCaller runs one attempt series of a step (internal/stepclient).
type StepCaller interface {
	Call(ctx context.Context, req stepclient.Request, onRetry func(stepclient.RetryNotice) error) (stepclient.Result, error)
}

// Config tunes a Worker. Zero values take the defaults.
type Config struct {
	// Workers is the number of commands handled at once (WORKERS, default 8).
	Workers int
	// LockTTL is the campaign lock's time to live, renewed while held
	// (LOCK_TTL, default 30s). It must be shorter than the consumer's ack wait.
	LockTTL time.Duration
	// Grace bounds how long Run waits for in-flight work after ctx ends
	// (default 10s); what is not finished by then is left to redelivery.
	Grace time.Duration
	// FetchWait bounds one pull request (default 1s).
	FetchWait time.Duration
	// HealthEvery is how often the store is pinged (default 1s).
	HealthEvery time.Duration
	// SweepEvery is how often the store is searched for campaigns with work
	// waiting and no holder (default LockTTL; see sweep.go).
	SweepEvery time.Duration
	// StepsInFlight bounds the step calls running at once (STEPS_IN_FLIGHT,
	// default 4096). A handler gives its slot (one of Workers) back when
	// its step call starts, so slow steps do not hold the pulling of
	// commands: Workers bounds the commands being parked and applied,
	// StepsInFlight the steps waiting on their services.
	StepsInFlight int
	// RebuildWait is how long a worker that meets a campaign whose state
	// the store lost waits, from then, before it reads the campaign's
	// history to rebuild it (default LockTTL + max(2s, LockTTL/4)): by
	// then any holder that outlived the loss has stopped publishing (a
	// holder publishes nothing once its lock may have expired), and the
	// margin lets a publish sent just before land. Shorter is unsafe.
	RebuildWait time.Duration
	// Retention is the store's CAMPAIGN_RETENTION: a campaign that ended
	// longer ago than that expired from the store rather than got lost, and
	// a command for it waits for no rebuild (0: not known; every missing
	// state with a history is waited for as a loss).
	Retention time.Duration
}

func (c Config) withDefaults() Config {
	if c.Workers <= 0 {
		c.Workers = 8
	}
	if c.LockTTL <= 0 {
		c.LockTTL = 30 * time.Second
	}
	if c.Grace <= 0 {
		c.Grace = 10 * time.Second
	}
	if c.FetchWait <= 0 {
		c.FetchWait = time.Second
	}
	if c.HealthEvery <= 0 {
		c.HealthEvery = time.Second
	}
	if c.SweepEvery <= 0 {
		c.SweepEvery = c.LockTTL
	}
	if c.StepsInFlight <= 0 {
		c.StepsInFlight = 4096
	}
	if c.RebuildWait <= 0 {
		c.RebuildWait = c.LockTTL + max(2*time.Second, c.LockTTL/4)
	}
	return c
}

// Store is what the worker asks of the store (store.Store satisfies it;
// the contract suite proves both implementations).
type Store interface {
	// The lock and the inbox.
	Enqueue(ctx context.Context, k store.Key, item store.Item, claim store.Claim) (store.Enqueued, error)
	Take(ctx context.Context, k store.Key, claim store.Claim) (*store.Lease, error)
	Stranded(ctx context.Context, cursor string, limit int) ([]store.Key, string, error)
	Inbox(ctx context.Context, k store.Key, limit int) ([]store.Item, error)
	Extend(ctx context.Context, l store.Lease, ttl time.Duration) error
	ExtendAll(ctx context.Context, leases []store.Lease, ttl time.Duration) []error
	Release(ctx context.Context, l store.Lease, published []store.Message) (bool, error)
	Abandon(ctx context.Context, l store.Lease) error
	// The campaign and its outbox.
	Load(ctx context.Context, k store.Key) (fsm.Campaign, error)
	Outbox(ctx context.Context, k store.Key) ([]store.Message, error)
	CommitRead(ctx context.Context, w store.Write) ([]store.Item, error)
	// A campaign whose state was lost, rebuilt from its history (rebuild.go),
	// once the loss's holders stopped (the store's loss epoch, a Secret).
	Installer
	Secret(ctx context.Context, name string, candidate []byte) ([]byte, error)
	Ping(ctx context.Context) error
}

var _ Store = store.Store(nil)

// Deps are the Worker's collaborators.
type Deps struct {
	JS        jetstream.JetStream
	Store     Store
	Steps     StepCaller
	Workflows events.Workflows
	Logger    *slog.Logger
	// Now is the clock of events and state (default time.Now).
	Now func() time.Time
	// Fault, used only by tests, is called at each point of CONTRACT
	// guarantee 5; a non-nil error makes the handler stop right there as if
	// the process had crashed: no ack, no nak, no lock release. While it
	// runs, the worker neither renews locks and messages nor pulls, so a
	// hook that blocks is a stalled process.
	Fault func(p FaultPoint, k store.Key) error
	// TracerProvider starts the worker's spans (nil: the global provider).
	TracerProvider trace.TracerProvider
	// Metrics records commands, steps, locks and fencing (nil: none).
	Metrics *metrics.Metrics
}

// FaultPoint names a point of CONTRACT guarantee 5.
type FaultPoint string

// The points where Deps.Fault is called.
const (
	BeforeStepCall FaultPoint = "before-step-call"
	AfterStepCall  FaultPoint = "after-step-call"
	BeforeWrite    FaultPoint = "before-write"
	AfterWrite     FaultPoint = "after-write"
	BeforePublish  FaultPoint = "before-publish"
	AfterPublish   FaultPoint = "after-publish"
	BeforeAck      FaultPoint = "before-ack"
)

// FaultPoints lists every FaultPoint.
var FaultPoints = []FaultPoint{BeforeStepCall, AfterStepCall, BeforeWrite, AfterWrite, BeforePublish, AfterPublish, BeforeAck}

// errCrash marks an injected crash: unwind without touching anything.
var errCrash = errors.New("injected crash")

// Worker consumes CAMPAIGN_COMMANDS through the durable consumer.
type Worker struct {
	cfg      Config
	d        Deps
	log      *slog.Logger
	hb       time.Duration    // heartbeat: lock extension and InProgress
	commands jetstream.Stream // CAMPAIGN_COMMANDS, for reading ahead
	events   *events.Publisher
	steps    chan struct{} // one per step call in flight (StepsInFlight)
	beatsMu  sync.Mutex
	beats    map[*heartbeat]struct{} // what keepAlive renews
	ready    atomic.Bool             // store reachable
	stalled  atomic.Int32            // fault hooks running: heartbeats pause
	up       atomic.Bool             // Run is pulling
	tracer   trace.Tracer

	lossMu    sync.Mutex
	lossEpoch string    // the store's loss epoch as this worker last saw it (rebuildDeadline)
	lossSeen  time.Time // when it first saw that one
}

// New checks the configuration against the consumer: the ack wait must be
// longer than the lock TTL (an unacknowledged message must come back only
// after its dead holder's lock expired).
func New(ctx context.Context, cfg Config, d Deps) (*Worker, error) {
	cfg = cfg.withDefaults()
	if d.JS == nil || d.Store == nil || d.Steps == nil || d.Workflows == nil {
		return nil, errors.New("worker: JS, Store, Steps and Workflows are required")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	cons, err := d.JS.Consumer(ctx, events.StreamCommands, events.ConsumerName)
	if err != nil {
		return nil, fmt.Errorf("worker: consumer %s on %s: %w", events.ConsumerName, events.StreamCommands, err)
	}
	ack := cons.CachedInfo().Config.AckWait
	if bo := cons.CachedInfo().Config.BackOff; len(bo) > 0 {
		ack = bo[0]
	}
	if ack <= cfg.LockTTL {
		return nil, fmt.Errorf("LOCK_TTL %s must be shorter than the consumer's ack wait %s", cfg.LockTTL, ack)
	}
	hb := min(cfg.LockTTL, ack) / 3
	commands, err := d.JS.Stream(ctx, events.StreamCommands)
	if err != nil {
		return nil, fmt.Errorf("worker: stream %s: %w", events.StreamCommands, err)
	}
	w := &Worker{cfg: cfg, d: d, log: d.Logger.With("component", "worker"), hb: hb, commands: commands, events: events.NewPublisher(d.JS),
		steps: make(chan struct{}, cfg.StepsInFlight), beats: map[*heartbeat]struct{}{}}
	w.tracer = tracing.Tracer(d.TracerProvider)
	w.ready.Store(d.Store.Ping(ctx) == nil)
	return w, nil
}

// Ready reports whether the worker is pulling commands: an error while the
// store is unreachable (the worker then stops pulling) or Run is not running.
func (w *Worker) Ready() error {
	switch {
	case !w.up.Load():
		return errors.New("worker: not running")
	case !w.ready.Load():
		return errors.New("worker: store unreachable, not pulling")
	}
	return nil
}

// Run pulls and handles commands until ctx ends, then waits up to Grace for
// the commands in flight; it returns nil after a clean stop.
func (w *Worker) Run(ctx context.Context) error {
	cons, err := w.d.JS.Consumer(ctx, events.StreamCommands, events.ConsumerName)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it began: a clean stop
		}
		return fmt.Errorf("worker: consumer: %w", err)
	}
	// work is cancelled Grace after ctx: in-flight handlers get that long.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(w.cfg.Grace, cancelWork)
		context.AfterFunc(work, func() { t.Stop() })
	})
	defer stop()

	var wg sync.WaitGroup
	wg.Go(func() { w.watchStore(ctx) })
	wg.Go(func() { w.sweep(work, ctx) })
	keep, stopKeep := context.WithCancel(work) // past the handlers, until Run returns
	defer stopKeep()
	go w.keepAlive(keep)
	slots := make(chan struct{}, w.cfg.Workers)
	pulls := newPullHealth(w.log, w.d.Metrics, w.cfg.FetchWait)
	w.up.Store(true)
	defer w.up.Store(false)
	w.log.Info("pulling commands", "workers", w.cfg.Workers, "lock_ttl", w.cfg.LockTTL)
	for ctx.Err() == nil {
		if !w.ready.Load() || w.stalled.Load() > 0 {
			sleep(ctx, w.cfg.HealthEvery/4)
			continue
		}
		// Wait for a free slot, then ask for as many messages as slots are free.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		n := 1 + w.cfg.Workers - len(slots)
		for range n - 1 {
			slots <- struct{}{}
		}
		fctx, cancelFetch := context.WithTimeout(ctx, w.cfg.FetchWait)
		batch, err := cons.Fetch(n, jetstream.FetchContext(fctx))
		if err != nil {
			cancelFetch()
			for range n {
				<-slots
			}
			if ctx.Err() == nil {
				sleep(ctx, pulls.failed(err))
			}
			continue
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			wg.Go(func() {
				free := sync.OnceFunc(func() { <-slots })
				defer free()
				w.handle(context.WithValue(work, slotKey{}, free), ctx, msg)
			})
		}
		cancelFetch()
		for range n - got {
			<-slots
		}
		switch err := batch.Error(); {
		case ctx.Err() != nil:
		case err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout):
			// No responders while a stream or consumer leader is down,
			// say: back off instead of spinning on it.
			sleep(ctx, pulls.failed(err))
		default:
			pulls.ok()
		}
	}
	w.log.Info("stopping: waiting for commands in flight", "grace", w.cfg.Grace)
	wg.Wait()
	return nil
}

// watchStore pings the store; while it fails the worker stops pulling.
func (w *Worker) watchStore(ctx context.Context) {
	t := time.NewTicker(w.cfg.HealthEvery)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, w.cfg.HealthEvery)
		err := w.d.Store.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if was := w.ready.Swap(err == nil); was != (err == nil) {
			if err != nil {
				w.log.Error("store unreachable: pulling stopped", "err", err)
			} else {
				w.log.Info("store reachable again: pulling resumed")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pullHealth backs pulls off while they fail, and logs once when they start
// failing (and when the error changes) and once when they work again.
type pullHealth struct {
	log     *slog.Logger
	m       *metrics.Metrics
	b       *backoff.ExponentialBackOff
	failing string // the last error logged; "" while pulls work
	since   time.Time
	n       int
}

func newPullHealth(log *slog.Logger, m *metrics.Metrics, base time.Duration) *pullHealth {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = min(base, 100*time.Millisecond)
	b.MaxInterval = 5 * time.Second
	return &pullHealth{log: log, m: m, b: b}
}

// failed records a failed pull and returns how long to wait.
func (p *pullHealth) failed(err error) time.Duration {
	p.m.FetchFailed()
	p.n++
	if msg := err.Error(); msg != p.failing {
		if p.failing == "" {
			p.since = time.Now()
		}
		p.failing = msg
		p.log.Warn("pulling commands fails: backing off", "err", err)
	}
	return p.b.NextBackOff()
}

// ok records a pull that worked.
func (p *pullHealth) ok() {
	if p.failing != "" {
		p.log.Info("pulling commands works again", "failed_pulls", p.n, "after", time.Since(p.since).Round(time.Millisecond))
		p.failing, p.n = "", 0
		p.b.Reset()
	}
}

// slotKey is the context key of a handler's function that gives its slot
// back (see Config.StepsInFlight).
type slotKey struct{}

// freeSlot gives the handler's slot back to the pulling loop, once.
func freeSlot(ctx context.Context) {
	if free, ok := ctx.Value(slotKey{}).(func()); ok {
		free()
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (w *Worker) fault(p FaultPoint, k store.Key) error {
	if w.d.Fault == nil {
		return nil
	}
	// A hook that blocks is a stalled process (a GC pause, swap): nothing of
	// this worker renews locks or messages meanwhile.
	w.stalled.Add(1)
	err := w.d.Fault(p, k)
	w.stalled.Add(-1)
	if err != nil {
		return fmt.Errorf("%w at %s: %v", errCrash, p, err)
	}
	return nil
}

// campaignLog returns a logger with the campaign's fields and the trace_id
// and span_id of ctx's span, if any.
func (w *Worker) campaignLog(ctx context.Context, k store.Key, cmdID string) *slog.Logger {
	attrs := append([]any{"tenant_id", k.Tenant, "campaign_id", k.Campaign, "command_id", cmdID}, tracing.LogAttrs(ctx)...)
	return w.log.With(attrs...)
}
