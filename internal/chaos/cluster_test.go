//go:build chaos

package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// NATS cluster fault kinds, as counted in the summary.
const (
	FaultNATSKill    = "nats-kill9"   // a nats-server of the cluster killed with SIGKILL (a stream or consumer leader)
	FaultNATSRestart = "nats-restart" // that nats-server started again with its data
)

// pullWarning is the worker's log message when pulling from the consumer
// starts failing, or fails differently (internal/worker: pullHealth).
const pullWarning = "pulling commands fails: backing off"

// TestChaosJetStreamCluster runs the load on three orchestrators connected
// to a 3-node JetStream cluster (every stream and the consumer with 3
// replicas, STREAM_REPLICAS=3) and kills -9, in turn, the leader of
// CAMPAIGN_COMMANDS, the leader of its consumer and the leader of
// CAMPAIGN_EVENTS (found with $JS.API.STREAM.INFO / CONSUMER.INFO), each
// restarted a few seconds later and caught up before the next. The checker
// must find nothing, and no worker may spin while a leader is down: each
// logs the pull failure once per change of state (fewer than 50 such lines
// per process) and its failed pulls (orchestrator_fetch_failures_total) are
// bounded by the back-off.
func TestChaosJetStreamCluster(t *testing.T) { clusterChaos(t, false) }

// TestChaosJetStreamQuorumLoss is TestChaosJetStreamCluster with a second
// node killed with each leader: two of three down, no stream, consumer or
// meta leader can exist until they are back (6–10 s later), the longest
// outage a replicated deployment sees without losing data. Publishes fail
// meanwhile (the load keeps retrying, the ingress answers 503); the workers
// must back off the same way and lose nothing.
func TestChaosJetStreamQuorumLoss(t *testing.T) { clusterChaos(t, true) }

// clusterChaos runs the cluster scenario; quorumLoss kills a second node
// with each leader.
func clusterChaos(t *testing.T, quorumLoss bool) {
	var nc *NATSCluster
	s := newScenarioNATS(t, func(dir string) string {
		nc = StartNATSCluster(t, binaries.NATSServer, dir, 3)
		return nc.URLs()
	})
	const replicas = 3
	s.cl.env = append(s.cl.env, fmt.Sprintf("STREAM_REPLICAS=%d", replicas))
	s.load.cfg.Spread = time.Duration(float64(25*time.Second) * s.scale)
	// A publish while its stream has no leader fails for the seconds an
	// election takes: keep publishing (same Nats-Msg-Id) for up to a minute.
	s.load.cfg.PublishAttempts = 60
	orchs := s.startOrchs("A", "B", "C")
	ctx := context.Background()

	assets := []Asset{{streamCommands, ""}, {streamCommands, consumerName}, {streamEvents, ""}, {streamDLQ, ""}}
	for _, a := range assets {
		var ci *jetstream.ClusterInfo
		var err error
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = waitFor(wctx, 100*time.Millisecond, func() bool { ci, err = clusterInfo(wctx, s.js, a); return err == nil })
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		if n := len(ci.Replicas) + 1; n != replicas {
			t.Fatalf("%s has %d replicas (leader %s), want %d: STREAM_REPLICAS not applied", a, n, ci.Leader, replicas)
		}
		t.Logf("%s: leader %s, %d replicas", a, ci.Leader, len(ci.Replicas)+1)
	}
	waitReplicated := func(what string) time.Duration {
		start := time.Now()
		wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		var last string
		err := waitFor(wctx, 200*time.Millisecond, func() bool {
			for _, a := range assets {
				if ok, why := Replicated(wctx, s.js, a, replicas); !ok {
					last = a.String() + ": " + why
					return false
				}
			}
			return true
		})
		if err != nil {
			t.Fatalf("%s: not replicated after 90s: %s", what, last)
		}
		return time.Since(start)
	}

	// The faults: rounds of one leader killed each, while the load runs.
	targets := []Asset{{streamCommands, ""}, {streamCommands, consumerName}, {streamEvents, ""}}
	rounds := max(len(targets), int(math.Round(float64(len(targets))*s.scale)))
	if quorumLoss {
		targets = targets[:2]
		rounds = max(2, int(math.Round(2*s.scale)))
	}
	loadDone := make(chan struct{})
	go func() { s.load.Run(ctx); close(loadDone) }()
	var outages []string
	var outage time.Duration // sum of the kill → leader-again times
	for i := range rounds {
		sleepCtx(ctx, randDur(s.rng, 2*time.Second, 4*time.Second))
		a := targets[i%len(targets)]
		var leader string
		var err error
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = waitFor(wctx, 100*time.Millisecond, func() bool { leader, err = Leader(wctx, s.js, a); return err == nil && leader != "" })
		cancel()
		if err != nil || leader == "" {
			t.Fatalf("round %d: leader of %s: %q %v", i+1, a, leader, err)
		}
		victims := []*NATSNode{nc.Node(leader)}
		if quorumLoss {
			others := []*NATSNode{}
			for _, o := range nc.Nodes {
				if o.Name != leader {
					others = append(others, o)
				}
			}
			victims = append(victims, others[s.rng.IntN(len(others))])
		}
		var names []string
		for _, nd := range victims {
			pid := nd.Pid()
			nd.Kill()
			s.faults.Add(FaultNATSKill, fmt.Sprintf("%s pid %d (%s's leader: %s)", nd.Name, pid, a, leader))
			names = append(names, nd.Name)
		}
		killed := time.Now()
		var next string
		newLeader := func(what string) time.Duration {
			wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			err := waitFor(wctx, 100*time.Millisecond, func() bool {
				next, _ = Leader(wctx, s.js, a)
				return next != "" && (quorumLoss || next != leader)
			})
			if err != nil {
				t.Fatalf("round %d: no leader of %s within 60s %s", i+1, a, what)
			}
			return time.Since(killed)
		}
		var elected time.Duration
		if !quorumLoss {
			// A new leader among the two left.
			elected = newLeader("of killing " + leader)
		}
		// Down a few seconds more (no quorum: 6-10 s), then back with their data.
		lo, hi := 4*time.Second, 8*time.Second
		if quorumLoss {
			lo, hi = 6*time.Second, 10*time.Second
		}
		sleepCtx(ctx, time.Until(killed.Add(randDur(s.rng, lo, hi))))
		for _, nd := range victims {
			if err := nd.Start(nc); err != nil {
				t.Fatalf("round %d: restart %s: %v", i+1, nd.Name, err)
			}
		}
		down := time.Since(killed)
		for _, nd := range victims {
			s.faults.Add(FaultNATSRestart, fmt.Sprintf("%s pid %d after %s", nd.Name, nd.Pid(), down.Round(time.Millisecond)))
		}
		if quorumLoss {
			elected = newLeader("of restarting " + strings.Join(names, " and "))
		}
		outage += elected
		caught := waitReplicated(fmt.Sprintf("round %d", i+1))
		line := fmt.Sprintf("round %d: %s leader %s; %s killed; %s leader after %s; down %s; all replicas current %s after that",
			i+1, a, leader, strings.Join(names, " and "), next, elected.Round(time.Millisecond), down.Round(time.Millisecond), caught.Round(time.Millisecond))
		t.Log(line)
		outages = append(outages, line)
	}
	<-loadDone
	t.Logf("load sent in %s", time.Since(s.start).Round(time.Millisecond))
	waitReplicated("before the checker")

	// No spinning while a leader was down.
	for _, o := range orchs {
		failures := metricSum(o.Addr(), "orchestrator_fetch_failures_total")
		st := logStats(o.LogPath)
		t.Logf("%s: %d %q lines, orchestrator_fetch_failures_total %g, warnings and errors by message: %s",
			o.Name, st[pullWarning], pullWarning, failures, st.top(8))
		if n := st[pullWarning]; n >= 50 {
			s.extra = append(s.extra, Finding{Kind: KindSpin, Detail: fmt.Sprintf("%s logged %q %d times over %d leader outages", o.Name, pullWarning, n, rounds)})
		}
		// The back-off (100 ms doubling to 5 s) allows some 20 failed
		// pulls per 10 s of outage; spinning makes thousands.
		if limit := 30 * float64(rounds); failures > limit {
			s.extra = append(s.extra, Finding{Kind: KindSpin, Detail: fmt.Sprintf("%s: %g failed pulls over %d leader outages (%s without a leader in all), more than %g",
				o.Name, failures, rounds, outage.Round(time.Millisecond), limit)})
		}
	}
	s.finish(4 * time.Minute)
	for _, l := range outages {
		t.Log(l)
	}
}

// KindSpin is a process that retried without backing off while a NATS
// leader was down (too many failed pulls or log lines).
const KindSpin = "spin"

// levelCounts counts a process's WARN and ERROR log lines by message.
type levelCounts map[string]int

// logStats reads the JSON log at path.
func logStats(path string) levelCounts {
	out := levelCounts{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil || (l.Level != "WARN" && l.Level != "ERROR") {
			continue
		}
		out[l.Msg]++
	}
	return out
}

// top names the n commonest messages with their counts.
func (c levelCounts) top(n int) string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return c[keys[i]] > c[keys[j]] || (c[keys[i]] == c[keys[j]] && keys[i] < keys[j]) })
	var out []string
	for _, k := range first(keys, n) {
		out = append(out, fmt.Sprintf("%q ×%d", k, c[k]))
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}
