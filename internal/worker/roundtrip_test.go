package worker_test

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/store/redistest"
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
// started, by name (PING, the worker's health check, left out).
func (rt *roundTrips) redisCalls(t *testing.T, p *redistest.Proxy) (total int, by map[string]int) {
	t.Helper()
	by = p.Commands()
	delete(by, "ping")
	for _, n := range by {
		total += n
	}
	return total, by
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
	h := newHarness(t, harnessOpts{workers: 1, perWorker: 8, proxy: true})
	rt := countRoundTrips(t, h)
	for i := range campaigns {
		h.create("acme", fmt.Sprintf("rt-%d", i), true)
	}
	for i := range campaigns {
		h.waitEvent("acme", fmt.Sprintf("rt-%d", i), fsm.EvCompleted, 0, 30*time.Second)
		h.waitIdle("acme", fmt.Sprintf("rt-%d", i))
	}
	// A campaign of the standard workflow takes one create (with start)
	// and one advance per step plus the one that completes it.
	commands := campaigns * (1 + len(standard) + 1)
	total, by := rt.redisCalls(t, h.proxy)
	rt.mu.Lock()
	apiTotal, pulls := 0, rt.api["CONSUMER.MSG.NEXT"]
	for _, n := range rt.api {
		apiTotal += n
	}
	api := summary(rt.api)
	rt.mu.Unlock()
	perCmd := float64(total) / float64(commands)
	apiPerCmd := float64(apiTotal-pulls) / float64(commands)
	t.Logf("%d commands: Redis %d calls (%.2f per command: %s); JetStream API %d requests besides %d pulls (%.2f per command: %s)",
		commands, total, perCmd, summary(by), apiTotal-pulls, pulls, apiPerCmd, api)
	if perCmd > redisBudget {
		t.Errorf("%.2f Redis round trips per command, budget %v", perCmd, redisBudget)
	}
	if apiPerCmd > apiBudget {
		t.Errorf("%.2f JetStream API requests per command (pulls aside), budget %v", apiPerCmd, apiBudget)
	}
}

// The budgets of TestRoundTripsPerCommand.
const (
	redisBudget = 100.0
	apiBudget   = 100.0
)
