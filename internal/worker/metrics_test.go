package worker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/metrics"
	"github.com/campaign-orchestrator/orchestrator/internal/metrics/metricstest"
)

// metricsHarness is a harness whose workers record into reg, with the
// collectors of cmd/orchestrator registered too (no caching, so that every
// scrape reads the store and the consumer afresh).
func metricsHarness(t *testing.T, o harnessOpts) (*harness, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	o.metrics = metrics.New(reg)
	o.metrics.InitSteps(standard...)
	h := newHarness(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := h.js.Consumer(ctx, events.StreamCommands, events.ConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	fresh := metrics.CollectorOpts{CacheFor: time.Nanosecond}
	reg.MustRegister(
		metrics.NewConsumerCollector(cons, events.StreamCommands, events.ConsumerName, fresh),
		metrics.NewCampaignsCollector(h.store, fresh),
	)
	return h, reg
}

// want checks metric values: name, label pairs, value.
type wantMetric struct {
	name string
	kv   []string
	want float64
}

func checkMetrics(t *testing.T, s *metricstest.Scrape, phase string, wants ...wantMetric) {
	t.Helper()
	for _, w := range wants {
		if !s.Has(w.name, w.kv...) {
			t.Errorf("%s: %s%v not exposed", phase, w.name, w.kv)
			continue
		}
		if got := s.Sum(w.name, w.kv...); got != w.want {
			t.Errorf("%s: %s%v = %v, want %v", phase, w.name, w.kv, got, w.want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// waitMetric scrapes reg until cond holds.
func waitMetric(t *testing.T, reg prometheus.Gatherer, what string, cond func(s *metricstest.Scrape) bool) *metricstest.Scrape {
	t.Helper()
	var s *metricstest.Scrape
	waitFor(t, 20*time.Second, what, func() bool {
		s = metricstest.Gather(t, reg)
		return cond(s)
	})
	return s
}

// TestMetricsEndToEnd runs campaigns through real JetStream, Redis and a
// fake downstream, and checks what a scrape of the registry says after each
// phase: commands by verb and outcome, steps by outcome with durations,
// retries by reason, lock contention, dead letters by reason, campaigns by
// state, and the consumer's counts.
func TestMetricsEndToEnd(t *testing.T) {
	h, reg := metricsHarness(t, harnessOpts{})
	ctx := context.Background()
	const (
		received   = "orchestrator_commands_received_total"
		applied    = "orchestrator_commands_applied_total"
		rejected   = "orchestrator_commands_rejected_total"
		duplicated = "orchestrator_commands_duplicated_total"
		dead       = "orchestrator_commands_dead_lettered_total"
		steps      = "orchestrator_steps_total"
		durations  = "orchestrator_step_duration_seconds_count"
		campaigns  = "orchestrator_campaigns"
	)

	// 1. One campaign created and started by one command, run to the end.
	createID := newID()
	h.publish("acme", "ok", fsm.Create, createID, fsm.CreatePayload{Name: "ok", Start: true})
	h.waitEvent("acme", "ok", fsm.EvCompleted, 0, 20*time.Second)
	h.waitIdle("acme", "ok")
	s := waitMetric(t, reg, "the completed campaign counted", func(s *metricstest.Scrape) bool {
		return s.Sum(campaigns, "state", "completed") == 1 && s.Sum(applied, "verb", "advance") == 6
	})
	checkMetrics(t, s, "one campaign",
		wantMetric{received, []string{"verb", "create"}, 1},
		wantMetric{applied, []string{"verb", "create"}, 1},
		wantMetric{applied, []string{"verb", "advance"}, 6}, // 5 steps and the completion
		wantMetric{durations, []string{"outcome", "succeeded"}, 5},
		wantMetric{durations, []string{"outcome", "failed"}, 0},
		wantMetric{steps, []string{"step", "validate", "outcome", "succeeded"}, 1},
		wantMetric{steps, []string{"step", "dispatch", "outcome", "succeeded"}, 1},
		wantMetric{campaigns, []string{"state", "completed"}, 1},
		wantMetric{campaigns, []string{"state", "running"}, 0},
		wantMetric{duplicated, nil, 0},
		wantMetric{dead, nil, 0},
	)
	// Advances are the lock holder's own: parked in the inbox, never
	// received from the stream.
	if got := s.Sum(received, "verb", "advance"); got != 0 {
		t.Fatalf("received{advance} = %v, want 0", got)
	}
	if got := s.Sum("orchestrator_lock_acquisitions_total"); got < 1 {
		t.Fatalf("lock acquisitions = %v", got)
	}

	// 2. The same create again, past JetStream's deduplication (no
	// Nats-Msg-Id; the body's id is the command id): the ledger drops it.
	dup := events.NewCommandMsg(events.CommandEnvelope{ID: createID, Type: "create", TenantID: "acme", CampaignID: "ok",
		Payload: []byte(`{"name":"ok","start":true}`)}, "")
	dup.Header.Del(nats.MsgIdHdr)
	if _, err := h.js.PublishMsg(ctx, dup); err != nil {
		t.Fatal(err)
	}
	// And a start on the completed campaign: rejected.
	h.publish("acme", "ok", fsm.Start, newID(), nil)
	h.waitEvent("acme", "ok", fsm.EvRejected, 0, 10*time.Second)
	s = waitMetric(t, reg, "the duplicate and the rejection counted", func(s *metricstest.Scrape) bool {
		return s.Sum(duplicated, "verb", "create") == 1 && s.Sum(rejected, "verb", "start") == 1
	})
	checkMetrics(t, s, "duplicate and rejection",
		wantMetric{applied, []string{"verb", "create"}, 1},
		wantMetric{received, []string{"verb", "create"}, 2},
		wantMetric{applied, []string{"verb", "start"}, 0},
	)

	// 3. A step answering 500 fails its campaign; a connection reset is
	// retried (network) and the campaign completes.
	h.down.on("bad", "segment", behaviour{Status: 500})
	h.down.on("flaky", "render", behaviour{Reset: true})
	h.create("acme", "bad", true)
	h.create("acme", "flaky", true)
	h.waitEvent("acme", "bad", fsm.EvFailed, 0, 20*time.Second)
	h.waitEvent("acme", "flaky", fsm.EvCompleted, 0, 20*time.Second)
	h.waitIdle("acme", "bad")
	h.waitIdle("acme", "flaky")
	s = waitMetric(t, reg, "failure and retry counted", func(s *metricstest.Scrape) bool {
		return s.Sum(campaigns, "state", "failed") == 1 && s.Sum(campaigns, "state", "completed") == 2
	})
	checkMetrics(t, s, "failure and retry",
		wantMetric{steps, []string{"step", "segment", "outcome", "failed"}, 1},
		wantMetric{durations, []string{"step", "segment", "outcome", "failed"}, 1},
		wantMetric{durations, []string{"outcome", "failed"}, 1},
		wantMetric{durations, []string{"outcome", "succeeded"}, 5 + 1 + 5},
		wantMetric{steps, []string{"step", "render", "outcome", "retrying"}, 1},
		wantMetric{"orchestrator_step_retries_total", []string{"reason", "network"}, 1},
		wantMetric{"orchestrator_step_retries_total", []string{"reason", "status"}, 0},
		wantMetric{applied, []string{"verb", "create"}, 3},
		wantMetric{applied, []string{"verb", "advance"}, 6 + 2 + 6},
		wantMetric{campaigns, []string{"state", "failed"}, 1},
		wantMetric{campaigns, []string{"state", "completed"}, 2},
	)

	// 4. Contention: a pause published while a step holds the campaign's
	// lock waits in the inbox for the holder.
	block := make(chan struct{})
	var unblock sync.Once
	defer unblock.Do(func() { close(block) })
	h.down.on("busy", "validate", behaviour{Block: block})
	started := h.down.startedCh("busy", "validate")
	h.create("acme", "busy", true)
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("the busy campaign's first step never started")
	}
	contended := metricstest.Gather(t, reg).Sum("orchestrator_lock_contentions_total")
	h.publish("acme", "busy", fsm.Pause, newID(), nil)
	waitMetric(t, reg, "the pause parked behind the busy holder", func(s *metricstest.Scrape) bool {
		return s.Sum("orchestrator_lock_contentions_total") > contended
	})
	s = metricstest.Gather(t, reg)
	checkMetrics(t, s, "while busy",
		wantMetric{campaigns, []string{"state", "running"}, 1},
		wantMetric{applied, []string{"verb", "pause"}, 0},
	)
	unblock.Do(func() { close(block) })
	h.waitEvent("acme", "busy", fsm.EvPaused, 0, 20*time.Second)
	h.waitIdle("acme", "busy")
	s = waitMetric(t, reg, "the busy campaign paused", func(s *metricstest.Scrape) bool {
		return s.Sum(campaigns, "state", "paused") == 1
	})
	checkMetrics(t, s, "paused",
		wantMetric{applied, []string{"verb", "pause"}, 1},
		wantMetric{campaigns, []string{"state", "running"}, 0},
	)

	// 5. Dead letters: a command for a campaign that does not exist, bad
	// JSON, and an unknown verb.
	send := func(subject, id, body string) {
		t.Helper()
		m := nats.NewMsg(subject)
		m.Header.Set(nats.MsgIdHdr, id)
		m.Data = []byte(body)
		if _, err := h.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	h.publish("acme", "ghost", fsm.Pause, newID(), nil)
	send("campaign.cmd.acme.broken.create", newID(), `{"id": "x", "type": `)
	send("campaign.cmd.acme.ok.explode", "explode-1", `{"id":"explode-1","type":"explode","tenant_id":"acme","campaign_id":"ok"}`)
	s = waitMetric(t, reg, "three dead letters", func(s *metricstest.Scrape) bool { return s.Sum(dead) == 3 })
	checkMetrics(t, s, "dead letters",
		wantMetric{dead, []string{"verb", "pause", "reason", "unknown_campaign"}, 1},
		wantMetric{dead, []string{"verb", "create", "reason", "invalid"}, 1},
		wantMetric{dead, []string{"verb", "invalid", "reason", "invalid"}, 1},
		wantMetric{received, []string{"verb", "invalid"}, 1},
		wantMetric{dead, []string{"reason", "max_deliveries"}, 0},
	)

	// 6. At rest: nothing pending on the consumer.
	lbl := []string{"stream", events.StreamCommands, "consumer", events.ConsumerName}
	s = waitMetric(t, reg, "the consumer drained", func(s *metricstest.Scrape) bool {
		return s.Has("orchestrator_consumer_pending_messages", lbl...) &&
			s.Sum("orchestrator_consumer_pending_messages", lbl...) == 0 &&
			s.Sum("orchestrator_consumer_ack_pending_messages", lbl...) == 0
	})
	checkMetrics(t, s, "at rest",
		wantMetric{"orchestrator_consumer_redelivered_messages", lbl, 0},
		wantMetric{"orchestrator_collector_errors_total", []string{"collector", "consumer"}, 0},
		wantMetric{"orchestrator_collector_errors_total", []string{"collector", "campaigns"}, 0},
		wantMetric{"orchestrator_fencing_rejections_total", nil, 0},
		wantMetric{"orchestrator_lock_lost_total", nil, 0},
	)
	if !s.Has("orchestrator_consumer_waiting_pulls", lbl...) {
		t.Fatal("orchestrator_consumer_waiting_pulls not exposed")
	}
}

// TestMetricsFencing: a worker stalled past its lock's TTL finds its lock
// lost and its write refused by the fencing check; both are counted.
func TestMetricsFencing(t *testing.T) {
	st := newStall("stall")
	h, reg := metricsHarness(t, harnessOpts{workers: 2, fault: st.fault})
	h.create("acme", "stall", true)
	h.waitEvent("acme", "stall", fsm.EvCompleted, 0, 20*time.Second)
	h.waitIdle("acme", "stall")
	st.wake(t)
	s := metricstest.Gather(t, reg)
	if got := s.Sum("orchestrator_fencing_rejections_total", "reason", "lock_lost"); got < 1 {
		t.Errorf("fencing_rejections{lock_lost} = %v, want at least 1", got)
	}
	if got := s.Sum("orchestrator_lock_lost_total"); got < 1 {
		t.Errorf("lock_lost = %v, want at least 1", got)
	}
	// The stalled step's result was refused, yet the step did run: its
	// duration is recorded, once by each worker that ran it.
	if got := s.Sum("orchestrator_step_duration_seconds_count", "step", "validate"); got != 2 {
		t.Errorf("validate runs = %v, want 2 (the stalled one and the re-run)", got)
	}
	if got := s.Sum("orchestrator_campaigns", "state", "completed"); got != 1 {
		t.Errorf("campaigns{completed} = %v, want 1", got)
	}
	t.Logf("lock acquisitions %v, contentions %v", s.Sum("orchestrator_lock_acquisitions_total"), s.Sum("orchestrator_lock_contentions_total"))
}
