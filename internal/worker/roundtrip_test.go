package worker_test

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/store/redistest"
	"github.com/campaign-orchestrator/orchestrator/internal/worker"
)

// roundTrips counts what the worker asks of Redis (INFO commandstats) and
// of the JetStream API (every request on $JS.API.>, seen by a subscriber
// on the same account) while campaigns run; Redis commands are counted by
// the proxy the store goes through (one round trip each, unless pipelined).
type roundTrips struct {
	sub *nats.Subscription
	mu  sync.Mutex
	api map[string]int // by request kind: CONSUMER.MSG.NEXT, DIRECT.GET, STREAM.INFO…
}

func countRoundTrips(t *testing.T, h *harness) *roundTrips {
	t.Helper()
	rt := &roundTrips{api: map[string]int{}}
	h.proxy.ResetCommands()
	var err error
	rt.sub, err = h.nc.Subscribe("$JS.API.>", func(m *nats.Msg) {
		kind := strings.TrimPrefix(m.Subject, "$JS.API.")
		for _, k := range []string{"CONSUMER.MSG.NEXT", "DIRECT.GET", "STREAM.INFO", "CONSUMER.INFO", "STREAM.MSG.GET"} {
			if strings.HasPrefix(kind, k) {
				kind = k
			}
		}
		rt.mu.Lock()
		rt.api[kind]++
		rt.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.sub.Unsubscribe() })
	if err := h.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return rt
}

// redisCalls returns the commands the store sent since the counter
// started, by name (PING, the worker's health check, left out), and how
// many of them set a connection or a script up once: each connection's
// HELLO and CLIENT SETINFO, and each script's first EVAL (after EVALSHA
// found it not loaded).
func (rt *roundTrips) redisCalls(t *testing.T, p *redistest.Proxy) (total, setup int, by map[string]int) {
	t.Helper()
	by = p.Commands()
	delete(by, "ping")
	for name, n := range by {
		total += n
		if name == "hello" || name == "client" || name == "eval" {
			setup += n
		}
	}
	return total, setup, by
}

func summary(by map[string]int) string {
	var parts []string
	for k, v := range by {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// The round trips a command costs, counted (issue 8): Redis commands
// (scripts and plain commands alike) and JetStream API requests per
// command, over campaigns of the standard workflow with 0 ms steps. The
// budget is a design property; it is checked here so that it cannot
// regress silently.
func TestRoundTripsPerCommand(t *testing.T) {
	const campaigns = 20
	// The keeper's lock renewals are per tick, not per command (one
	// pipelined round trip for every held lock): counted apart.
	renewals := &extendCounter{}
	// A create's workflow is resolved each time the command is decoded.
	lookups := &lookupCounter{}
	h := newHarness(t, harnessOpts{workers: 1, perWorker: 8, proxy: true, wrap: func(s store.Store) worker.Store { renewals.Store = s; return renewals },
		workflows: func(wf events.Workflows) events.Workflows { lookups.Workflows = wf; return lookups }})
	// The test watches without a round trip of its own through what it
	// counts: events on a core subscription, Redis keys on a direct client.
	var completed atomic.Int32
	sub, err := h.nc.Subscribe("campaign.evt.acme.*.completed", func(*nats.Msg) { completed.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	direct := redis.NewClient(&redis.Options{Addr: h.redis.Addr()})
	defer direct.Close()
	rt := countRoundTrips(t, h)
	for i := range campaigns {
		h.create("acme", fmt.Sprintf("rt-%d", i), true)
	}
	waitFor(t, 30*time.Second, "every campaign completed", func() bool { return completed.Load() == campaigns })
	waitFor(t, 10*time.Second, "every campaign idle", func() bool {
		for i := range campaigns {
			p := fmt.Sprintf("%s:{acme/rt-%d}:", store.DefaultPrefix, i)
			if n, err := direct.Exists(t.Context(), p+"lock", p+"inbox", p+"outbox").Result(); err != nil || n > 0 {
				return false
			}
		}
		return true
	})
	// A campaign of the standard workflow takes one create (with start)
	// and one advance per step plus the one that completes it (the
	// advances are the holder's own, parked in the inbox).
	commands := campaigns * (1 + len(standard) + 1)
	total, setup, by := rt.redisCalls(t, h.proxy)
	rt.mu.Lock()
	apiTotal, pulls := 0, rt.api["CONSUMER.MSG.NEXT"]
	for _, n := range rt.api {
		apiTotal += n
	}
	api := summary(rt.api)
	rt.mu.Unlock()
	renewals.mu.Lock()
	renewed, ticks := 0, len(renewals.batches)
	for _, n := range renewals.batches {
		renewed += n
	}
	renewals.mu.Unlock()
	if renewals.single != 0 {
		t.Errorf("%d single Extend calls: locks are renewed in batches", renewals.single)
	}
	perCmd := float64(total-setup-renewed) / float64(commands)
	apiPerCmd := float64(apiTotal-pulls) / float64(commands)
	t.Logf("%d commands: Redis %d calls, %d of them setting a connection or a script up and %d lock renewals in %d pipelines (%.2f per command besides: %s); JetStream API %d requests besides %d pulls (%.2f per command: %s)",
		commands, total, setup, renewed, ticks, perCmd, summary(by), apiTotal-pulls, pulls, apiPerCmd, api)
	// The command is decoded once on its way: by the handler that receives
	// it, which holds the campaign (its first command) and applies it as
	// decoded, not decoded again from the inbox.
	if n := lookups.n.Load(); n != campaigns {
		t.Errorf("creates decoded %d times, want %d (once each)", n, campaigns)
	}
	if perCmd > redisBudget {
		t.Errorf("%.2f Redis round trips per command, budget %v", perCmd, redisBudget)
	}
	if apiPerCmd > apiBudget {
		t.Errorf("%.2f JetStream API requests per command (pulls aside), budget %v", apiPerCmd, apiBudget)
	}
}

// The budgets of TestRoundTripsPerCommand, per command of the standard
// workflow (measured 2.74–2.89 and 1.14; before the redesign 13.14 and 4.71,
// then 4.77 and 1.43 with the advance going through the stream, then 1.86
// and 1.14 with a step's result and the next step.started in one write,
// which let a pause accepted between its read ahead and that write wait
// behind the next step: TestControlAcceptedBeforeResultWrite).
// Redis: a campaign's lock is taken once (the Enqueue of its first command,
// which returns the campaign, the inbox and the outbox); each step then
// costs two writes: its result alone (the next advance parked), and, after
// a read ahead made once that result is stored, the next step's
// step.started (or the completion); each write trims what was published
// and returns the inbox; the release trims the rest; a new campaign's index
// entry and a state change's index repair add about two per campaign. A
// start goes on to step 1 in its own write (no step runs then).
// JetStream: one DIRECT.GET per step to read ahead for commands still in
// transit (a pause published while the step ran goes first), two per new
// campaign (its own command, found by that read; a reused campaign id);
// streams are looked up once.
//
// Runs read 2.72 to 2.89 on this machine, depending on timing (a release
// that finds its inbox refilled, a sweep's scan, a write refused because
// a command was parked meanwhile): the budget leaves that room, and still
// fails the designs before (4.77 and up).
const (
	redisBudget = 3.1
	apiBudget   = 1.2
)

// lookupCounter counts workflow look-ups.
type lookupCounter struct {
	events.Workflows
	n atomic.Int64
}

func (l *lookupCounter) Get(name string) (fsm.Workflow, bool) {
	l.n.Add(1)
	return l.Workflows.Get(name)
}
