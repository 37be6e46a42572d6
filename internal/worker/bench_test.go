package worker_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaign-orchestrator/orchestrator/internal/bench"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/events/natstest"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/metrics"
	"github.com/campaign-orchestrator/orchestrator/internal/stepclient"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/worker"
	"github.com/campaign-orchestrator/orchestrator/internal/workflow"
	"github.com/campaign-orchestrator/orchestrator/streams"
)

// BenchmarkWorkerMetrics runs whole campaigns (one create-and-start command
// and six advances each: five steps against a fake downstream, and the
// completion) through two workers, each on its own embedded JetStream and
// in-process store, one without metrics and one with, alternating batches
// of 20 campaigns between them so that both see the same machine load. It
// reports the time per command of each and their ratio (on/off): the
// overhead of metrics per command. The ratio's noise (a few percent, more on
// a loaded machine; measure it by giving both workers nil metrics) is far
// above the instrumentation's cost, which internal/metrics's
// BenchmarkInstrumentation measures alone (about 100 ns per command).
func BenchmarkWorkerMetrics(b *testing.B) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.InitSteps(standard...)
	envs := []*benchEnv{newBenchEnv(b, nil), newBenchEnv(b, m)} // off, on
	var took [2]time.Duration
	var batches int
	b.ResetTimer()
	for b.Loop() {
		for j := range 2 {
			i := (batches + j) % 2 // alternate which goes first
			took[i] += envs[i].batch(b, batches)
		}
		batches++
	}
	b.StopTimer()
	const perBatch = benchCampaigns * 7
	off := float64(took[0].Nanoseconds()) / float64(batches*perBatch)
	on := float64(took[1].Nanoseconds()) / float64(batches*perBatch)
	b.ReportMetric(off, "ns/command-off")
	b.ReportMetric(on, "ns/command-on")
	b.ReportMetric(on/off, "on/off")
}

// benchCampaigns is the number of campaigns of one batch.
const benchCampaigns = 20

// benchEnv is one worker with its JetStream, store and downstream, and a
// count of the campaigns completed.
type benchEnv struct {
	js        jetstream.JetStream
	completed atomic.Int64
	done      chan struct{}
}

func newBenchEnv(b *testing.B, m *metrics.Metrics) *benchEnv {
	srv := natstest.Start(b)
	nc, js := natstest.Connect(b, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	specs, err := events.LoadSpecs(streams.FS)
	if err != nil {
		b.Fatal(err)
	}
	specs.Consumer.BackOff = nil
	if err := specs.Apply(ctx, js, events.Overrides{}); err != nil {
		b.Fatal(err)
	}
	st := store.NewMemory(store.Options{})
	b.Cleanup(func() { _ = st.Close() })
	down := newDownstream(b)
	w, err := worker.New(ctx, worker.Config{Workers: 16}, worker.Deps{
		JS: js, Store: st, Workflows: workflow.Default(down.URL()), Metrics: m,
		Steps: stepclient.New(stepclient.Config{Timeout: 5 * time.Second}),
	})
	if err != nil {
		b.Fatal(err)
	}
	e := &benchEnv{js: js, done: make(chan struct{}, 1)}
	sub, err := nc.Subscribe("campaign.evt.*.*.completed", func(*nats.Msg) {
		e.completed.Add(1)
		select {
		case e.done <- struct{}{}:
		default:
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(runCtx) })
	b.Cleanup(func() { stop(); wg.Wait() })
	return e
}

// batch publishes benchCampaigns create-and-start commands and returns how
// long it took until all their campaigns completed.
func (e *benchEnv) batch(b *testing.B, n int) time.Duration {
	start := time.Now()
	e.completed.Store(0)
	for i := range benchCampaigns {
		id := fmt.Sprintf("c%d-%d", n, i)
		msg := events.NewCommandMsg(events.CommandEnvelope{ID: "bench-" + id, Type: string(fsm.Create), TenantID: "bench", CampaignID: id,
			Payload: []byte(`{"name":"bench","start":true}`)}, "")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := e.js.PublishMsg(ctx, msg)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.After(60 * time.Second)
	for e.completed.Load() < benchCampaigns {
		select {
		case <-e.done:
		case <-deadline:
			b.Fatalf("%d of %d campaigns completed after 60 s", e.completed.Load(), benchCampaigns)
		}
	}
	return time.Since(start)
}

// BenchmarkCommandVsBarePipeline puts the worker's cost per command beside a
// bare JetStream pipeline measured in the same run, on the same machine load
// (alternating batches): the bare pipeline (internal/bench.Bare, the
// baseline of `orchestrator bench`, here without Redis) publishes each
// command with a message id, fetches it in batches for 16 handlers,
// publishes one event (with its own id) and acks; it has no store, no lock,
// no state machine and no step call.
// The worker runs whole campaigns (7 commands each: create-and-start, five
// steps against a local fake downstream, completion) on the in-process store.
// The ratio worker/bare is the price of the guarantees per command.
func BenchmarkCommandVsBarePipeline(b *testing.B) {
	ours := newBenchEnv(b, nil)
	bare := newBareEnv(b)
	var took [2]time.Duration
	var batches int
	for b.Loop() {
		if batches%2 == 0 {
			took[0] += ours.batch(b, batches)
			took[1] += bare.batch(b, batches)
		} else {
			took[1] += bare.batch(b, batches)
			took[0] += ours.batch(b, batches)
		}
		batches++
	}
	const perBatch = benchCampaigns * 7
	w := float64(took[0].Nanoseconds()) / float64(batches*perBatch)
	x := float64(took[1].Nanoseconds()) / float64(batches*perBatch)
	b.ReportMetric(w, "ns/command-worker")
	b.ReportMetric(x, "ns/command-bare")
	b.ReportMetric(w/x, "worker/bare")
}

// bareEnv is the baseline of BenchmarkCommandVsBarePipeline.
type bareEnv struct {
	bare *bench.Bare
}

func newBareEnv(b *testing.B) *bareEnv {
	srv := natstest.Start(b)
	_, js := natstest.Connect(b, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bare, err := bench.NewBare(ctx, bench.BareConfig{JS: js, Workers: 16})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = bare.Close() })
	return &bareEnv{bare: bare}
}

func (e *bareEnv) batch(b *testing.B, _ int) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	took, err := e.bare.Run(ctx, benchCampaigns*7)
	if err != nil {
		b.Fatal(err)
	}
	return took
}
