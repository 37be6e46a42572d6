package worker_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/events/natstest"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/metrics"
	"github.com/campaign-orchestrator/orchestrator/internal/stepclient"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/store/redistest"
	"github.com/campaign-orchestrator/orchestrator/internal/worker"
	"github.com/campaign-orchestrator/orchestrator/internal/workflow"
	"github.com/campaign-orchestrator/orchestrator/streams"
)

// Timing of every harness: short enough for tests, in the production ratios
// (ack wait > lock TTL > heartbeat).
const (
	lockTTL = 500 * time.Millisecond
	ackWait = 1500 * time.Millisecond
)

type harnessOpts struct {
	dupWindow  time.Duration // both streams' duplicate window; 0: the files'
	maxDeliver int           // 0: 5
	workers    int           // worker instances; 0: 1
	perWorker  int           // handlers per instance; 0: 4
	memory     bool          // in-process store instead of redis
	retention  time.Duration // CAMPAIGN_RETENTION of the store; 0: default
	fault      func(i int) func(worker.FaultPoint, store.Key) error
	metrics    *metrics.Metrics // every worker's metrics; nil: none
	// logged, when set, sees the message of every log record of worker i
	// (debug level and up), beside the TEST_LOG output.
	logged func(i int, msg string)
	sweep  time.Duration // Config.SweepEvery; 0: an hour (no sweep after the first)
	proxy  bool          // the Redis store through a redistest.Proxy (h.proxy)
	// stepTimeout is the step client's timeout per attempt; 0: 2 s.
	stepTimeout time.Duration
	// wrap, when set, is the store the workers see, around h.store.
	wrap func(store.Store) worker.Store
	// workflows, when set, is the registry the workers see, around h.wf.
	workflows func(events.Workflows) events.Workflows
}

type harness struct {
	t     *testing.T
	nc    *nats.Conn
	js    jetstream.JetStream
	redis *redistest.Server
	proxy *redistest.Proxy // with harnessOpts.proxy
	store store.Store
	down  *downstream
	wf    *workflow.Registry
	ws    []*worker.Worker
	stops []context.CancelFunc // stop one worker (as SIGTERM does)
}

func TestMain(m *testing.M) {
	store.RouteRedisLogs(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	srv := natstest.Start(t)
	nc, js := natstest.Connect(t, srv)
	h := &harness{t: t, nc: nc, js: js, down: newDownstream(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	specs, err := events.LoadSpecs(streams.FS)
	if err != nil {
		t.Fatal(err)
	}
	if o.dupWindow > 0 {
		for i := range specs.Streams {
			specs.Streams[i].Duplicates = o.dupWindow
		}
	}
	specs.Consumer.AckWait = ackWait
	specs.Consumer.BackOff = nil
	specs.Consumer.MaxDeliver = 5
	if o.maxDeliver > 0 {
		specs.Consumer.MaxDeliver = o.maxDeliver
	}
	if err := specs.Apply(ctx, js, events.Overrides{}); err != nil {
		t.Fatal(err)
	}
	if o.memory {
		h.store = store.NewMemory(store.Options{Retention: o.retention})
	} else {
		h.redis = redistest.New(t)
		url := h.redis.URL()
		if o.proxy {
			h.proxy = redistest.NewProxy(t, h.redis.Addr())
			url = h.proxy.URL()
		}
		rs, err := store.NewRedis(ctx, url, store.Options{Retention: o.retention})
		if err != nil {
			t.Fatal(err)
		}
		h.store = rs
	}
	t.Cleanup(func() { _ = h.store.Close() })
	h.wf = workflow.Default(h.down.URL())
	steps := stepclient.New(stepclient.Config{MaxRetries: 2, BackoffBase: 20 * time.Millisecond, Timeout: cmp.Or(o.stepTimeout, 2*time.Second)})
	n := max(o.workers, 1)
	var wg sync.WaitGroup
	for i := range n {
		var fault func(worker.FaultPoint, store.Key) error
		if o.fault != nil {
			fault = o.fault(i)
		}
		log := testLogger(t, i)
		if o.logged != nil {
			log = slog.New(hookHandler{Handler: log.Handler(), hook: func(msg string) { o.logged(i, msg) }})
		}
		sweep := o.sweep
		if sweep == 0 {
			sweep = time.Hour // the tests of redelivery must see it alone
		}
		w, err := worker.New(ctx, worker.Config{Workers: max(o.perWorker, 4), LockTTL: lockTTL, Grace: 2 * time.Second, HealthEvery: 100 * time.Millisecond, FetchWait: 200 * time.Millisecond, SweepEvery: sweep, Retention: o.retention},
			worker.Deps{JS: js, Store: wrapStore(o.wrap, h.store), Steps: steps, Workflows: wrapWorkflows(o.workflows, h.wf), Logger: log, Fault: fault, Metrics: o.metrics})
		if err != nil {
			t.Fatal(err)
		}
		h.ws = append(h.ws, w)
		runCtx, stop := context.WithCancel(context.Background())
		h.stops = append(h.stops, stop)
		wg.Go(func() {
			if err := w.Run(runCtx); err != nil {
				t.Errorf("worker %d: %v", i, err)
			}
		})
	}
	t.Cleanup(func() {
		for _, stop := range h.stops {
			stop()
		}
		wg.Wait()
	})
	return h
}

func testLogger(t *testing.T, i int) *slog.Logger {
	if os.Getenv("TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name(), "worker", i)
}

// hookHandler passes every record's message to hook, then to Handler.
type hookHandler struct {
	slog.Handler
	hook func(msg string)
}

func (h hookHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h hookHandler) Handle(ctx context.Context, r slog.Record) error {
	h.hook(r.Message)
	if h.Handler.Enabled(ctx, r.Level) {
		return h.Handler.Handle(ctx, r)
	}
	return nil
}

func (h hookHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return hookHandler{Handler: h.Handler.WithAttrs(as), hook: h.hook}
}

func (h hookHandler) WithGroup(name string) slog.Handler {
	return hookHandler{Handler: h.Handler.WithGroup(name), hook: h.hook}
}

// publish sends a command with Nats-Msg-Id id and waits for the PubAck.
func (h *harness) publish(tenant, campaign string, verb fsm.Verb, id string, payload any) {
	h.t.Helper()
	var raw json.RawMessage
	if payload != nil {
		b, err := json.Marshal(payload)
		if err != nil {
			h.t.Fatal(err)
		}
		raw = b
	}
	m := events.NewCommandMsg(events.CommandEnvelope{ID: id, Type: string(verb), TenantID: tenant, CampaignID: campaign, Payload: raw}, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.js.PublishMsg(ctx, m); err != nil {
		h.t.Fatalf("publish %s %s/%s: %v", verb, tenant, campaign, err)
	}
}

func (h *harness) create(tenant, campaign string, start bool) {
	h.t.Helper()
	h.publish(tenant, campaign, fsm.Create, newID(), fsm.CreatePayload{Name: "test " + campaign, Start: start})
}

var idMu sync.Mutex
var idN int

func newID() string {
	idMu.Lock()
	defer idMu.Unlock()
	idN++
	return fmt.Sprintf("test-%d-%d", time.Now().UnixNano(), idN)
}

// history reads the campaign's events.
func (h *harness) history(tenant, campaign string) []events.CloudEvent {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	evs, err := events.History(ctx, h.js, tenant, campaign)
	if err != nil {
		h.t.Fatalf("history %s/%s: %v", tenant, campaign, err)
	}
	return evs
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitEvent waits until the campaign's history holds an event of type typ
// (after `after` events) and returns the history.
func (h *harness) waitEvent(tenant, campaign, typ string, after int, d time.Duration) []events.CloudEvent {
	h.t.Helper()
	var evs []events.CloudEvent
	waitFor(h.t, d, fmt.Sprintf("%s on %s/%s", typ, tenant, campaign), func() bool {
		evs = h.history(tenant, campaign)
		for _, e := range evs[min(after, len(evs)):] {
			if e.Type == typ {
				return true
			}
		}
		return false
	})
	return evs
}

// waitIdle waits until the campaign's inbox and outbox are empty and its
// stored state agrees with the last event; it returns the stored campaign.
func (h *harness) waitIdle(tenant, campaign string) fsm.Campaign {
	h.t.Helper()
	var c fsm.Campaign
	k := store.Key{Tenant: tenant, Campaign: campaign}
	ctx := context.Background()
	waitFor(h.t, 10*time.Second, "campaign "+k.String()+" idle", func() bool {
		in, err1 := h.store.Inbox(ctx, k, 1)
		out, err2 := h.store.Outbox(ctx, k)
		var err3 error
		c, err3 = h.store.Load(ctx, k)
		evs := h.history(tenant, campaign)
		return err1 == nil && err2 == nil && err3 == nil && len(in) == 0 && len(out) == 0 && len(evs) > 0 && evs[len(evs)-1].Seq() == c.Seq
	})
	return c
}

// checkSequence: 1..N, no gap, no repeat; ids and Nats-Msg-Ids agree.
func checkSequence(t *testing.T, evs []events.CloudEvent) {
	t.Helper()
	for i, e := range evs {
		if e.Seq() != uint64(i+1) {
			t.Fatalf("event #%d has sequence %s: want %d (types %s)", i+1, e.Sequence, i+1, types(evs))
		}
		if want := events.EventID(e.TenantID, e.CampaignID, uint64(i+1)); e.ID != want {
			t.Fatalf("event #%d id %q, want %q", i+1, e.ID, want)
		}
	}
}

// stateOf replays the events' lifecycle to the state they lead to.
func stateOf(evs []events.CloudEvent) fsm.State {
	var s fsm.State
	for _, e := range evs {
		switch e.Type {
		case fsm.EvCreated:
			s = fsm.Pending
		case fsm.EvStarted, fsm.EvResumed, fsm.EvRetried:
			s = fsm.Running
		case fsm.EvPaused:
			s = fsm.Paused
		case fsm.EvCompleted:
			s = fsm.Completed
		case fsm.EvFailed:
			s = fsm.Failed
		case fsm.EvCancelled:
			s = fsm.Cancelled
		}
	}
	return s
}

func types(evs []events.CloudEvent) string {
	var out []string
	for _, e := range evs {
		t := strings.TrimPrefix(e.Type, "campaign.")
		var d struct {
			Step string `json:"step"`
		}
		if json.Unmarshal(e.Data, &d) == nil && d.Step != "" && strings.HasPrefix(t, "step.") {
			t += "(" + d.Step + ")"
		}
		out = append(out, t)
	}
	return strings.Join(out, ",")
}

func count(evs []events.CloudEvent, typ string) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// checkKeys: every repeated call of a step carries the same Idempotency-Key
// within a run, and the key has the contract's shape.
func checkKeys(t *testing.T, tenant, campaign string, calls []call) {
	t.Helper()
	for _, c := range calls {
		prefix := tenant + "." + campaign + "." + c.Step + "."
		if !strings.HasPrefix(c.Key, prefix) || c.Fence == "" {
			t.Errorf("call of %s: Idempotency-Key %q (want %s<run>), fence %q", c.Step, c.Key, prefix, c.Fence)
		}
	}
}

var errInjected = errors.New("injected")

// noDeadLetters fails the test if CAMPAIGN_DLQ holds anything.
func (h *harness) noDeadLetters() {
	h.t.Helper()
	ctx := context.Background()
	dlq, err := h.js.Stream(ctx, events.StreamDLQ)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := dlq.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		return
	}
	var what []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		if m, err := dlq.GetMsg(ctx, seq); err == nil {
			what = append(what, fmt.Sprintf("%s (command %s): %s", m.Subject, m.Header.Get(events.HdrCommandID), m.Header.Get(events.HdrReason)))
		}
	}
	h.t.Fatalf("%d dead letters: %s", info.State.Msgs, strings.Join(what, "; "))
}

// stall is a stop-the-world pause of whichever worker first finishes a
// step call of one campaign: it blocks there (and so pulls nothing and
// renews nothing) until wake.
type stall struct {
	campaign string
	release  chan struct{}
	woke     chan struct{} // closed when the stalled handler finished its message
	stalls   atomic.Int32
	worker   atomic.Int32 // index of the stalled worker; -1 before
	released atomic.Bool
	wokeOnce sync.Once
}

func newStall(campaign string) *stall {
	s := &stall{campaign: campaign, release: make(chan struct{}), woke: make(chan struct{})}
	s.worker.Store(-1)
	return s
}

// fault is harnessOpts.fault.
func (s *stall) fault(i int) func(worker.FaultPoint, store.Key) error {
	return func(p worker.FaultPoint, k store.Key) error {
		if k.Campaign != s.campaign {
			return nil
		}
		if p == worker.AfterStepCall && s.stalls.Add(1) == 1 {
			s.worker.Store(int32(i))
			select { // far past the lock's TTL
			case <-s.release:
			case <-time.After(20 * time.Second):
			}
			return nil
		}
		if p == worker.BeforeAck && int32(i) == s.worker.Load() && s.released.Load() {
			s.wokeOnce.Do(func() { close(s.woke) })
		}
		return nil
	}
}

// wake ends the stall and waits until the stalled handler finished its
// message (its stale write refused).
func (s *stall) wake(t *testing.T) {
	t.Helper()
	s.released.Store(true)
	close(s.release)
	select {
	case <-s.woke:
	case <-time.After(10 * time.Second):
		t.Fatal("the stalled worker never finished its message")
	}
}

// waitCommandsEmpty waits until CAMPAIGN_COMMANDS holds no message: every
// command was acknowledged or terminated, none will be redelivered.
func (h *harness) waitCommandsEmpty() {
	h.t.Helper()
	ctx := context.Background()
	s, err := h.js.Stream(ctx, events.StreamCommands)
	if err != nil {
		h.t.Fatal(err)
	}
	waitFor(h.t, 20*time.Second, events.StreamCommands+" empty", func() bool {
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
}

// waitDeadLetters waits until acme/campaign has a dead letter and returns
// the reasons of its dead letters.
func (h *harness) waitDeadLetters(campaign string) []string {
	h.t.Helper()
	var dl []string
	waitFor(h.t, 20*time.Second, campaign+" dead-lettered", func() bool {
		dl = h.deadLetters(campaign)
		return len(dl) > 0
	})
	return dl
}

// deadLetters returns the reasons of acme/campaign's dead letters.
func (h *harness) deadLetters(campaign string) []string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := h.js.OrderedConsumer(ctx, events.StreamDLQ, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.DLQSubject("acme", campaign)}})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for {
		info, err := cons.Info(ctx)
		if err != nil {
			h.t.Fatal(err)
		}
		if info.NumPending == 0 {
			return out
		}
		m, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			h.t.Fatalf("read dead letters of %s: %v", campaign, err)
		}
		out = append(out, m.Headers().Get(events.HdrReason))
	}
}

func wrapStore(wrap func(store.Store) worker.Store, s store.Store) worker.Store {
	if wrap == nil {
		return s
	}
	return wrap(s)
}

func wrapWorkflows(wrap func(events.Workflows) events.Workflows, wf events.Workflows) events.Workflows {
	if wrap == nil {
		return wf
	}
	return wrap(wf)
}
