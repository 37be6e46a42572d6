package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/bench"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/events/natstest"
	"github.com/campaign-orchestrator/orchestrator/internal/stepclient"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/store/redistest"
	"github.com/campaign-orchestrator/orchestrator/internal/worker"
	"github.com/campaign-orchestrator/orchestrator/internal/workflow"
	"github.com/campaign-orchestrator/orchestrator/streams"
)

// commandsPerCampaign is what the standard workflow costs (internal/fsm): the
// create (with start), one advance per step (5) and the one that completes.
const (
	commandsPerCampaign = 1 + 5 + 1
	// eventsPerCampaign: created, started, step.started and step.succeeded
	// per step, completed.
	eventsPerCampaign = 2 + 2*5 + 1
)

// env is a worker on an embedded JetStream and the in-process store, its
// steps answered by a Fake.
type env struct {
	srv  *server.Server
	js   jetstream.JetStream
	fake *bench.Fake
	tgt  bench.Target
}

func newEnv(t *testing.T, latency time.Duration) *env {
	t.Helper()
	srv := natstest.Start(t)
	nc, js := natstest.Connect(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	specs, err := events.LoadSpecs(streams.FS)
	if err != nil {
		t.Fatal(err)
	}
	if err := specs.Apply(ctx, js, events.Overrides{}); err != nil {
		t.Fatal(err)
	}
	fake, err := bench.NewFake(latency)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Close() })
	st := store.NewMemory(store.Options{})
	t.Cleanup(func() { _ = st.Close() })
	w, err := worker.New(ctx, worker.Config{Workers: 8}, worker.Deps{
		JS: js, Store: st, Workflows: workflow.Default(fake.URL()),
		Steps: stepclient.New(stepclient.Config{Timeout: 5 * time.Second}),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(runCtx) })
	t.Cleanup(func() { stop(); wg.Wait() })
	return &env{srv: srv, js: js, fake: fake, tgt: bench.Target{NC: nc, JS: js, Fake: fake, Meters: bench.Meters{
		NC: nc, JSAPISource: "test", JSAPI: func(context.Context) (uint64, error) {
			info, err := srv.Jsz(&server.JSzOptions{})
			if err != nil {
				return 0, err
			}
			return info.API.Total, nil
		},
	}}}
}

func checkDist(t *testing.T, name string, d bench.Dist, n int64) {
	t.Helper()
	if d.Count != n {
		t.Errorf("%s: %d values, want %d", name, d.Count, n)
	}
	if !(d.P50 <= d.P90 && d.P90 <= d.P99 && d.P99 <= d.Max) {
		t.Errorf("%s: quantiles out of order: %+v", name, d)
	}
}

// A tiny closed-loop run: every campaign completes and the figures add up.
func TestRunClosedLoop(t *testing.T) {
	e := newEnv(t, 0)
	const n = 20
	var progress bytes.Buffer
	s, err := bench.Run(context.Background(), bench.Config{Campaigns: n, Timeout: 30 * time.Second, Progress: &progress}, e.tgt)
	if err != nil {
		t.Fatal(err)
	}
	if s.Campaigns != n || s.Accepted != n || s.Completed != n || s.Failed != 0 || s.Unfinished != 0 || s.SendErrors != 0 {
		t.Fatalf("campaigns %d, accepted %d, completed %d, failed %d, unfinished %d, send errors %d; want all %d completed",
			s.Campaigns, s.Accepted, s.Completed, s.Failed, s.Unfinished, s.SendErrors, n)
	}
	if s.Mode != "closed" || s.Concurrency != n {
		t.Errorf("mode %s, concurrency %d: want closed, %d (all at once)", s.Mode, s.Concurrency, n)
	}
	if s.Commands != n*commandsPerCampaign || s.CommandsPerCampaign != commandsPerCampaign {
		t.Errorf("%d commands (%.2f per campaign), want %d (%d per campaign)", s.Commands, s.CommandsPerCampaign, n*commandsPerCampaign, commandsPerCampaign)
	}
	// One message per campaign (its create, with start): the advances are
	// the lock holder's own, parked in the inbox, never published.
	if s.CommandsStored == nil || *s.CommandsStored != n {
		t.Errorf("commands stored in %s: %v, want %d", events.StreamCommands, s.CommandsStored, n)
	}
	if s.Events != n*eventsPerCampaign || s.EventsPerCampaign != eventsPerCampaign {
		t.Errorf("%d events (%.2f per campaign), want %d", s.Events, s.EventsPerCampaign, n*eventsPerCampaign)
	}
	if s.ElapsedS <= 0 || s.CampaignsPerS <= 0 || s.CommandsPerS <= 0 || s.EventsPerS <= 0 {
		t.Errorf("elapsed %.3f s, %.1f campaigns/s, %.1f commands/s, %.1f events/s: want all > 0", s.ElapsedS, s.CampaignsPerS, s.CommandsPerS, s.EventsPerS)
	}
	if got, want := s.CommandsPerS/s.CampaignsPerS, float64(commandsPerCampaign); got < want-0.01 || got > want+0.01 {
		t.Errorf("commands/s ÷ campaigns/s = %.3f, want %d", got, commandsPerCampaign)
	}
	checkDist(t, "create→completed", s.Latency, n)
	checkDist(t, "send", s.Send, n)
	if s.Latency.P50 <= 0 || s.Latency.Max > s.ElapsedS*1000+1 {
		t.Errorf("create→completed %+v: want within (0, elapsed %.0f ms]", s.Latency, s.ElapsedS*1000)
	}
	steps := int64(n * 5)
	checkDist(t, "step due → request", s.StepDue, steps)
	checkDist(t, "step due seen → request", s.StepDueSeen, steps)
	checkDist(t, "answer → step.succeeded seen", s.StepDone, steps)
	checkDist(t, "answer → step.succeeded time", s.StepDoneTime, steps)
	if s.StepCalls != int(steps) {
		t.Errorf("%d step calls, want %d", s.StepCalls, steps)
	}
	if s.StepDone.P50 < 0 {
		t.Errorf("answer → step.succeeded seen p50 %.3f ms: below 0 on one clock", s.StepDone.P50)
	}
	if s.Resources.CPU.Self <= 0 || s.CPUPerCampaignMS.Self <= 0 || s.PeakRSSMiB <= 0 {
		t.Errorf("CPU %.3f s (%.3f ms per campaign), peak RSS %.1f MiB: want > 0", s.Resources.CPU.Self, s.CPUPerCampaignMS.Self, s.PeakRSSMiB)
	}
	j := s.Resources.JetStreamAPI
	if j == nil || j.Server == nil || j.SeenTotal == 0 || j.Seen["CONSUMER.MSG.NEXT"] == 0 {
		t.Errorf("JetStream API figures %+v: want the server's total and the $JS.API requests seen, pulls included", j)
	}
	if s.Resources.Redis != nil {
		t.Errorf("Redis figures without Redis: %+v", s.Resources.Redis)
	}
	if !strings.Contains(progress.String(), "done") && s.ElapsedS > 1.5 {
		t.Errorf("no progress line in %.1f s: %q", s.ElapsedS, progress.String())
	}

	var text, js bytes.Buffer
	rep := &bench.Report{Service: s}
	rep.WriteText(&text)
	for _, want := range []string{"campaigns/s", "commands/s", "events/s", "create→completed", "(a) due→request", "(b) answer→seen", "CPU per campaign", "peak RSS"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON report: %v\n%s", err, js.String())
	}
}

// Open loop: campaigns leave at the rate whatever happens, latencies count
// from each intended send time, and steps that take time show in them.
func TestRunOpenLoop(t *testing.T) {
	const latency = 20 * time.Millisecond
	e := newEnv(t, latency)
	s, err := bench.Run(context.Background(), bench.Config{Rate: 50, Duration: 400 * time.Millisecond, Timeout: 30 * time.Second}, e.tgt)
	if err != nil {
		t.Fatal(err)
	}
	if s.Campaigns != 20 || s.Completed != 20 || s.Mode != "open" || s.Rate != 50 {
		t.Fatalf("%d campaigns, %d completed, mode %s at %g/s: want 20 completed, open at 50/s", s.Campaigns, s.Completed, s.Mode, s.Rate)
	}
	if min := 5 * latency; s.Latency.P50 < float64(min.Milliseconds()) {
		t.Errorf("create→completed p50 %.1f ms: below the five steps' %s", s.Latency.P50, min)
	}
	if s.ElapsedS < 0.38 {
		t.Errorf("20 campaigns at 50/s done in %.3f s: not sent at the rate", s.ElapsedS)
	}
}

// The bare pipeline, with and without Redis: every command acknowledged,
// exactly two scripts and about four Redis round trips per command.
func TestBaseline(t *testing.T) {
	srv := natstest.Start(t)
	nc, js := natstest.Connect(t, srv)
	url, _ := redistest.Start(t)
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	t.Cleanup(func() { _ = rc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 300
	meters := bench.Meters{NC: nc, Redis: rc}

	bl, err := bench.RunBaseline(ctx, bench.BareConfig{JS: js, RedisURL: url}, meters, n, commandsPerCampaign)
	if err != nil {
		t.Fatal(err)
	}
	if bl.Commands != n || bl.Errors != 0 || !bl.WithRedis || bl.Workers != 256 {
		t.Fatalf("%+v: want %d commands, no errors, with Redis, 256 goroutines", bl, n)
	}
	if bl.CommandsPerS <= 0 || bl.BareCampaignsPerS <= 0 {
		t.Fatalf("%.1f commands/s, %.1f campaigns/s", bl.CommandsPerS, bl.BareCampaignsPerS)
	}
	if got, want := bl.BareCampaignsPerS, bl.CommandsPerS/commandsPerCampaign; got < want*0.999 || got > want*1.001 {
		t.Errorf("bare campaigns/s %.2f, want commands/s ÷ %d = %.2f", got, commandsPerCampaign, want)
	}
	r := bl.Resources.Redis
	if r == nil {
		t.Fatal("no Redis figures")
	}
	if r.EvalSHA != 2*n || r.Eval != 0 {
		t.Errorf("EVALSHA %d, EVAL %d: want %d and 0 (a write and a release per command)", r.EvalSHA, r.Eval, 2*n)
	}
	if r.RoundTripsPerCommand < 4 || r.RoundTripsPerCommand > 4.5 {
		t.Errorf("%.2f Redis round trips per command: want 4 (SET NX, GET, two scripts) and a little connection setup", r.RoundTripsPerCommand)
	}
	if bl.Resources.CPU.RedisServer == nil {
		t.Error("no Redis CPU")
	}
	// The streams are gone: nothing is left on a shared server.
	for name := range js.StreamNames(ctx).Name() {
		if strings.HasPrefix(name, "BENCH_BARE_") {
			t.Errorf("stream %s left after the baseline", name)
		}
	}

	bl, err = bench.RunBaseline(ctx, bench.BareConfig{JS: js, Workers: 16}, bench.Meters{NC: nc}, n, commandsPerCampaign)
	if err != nil {
		t.Fatal(err)
	}
	if bl.WithRedis || bl.Commands != n || bl.CommandsPerS <= 0 || bl.Resources.Redis != nil {
		t.Errorf("without Redis: %+v", bl)
	}
}

// A Bare can run several batches (as BenchmarkCommandVsBarePipeline does).
func TestBareBatches(t *testing.T) {
	srv := natstest.Start(t)
	_, js := natstest.Connect(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bench.NewBare(ctx, bench.BareConfig{JS: js, Workers: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for range 3 {
		if d, err := b.Run(ctx, 140); err != nil || d <= 0 {
			t.Fatalf("batch: %s, %v", d, err)
		}
	}
}
