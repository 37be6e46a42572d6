package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/metrics"
	"github.com/campaign-orchestrator/orchestrator/internal/metrics/metricstest"
)

// everyCall calls every recording method of m once.
func everyCall(m *metrics.Metrics) {
	m.InitSteps("validate")
	m.CommandReceived("create")
	m.CommandApplied("create")
	m.CommandRejected("start")
	m.CommandDuplicated("pause")
	m.CommandDeadLettered("resume", metrics.DLQUnknownCampaign)
	m.StepFinished("validate", metrics.OutcomeSucceeded, 42*time.Millisecond)
	m.StepRetrying("validate", metrics.RetryNetwork)
	m.LockAcquired()
	m.LockContended()
	m.LockLost()
	m.FencingRejected(metrics.FenceConflict)
}

func TestNilMetricsRecordNothing(t *testing.T) {
	var m *metrics.Metrics
	everyCall(m) // must not panic
}

func TestValues(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	everyCall(m)
	m.StepFinished("validate", metrics.OutcomeFailed, 2*time.Second)
	s := metricstest.Gather(t, reg)
	for _, c := range []struct {
		name string
		kv   []string
		want float64
	}{
		{"orchestrator_commands_received_total", []string{"verb", "create"}, 1},
		{"orchestrator_commands_received_total", []string{"verb", "start"}, 0},
		{"orchestrator_commands_applied_total", []string{"verb", "create"}, 1},
		{"orchestrator_commands_rejected_total", []string{"verb", "start"}, 1},
		{"orchestrator_commands_duplicated_total", []string{"verb", "pause"}, 1},
		{"orchestrator_commands_dead_lettered_total", []string{"verb", "resume", "reason", "unknown_campaign"}, 1},
		{"orchestrator_steps_total", []string{"step", "validate", "outcome", "succeeded"}, 1},
		{"orchestrator_steps_total", []string{"step", "validate", "outcome", "failed"}, 1},
		{"orchestrator_steps_total", []string{"step", "validate", "outcome", "retrying"}, 1},
		{"orchestrator_step_duration_seconds_count", []string{"step", "validate", "outcome", "succeeded"}, 1},
		{"orchestrator_step_duration_seconds_sum", []string{"step", "validate", "outcome", "failed"}, 2},
		{"orchestrator_step_duration_seconds_bucket", []string{"step", "validate", "outcome", "succeeded", "le", "0.05"}, 1},
		{"orchestrator_step_duration_seconds_bucket", []string{"step", "validate", "outcome", "succeeded", "le", "0.025"}, 0},
		{"orchestrator_step_retries_total", []string{"reason", "network"}, 1},
		{"orchestrator_step_retries_total", []string{"reason", "timeout"}, 0},
		{"orchestrator_lock_acquisitions_total", nil, 1},
		{"orchestrator_lock_contentions_total", nil, 1},
		{"orchestrator_lock_lost_total", nil, 1},
		{"orchestrator_fencing_rejections_total", []string{"reason", "conflict"}, 1},
		{"orchestrator_fencing_rejections_total", []string{"reason", "lock_lost"}, 0},
	} {
		if !s.Has(c.name, c.kv...) {
			t.Errorf("%s%v: not exposed", c.name, c.kv)
			continue
		}
		if got := s.Sum(c.name, c.kv...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.kv, got, c.want)
		}
	}
}

// TestSeriesExistAtZero: the bounded series are exposed before anything
// happens, so rate() and the dashboard work from the start.
func TestSeriesExistAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.InitSteps("validate", "segment")
	s := metricstest.Gather(t, reg)
	for _, v := range append(fsm.Verbs, metrics.VerbInvalid) {
		for _, name := range []string{"received", "applied", "rejected", "duplicated"} {
			if !s.Has("orchestrator_commands_"+name+"_total", "verb", string(v)) {
				t.Errorf("orchestrator_commands_%s_total{verb=%q} missing", name, v)
			}
		}
		for _, r := range []string{metrics.DLQInvalid, metrics.DLQUnknownCampaign, metrics.DLQMaxDeliveries} {
			if !s.Has("orchestrator_commands_dead_lettered_total", "verb", string(v), "reason", r) {
				t.Errorf("dead_lettered{verb=%q,reason=%q} missing", v, r)
			}
		}
	}
	for _, step := range []string{"validate", "segment"} {
		if !s.Has("orchestrator_step_duration_seconds_count", "step", step, "outcome", "succeeded") ||
			!s.Has("orchestrator_steps_total", "step", step, "outcome", "retrying") {
			t.Errorf("step %s: series missing", step)
		}
	}
	if got := s.Sum("orchestrator_commands_received_total"); got != 0 {
		t.Errorf("received before anything: %v", got)
	}
}

// TestLabelsBounded: values outside the known sets collapse into "invalid"
// or "other"; step names are capped.
func TestLabelsBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.CommandReceived("drop-table")
	m.CommandApplied("")
	m.CommandDeadLettered("nope", "because")
	m.StepRetrying("validate", "cosmic rays")
	m.FencingRejected("???")
	m.StepFinished("validate", "exploded", time.Second)
	for i := range metrics.MaxStepLabels + 10 {
		m.StepFinished(fmt.Sprintf("step-%d", i), metrics.OutcomeSucceeded, time.Millisecond)
	}
	s := metricstest.Gather(t, reg)
	if got := s.Sum("orchestrator_commands_received_total", "verb", "invalid"); got != 1 {
		t.Errorf("received{verb=invalid} = %v", got)
	}
	if got := s.Sum("orchestrator_commands_applied_total", "verb", "invalid"); got != 1 {
		t.Errorf("applied{verb=invalid} = %v", got)
	}
	if got := s.Sum("orchestrator_commands_dead_lettered_total", "verb", "invalid", "reason", "other"); got != 1 {
		t.Errorf("dead_lettered{verb=invalid,reason=other} = %v", got)
	}
	if got := s.Sum("orchestrator_step_retries_total", "reason", "other"); got != 1 {
		t.Errorf("step_retries{reason=other} = %v", got)
	}
	if got := s.Sum("orchestrator_fencing_rejections_total", "reason", "other"); got != 1 {
		t.Errorf("fencing_rejections{reason=other} = %v", got)
	}
	if got := s.Sum("orchestrator_steps_total", "outcome", "other"); got != 1 {
		t.Errorf("steps{outcome=other} = %v", got)
	}
	steps := s.LabelValues("orchestrator_steps_total", "step")
	if len(steps) != metrics.MaxStepLabels+1 { // the cap, and "other"
		t.Errorf("%d step label values, want %d", len(steps), metrics.MaxStepLabels+1)
	}
	if got := s.Sum("orchestrator_steps_total", "step", "other"); got != 11 {
		t.Errorf("steps{step=other} = %v, want 11", got)
	}
	for _, l := range []string{"verb", "reason", "outcome"} {
		for _, name := range s.Names() {
			for _, v := range s.LabelValues(name, l) {
				if strings.ContainsAny(v, " ?-") || v == "" {
					t.Errorf("%s{%s=%q}: unbounded value leaked", name, l, v)
				}
			}
		}
	}
}

// TestNaming checks the Prometheus conventions on everything the package
// exposes, the collectors included.
func TestNaming(t *testing.T) {
	reg := prometheus.NewRegistry()
	everyCall(metrics.New(reg))
	reg.MustRegister(
		metrics.NewConsumerCollector(fakeConsumer(&jetstream.ConsumerInfo{}), "CAMPAIGN_COMMANDS", "orchestrator", metrics.CollectorOpts{}),
		metrics.NewCampaignsCollector(fakeCounter(nil), metrics.CollectorOpts{}),
	)
	s := metricstest.Gather(t, reg)
	if len(s.Types) < 15 {
		t.Fatalf("only %d families exposed: %v", len(s.Types), s.Types)
	}
	for name, typ := range s.Types {
		if !strings.HasPrefix(name, "orchestrator_") {
			t.Errorf("%s: no orchestrator_ prefix", name)
		}
		switch typ {
		case "counter":
			if !strings.HasSuffix(name, "_total") {
				t.Errorf("counter %s: no _total suffix", name)
			}
		case "histogram":
			if !strings.HasSuffix(name, "_seconds") {
				t.Errorf("histogram %s: not in seconds", name)
			}
		case "gauge":
			if strings.HasSuffix(name, "_total") {
				t.Errorf("gauge %s: _total suffix", name)
			}
		default:
			t.Errorf("%s: unexpected type %s", name, typ)
		}
	}
	for _, smp := range s.Samples {
		for l := range smp.Labels {
			switch l {
			case "tenant", "tenant_id", "campaign", "campaign_id", "command_id", "id":
				t.Errorf("%s has the unbounded label %s", smp.Name, l)
			}
		}
	}
}

func TestNewTwiceSharesCollectors(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, b := metrics.New(reg), metrics.New(reg)
	a.CommandApplied("create")
	b.CommandApplied("create")
	b.StepFinished("validate", metrics.OutcomeSucceeded, time.Millisecond)
	a.StepFinished("validate", metrics.OutcomeSucceeded, time.Millisecond)
	s := metricstest.Gather(t, reg)
	if got := s.Sum("orchestrator_commands_applied_total", "verb", "create"); got != 2 {
		t.Fatalf("applied{create} = %v, want 2", got)
	}
	if got := s.Sum("orchestrator_step_duration_seconds_count"); got != 2 {
		t.Fatalf("step durations = %v, want 2", got)
	}
	// A different metric under one of the names is a programming error.
	clash := prometheus.NewRegistry()
	clash.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "orchestrator_lock_lost_total", Help: "x"}))
	defer func() {
		if recover() == nil {
			t.Fatal("New on a registry with a clashing metric did not panic")
		}
	}()
	metrics.New(clash)
}

func TestNewWithoutRegistry(t *testing.T) {
	m := metrics.New(nil)
	everyCall(m) // usable, registered nowhere
}

// fakeConsumer answers Info with info (or err) and counts the calls.
type consumerFake struct {
	mu    sync.Mutex
	info  *jetstream.ConsumerInfo
	err   error
	calls int
	block bool // wait for the context to end
}

func fakeConsumer(info *jetstream.ConsumerInfo) *consumerFake { return &consumerFake{info: info} }

func (f *consumerFake) Info(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	f.mu.Lock()
	f.calls++
	info, err, block := f.info, f.err, f.block
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return info, err
}

func (f *consumerFake) set(info *jetstream.ConsumerInfo, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.info, f.err = info, err
}

func (f *consumerFake) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

type counterFake struct {
	counts map[fsm.State]int64
	err    error
}

func fakeCounter(c map[fsm.State]int64) *counterFake { return &counterFake{counts: c} }

func (f *counterFake) CountByState(context.Context) (map[fsm.State]int64, error) {
	return f.counts, f.err
}

// clock is a manual clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestConsumerCollector(t *testing.T) {
	clk := &clock{now: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	f := fakeConsumer(&jetstream.ConsumerInfo{NumPending: 7, NumAckPending: 3, NumRedelivered: 2, NumWaiting: 1})
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewConsumerCollector(f, "CAMPAIGN_COMMANDS", "orchestrator", metrics.CollectorOpts{Now: clk.Now, CacheFor: time.Second}))
	lbl := []string{"stream", "CAMPAIGN_COMMANDS", "consumer", "orchestrator"}

	s := metricstest.Gather(t, reg)
	for name, want := range map[string]float64{
		"orchestrator_consumer_pending_messages":     7,
		"orchestrator_consumer_ack_pending_messages": 3,
		"orchestrator_consumer_redelivered_messages": 2,
		"orchestrator_consumer_waiting_pulls":        1,
	} {
		if !s.Has(name, lbl...) || s.Sum(name, lbl...) != want {
			t.Errorf("%s = %v (exposed: %v), want %v", name, s.Sum(name, lbl...), s.Has(name, lbl...), want)
		}
	}
	// Within CacheFor: no new read.
	f.set(&jetstream.ConsumerInfo{NumPending: 100}, nil)
	clk.Add(500 * time.Millisecond)
	s = metricstest.Gather(t, reg)
	if f.Calls() != 1 || s.Sum("orchestrator_consumer_pending_messages") != 7 {
		t.Fatalf("within the cache period: %d reads, pending %v", f.Calls(), s.Sum("orchestrator_consumer_pending_messages"))
	}
	// After it: read again.
	clk.Add(time.Second)
	s = metricstest.Gather(t, reg)
	if f.Calls() != 2 || s.Sum("orchestrator_consumer_pending_messages") != 100 {
		t.Fatalf("after the cache period: %d reads, pending %v", f.Calls(), s.Sum("orchestrator_consumer_pending_messages"))
	}
	// A failed read: the gauges are missing, the error is counted, the
	// scrape itself succeeds.
	f.set(nil, errors.New("nats: timeout"))
	clk.Add(2 * time.Second)
	s = metricstest.Gather(t, reg)
	if s.Has("orchestrator_consumer_pending_messages") {
		t.Error("gauges exposed after a failed read")
	}
	if got := s.Sum("orchestrator_collector_errors_total", "collector", "consumer"); got != 1 {
		t.Errorf("collector errors = %v, want 1", got)
	}
}

// TestCollectorTimeout: a dependency that does not answer holds a scrape
// only for Timeout.
func TestCollectorTimeout(t *testing.T) {
	f := fakeConsumer(nil)
	f.block = true
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewConsumerCollector(f, "S", "C", metrics.CollectorOpts{Timeout: 20 * time.Millisecond}))
	done := make(chan *metricstest.Scrape, 1)
	go func() { done <- metricstest.Gather(t, reg) }()
	select {
	case s := <-done:
		if got := s.Sum("orchestrator_collector_errors_total", "collector", "consumer"); got != 1 {
			t.Fatalf("collector errors = %v, want 1", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the scrape waited for a dependency that does not answer")
	}
}

func TestCampaignsCollector(t *testing.T) {
	f := fakeCounter(map[fsm.State]int64{fsm.Running: 4, fsm.Completed: 9})
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewCampaignsCollector(f, metrics.CollectorOpts{}))
	s := metricstest.Gather(t, reg)
	for _, st := range fsm.States {
		want := map[fsm.State]float64{fsm.Running: 4, fsm.Completed: 9}[st]
		if !s.Has("orchestrator_campaigns", "state", string(st)) || s.Sum("orchestrator_campaigns", "state", string(st)) != want {
			t.Errorf("campaigns{state=%s} = %v, want %v", st, s.Sum("orchestrator_campaigns", "state", string(st)), want)
		}
	}
	if s.Types["orchestrator_campaigns"] != "gauge" {
		t.Errorf("orchestrator_campaigns is a %s", s.Types["orchestrator_campaigns"])
	}
}
