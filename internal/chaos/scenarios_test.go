//go:build chaos

package chaos

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/store/redistest"
)

var (
	flagSeed     = flag.Uint64("chaos.seed", 0, "seed of the load and the faults (0: from the time); printed by every scenario")
	flagScale    = flag.Float64("chaos.scale", 0, "size of the load: 1 = 60 campaigns (0: $CHAOS_SCALE, else 1)")
	flagReport   = flag.String("chaos.report", "", "write every scenario's summary as JSON to this file")
	flagLatency  = flag.Duration("chaos.latency", 50*time.Millisecond, "mean latency of the downstream fake (±50 %)")
	flagFailRate = flag.Float64("chaos.failrate", 0.06, "share of step runs whose first call the downstream answers 500")
	flagKeep     = flag.Bool("chaos.keep", false, "keep the processes' logs and data even when a scenario passes")
	flagOrchBin  = flag.String("chaos.orchestrator", "", "use this orchestrator binary instead of building ./cmd/orchestrator (e.g. one built from another checkout)")
)

// ackWait is the consumer's ack wait in streams/orchestrator.consumer.json
// (its first back-off value). The service has no setting to shorten it, so
// the SIGSTOP scenario waits this long.
const ackWait = 45 * time.Second

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
	start := time.Now()
	binaries, err = BuildBinaries(dir, *flagOrchBin == "")
	if *flagOrchBin != "" {
		binaries.Orchestrator = *flagOrchBin
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos: build:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "chaos: built orchestrator and nats-server in %s\n", time.Since(start).Round(time.Millisecond))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func scale() float64 {
	if *flagScale > 0 {
		return *flagScale
	}
	if v, err := strconv.ParseFloat(os.Getenv("CHAOS_SCALE"), 64); err == nil && v > 0 {
		return v
	}
	return 1
}

// scenario is one fault scenario's world.
type scenario struct {
	t      *testing.T
	name   string
	seed   uint64
	scale  float64
	start  time.Time
	cl     *Cluster
	nc     *nats.Conn
	js     jetstream.JetStream
	rdb    *redis.Client
	faults *Faults
	load   *Load
	rng    *rand.Rand // the scenario's own choices (faults)
	extra  []Finding  // scenario-specific findings
	// addrs, when set, are the HTTP addresses the checker reads campaigns
	// from (else the cluster's live instances).
	addrs func() []string
}

func newScenario(t *testing.T) *scenario {
	return newScenarioNATS(t, func(dir string) string { return StartNATS(t, binaries.NATSServer, dir).URL() })
}

// newScenarioNATS is newScenario with the NATS servers that startNATS
// starts in dir; it returns their client URL(s), comma-separated.
func newScenarioNATS(t *testing.T, startNATS func(dir string) string) *scenario {
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano()) % 1_000_000_007
	}
	s := &scenario{t: t, name: t.Name(), seed: seed, scale: scale(), start: time.Now(), faults: NewFaults()}
	t.Logf("%s: seed %d, scale %g (replay: go test -tags chaos ./internal/chaos/ -run '^%s$' -v -chaos.seed %d -chaos.scale %g)",
		s.name, seed, s.scale, s.name, seed, s.scale)
	s.rng = rand.New(rand.NewPCG(seed, 0xfa17))

	dir := workDir(t)
	rs := redistest.New(t)
	natsURL := startNATS(dir)
	down := NewDownstream(seed, *flagLatency, *flagFailRate)
	t.Cleanup(down.Close) // after the orchestrators (Cleanup runs last-in first-out)
	s.cl = &Cluster{t: t, Dir: dir, NATS: natsURL, Redis: rs.URL(), Down: down}
	down.SetOwner(s.cl.Owner)

	var err error
	s.nc, err = nats.Connect(natsURL, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.nc.Close)
	if s.js, err = jetstream.New(s.nc); err != nil {
		t.Fatal(err)
	}
	s.rdb = redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { s.rdb.Close() })

	n := int(math.Round(60 * s.scale))
	s.load = NewLoad(LoadConfig{
		Seed:      seed,
		Campaigns: max(n, 3),
		Tenants:   []string{"acme", "globex", "initech"},
		Spread:    time.Duration(float64(12*time.Second) * s.scale),
		MaxVerbs:  4,
		MaxGap:    500 * time.Millisecond,
		HTTPShare: 0.5,
		Invalid:   max(len(invalidKinds), int(math.Round(8*s.scale))),
		Squats:    max(2, int(math.Round(4*s.scale))),
	}, s.js, s.cl.LiveAddrs, t.Logf)
	return s
}

// startOrchs creates and starts the named instances.
func (s *scenario) startOrchs(names ...string) []*Orch {
	var out []*Orch
	for _, n := range names {
		o := s.cl.NewOrch(n)
		if err := o.Start(); err != nil {
			s.t.Fatal(err)
		}
		s.t.Logf("%s up: pid %d, http %s", o.Name, o.Pid(), o.Addr())
		out = append(out, o)
	}
	return out
}

// finish waits for quiescence, runs the checker and reports.
func (s *scenario) finish(quiesce time.Duration) *Summary {
	t := s.t
	ctx := context.Background()
	qstart := time.Now()
	ok, last := WaitQuiet(ctx, s.js, s.rdb, s.cl.Down, quiesce, t.Logf)
	sum := &Summary{Scenario: s.name, Seed: s.seed, Scale: s.scale, Quiescent: ok, Counts: map[string]int{},
		QuiesceTook: time.Since(qstart).Round(time.Millisecond).String()}
	if !ok {
		sum.Findings = append(sum.Findings, Finding{Kind: KindQuiescence, Detail: fmt.Sprintf("not idle after %s: %s", quiesce, last)})
		sum.Counts[KindQuiescence]++
	}
	t.Logf("quiescence: %v after %s (%s)", ok, sum.QuiesceTook, last)
	cmds := s.load.Commands()
	var slowest time.Duration
	for _, c := range cmds {
		if c.Attempts > 1 {
			sum.CommandsRetried++
		}
		slowest = max(slowest, c.Done.Sub(c.Sent))
		sum.Commands++
		switch c.Outcome {
		case Stored:
			sum.CommandsStored++
		case Unknown:
			sum.CommandsUnknown++
		case Refused:
			sum.CommandsRefused++
		}
		if c.Via == "http" {
			sum.CommandsHTTP++
		} else {
			sum.CommandsNATS++
		}
	}
	sum.SlowestCommand = slowest.Round(time.Millisecond).String()
	t.Logf("commands: %d sent again after an error or 5xx/409 (same id or Idempotency-Key); slowest to be stored: %s", sum.CommandsRetried, sum.SlowestCommand)
	addrs := s.cl.LiveAddrs
	if s.addrs != nil {
		addrs = s.addrs
	}
	ck := &Checker{JS: s.js, Redis: s.rdb, Addrs: addrs, Down: s.cl.Down}
	if err := ck.Run(ctx, cmds, sum); err != nil {
		t.Fatalf("checker: %v", err)
	}
	for _, f := range s.extra {
		sum.Findings = append(sum.Findings, f)
		sum.Counts[f.Kind]++
	}
	sum.Faults = s.faults.Counts()
	sum.Duration = time.Since(s.start).Round(time.Millisecond).String()
	for _, l := range s.faults.Timeline() {
		t.Logf("fault: %s", l)
	}
	for _, c := range cmds {
		if c.Outcome != Stored {
			t.Logf("command not stored: %+v", c)
		}
	}
	shown := 0
	for _, f := range sum.Findings {
		if shown < 150 {
			t.Logf("finding %s %s: %s", f.Kind, f.Campaign, f.Detail)
		}
		shown++
	}
	t.Logf("final states %v; calls by instance %v; events %v", sum.FinalStates, sum.CallsByInstance, sum.EventTypes)
	t.Logf("SUMMARY %s", sum.Line())
	writeReport(t, sum)
	// Everything the checker read from the load and the fake, beside the
	// processes' logs (kept when the scenario fails, or with -chaos.keep).
	for name, v := range map[string]any{"commands.json": cmds, "calls.json": s.cl.Down.Calls(), "summary.json": sum} {
		if b, err := json.MarshalIndent(v, "", " "); err == nil {
			_ = os.WriteFile(filepath.Join(s.cl.Dir, name), b, 0o644)
		}
	}
	if sum.Failed() {
		for _, o := range s.cl.Orchs {
			t.Logf("%s log (%s) ends:\n%s", o.Name, o.LogPath, tail(o.LogPath, 3000))
		}
		// The findings again, last, so that a CI excerpt of the output's end shows them.
		for i, f := range sum.Findings {
			if i == 20 {
				t.Logf("… %d findings in all", len(sum.Findings))
				break
			}
			t.Logf("finding %s %s: %s", f.Kind, f.Campaign, f.Detail)
		}
		t.Logf("SUMMARY %s", sum.Line())
		t.Errorf("%s: the checker found problems (see the findings above); replay with -chaos.seed %d", s.name, s.seed)
	}
	return sum
}

var (
	reportMu sync.Mutex
	reports  = map[string]*Summary{}
)

// writeReport writes every summary of this run to -chaos.report.
func writeReport(t *testing.T, s *Summary) {
	if *flagReport == "" {
		return
	}
	reportMu.Lock()
	defer reportMu.Unlock()
	reports[s.Scenario] = s
	b, err := json.MarshalIndent(reports, "", "  ")
	if err != nil {
		t.Errorf("report: %v", err)
		return
	}
	if err := os.WriteFile(*flagReport, append(b, '\n'), 0o644); err != nil {
		t.Errorf("report: %v", err)
	}
}

// TestChaosBaseline runs the load on three healthy instances: the checker
// must find nothing.
func TestChaosBaseline(t *testing.T) {
	s := newScenario(t)
	s.startOrchs("A", "B", "C")
	s.load.Run(context.Background())
	t.Logf("load sent in %s", time.Since(s.start).Round(time.Millisecond))
	s.finish(90 * time.Second)
}

// TestChaosKill9 kills a random instance with SIGKILL every few seconds
// during the load and restarts it after a moment.
func TestChaosKill9(t *testing.T) {
	s := newScenario(t)
	// Spread the load over the fault phase.
	s.load.cfg.Spread = time.Duration(float64(25*time.Second) * s.scale)
	s.startOrchs("A", "B", "C")
	ctx, stop := context.WithCancel(context.Background())
	killErr := make(chan error, 1)
	go func() { killErr <- KillLoop(ctx, s.cl, s.rng, 2500*time.Millisecond, 1500*time.Millisecond, s.faults) }()
	minFaults := time.After(time.Duration(float64(30*time.Second) * s.scale))
	s.load.Run(context.Background())
	t.Logf("load sent in %s", time.Since(s.start).Round(time.Millisecond))
	<-minFaults
	stop()
	if err := <-killErr; err != nil {
		t.Fatalf("restart: %v", err)
	}
	// Messages held by killed instances come back after the ack wait (45 s),
	// later ones after the back-off (60 s, 120 s …) if they were held by a
	// killed instance twice.
	s.finish(4 * time.Minute)
}

// TestChaosStopPastAckWait freezes (SIGSTOP) the instance that runs a step
// for longer than the consumer's ack wait, lets another instance take the
// campaign over, thaws (SIGCONT) the first, then kills -9 the one that took
// over: the campaign must still complete, gap-free, and the stale holder's
// step result must not be used.
//
// Finding the instance that runs the step: only instance A runs when the
// tracked campaign's first step is called, and only B (A being frozen) when
// the takeover call comes; the downstream fake also names the calling
// process of every call from /proc/net/tcp and /proc/<pid>/fd (Cluster.Owner),
// which the test checks against that.
func TestChaosStopPastAckWait(t *testing.T) {
	s := newScenario(t)
	const tenant, target = "acme", "frozen"
	key := tenant + "/" + target
	isTarget := func(c Call) bool { return c.Tenant == tenant && c.Campaign == target }

	// The downstream holds the target's first call until a call with a
	// higher fence (the takeover) arrives, then answers it — to a frozen
	// process. It holds the takeover's calls until the instance that made
	// them is killed, so that it dies mid-step. Every other call of the
	// target answers 200 after the usual latency (no injected 500s). STEP_TIMEOUT is raised so that the held
	// calls do not time out (and fail the campaign) meanwhile.
	s.cl.env = append(s.cl.env, "STEP_TIMEOUT=2m")
	var ruleMu sync.Mutex
	var firstN int
	var firstFence uint64
	release, killed := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	s.cl.Down.SetRule(func(c Call) (Behavior, bool) {
		if !isTarget(c) {
			return Behavior{}, false
		}
		ruleMu.Lock()
		defer ruleMu.Unlock()
		switch {
		case firstN == 0:
			firstN, firstFence = c.N, c.Fence
			return Behavior{Until: release}, true
		case c.Fence > firstFence:
			releaseOnce.Do(func() { close(release) })
			select {
			case <-killed:
			default:
				return Behavior{Until: killed}, true
			}
		}
		// Never an injected failure: the target must complete.
		return Behavior{Delay: *flagLatency}, true
	})

	orchs := s.startOrchs("A")
	a := orchs[0]
	ctx := context.Background()
	if rec := s.load.Send(ctx, tenant, target, "create", true, 0, "nats"); rec.Outcome != Stored {
		t.Fatalf("create of %s: %s %s", key, rec.Outcome, rec.Detail)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	firstCall, err := s.cl.Down.WaitCall(wctx, isTarget)
	cancel()
	if err != nil {
		t.Fatalf("no step call for %s: %v", key, err)
	}
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	s.faults.Add(FaultStop, fmt.Sprintf("A pid %d, in call %s (%s fence %d, from %q)", a.Pid(), firstCall.ID(), firstCall.Key, firstCall.Fence, firstCall.Instance))
	if !strings.HasPrefix(firstCall.Instance, "A(") {
		s.extra = append(s.extra, Finding{Kind: KindFSM, Campaign: key, Detail: fmt.Sprintf("first call %s came from %q, not A", firstCall.ID(), firstCall.Instance)})
	}

	b := s.startOrchs("B")[0]
	loadDone := make(chan struct{})
	go func() { s.load.Run(ctx); close(loadDone) }()

	// The takeover: the target's advance comes back to B once A let the
	// ack wait pass (up to 45 s after A's last heartbeat).
	wctx, cancel = context.WithTimeout(ctx, ackWait+90*time.Second)
	takeover, err := s.cl.Down.WaitCall(wctx, func(c Call) bool { return isTarget(c) && c.Fence > firstCall.Fence })
	cancel()
	if err != nil {
		t.Fatalf("nobody took %s over within %s of SIGSTOP: %v", key, time.Since(stopped).Round(time.Second), err)
	}
	t.Logf("takeover of %s %s after SIGSTOP: call %s (%s fence %d, from %q)", key,
		takeover.Start.Sub(stopped).Round(time.Millisecond), takeover.ID(), takeover.Key, takeover.Fence, takeover.Instance)
	if !strings.HasPrefix(takeover.Instance, "B(") {
		s.extra = append(s.extra, Finding{Kind: KindFSM, Campaign: key, Detail: fmt.Sprintf("takeover call %s came from %q, not B", takeover.ID(), takeover.Instance)})
	}
	// Keep A frozen past the ack wait in any case.
	if d := time.Until(stopped.Add(ackWait + time.Second)); d > 0 {
		time.Sleep(d)
	}
	if err := a.Cont(); err != nil {
		t.Fatal(err)
	}
	s.faults.Add(FaultCont, fmt.Sprintf("A pid %d after %s", a.Pid(), time.Since(stopped).Round(time.Millisecond)))

	// Let A notice that it lost the campaign: it must give up (lock lost)
	// or have its write refused (fencing), never write.
	wctx, cancel = context.WithTimeout(ctx, 20*time.Second)
	var lost, fenced float64
	err = waitFor(wctx, 100*time.Millisecond, func() bool {
		lost, fenced = metricSum(a.Addr(), "orchestrator_lock_lost_total"), metricSum(a.Addr(), "orchestrator_fencing_rejections_total")
		return lost+fenced > 0
	})
	cancel()
	t.Logf("A after SIGCONT: orchestrator_lock_lost_total %g, orchestrator_fencing_rejections_total %g (%v)", lost, fenced, err)

	// Kill B while it is in a call of the target (it holds the campaign).
	inFlight := func(c Call) bool {
		return isTarget(c) && c.End.IsZero() && c.Fence > firstCall.Fence && strings.HasPrefix(c.Instance, "B(")
	}
	wctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	inB, err := s.cl.Down.WaitCall(wctx, inFlight)
	cancel()
	pid := b.Pid()
	b.Kill()
	close(killed)
	if err != nil {
		t.Logf("B had no call of %s in flight (%v): killed anyway", key, err)
		s.faults.Add(FaultKill9, fmt.Sprintf("B pid %d (not in a call of the target)", pid))
		s.extra = append(s.extra, Finding{Kind: KindFSM, Campaign: key, Detail: "B was not in a call of the target when killed"})
	} else {
		s.faults.Add(FaultKill9, fmt.Sprintf("B pid %d in call %s (%s fence %d)", pid, inB.ID(), inB.Key, inB.Fence))
	}
	s.startOrchs("C")
	<-loadDone
	t.Logf("load sent in %s", time.Since(s.start).Round(time.Millisecond))
	s.finish(3 * time.Minute)

	// The frozen campaign itself.
	var calls []string
	for _, c := range s.cl.Down.Calls() {
		if isTarget(c) {
			calls = append(calls, fmt.Sprintf("%s %s fence %d %s status %d aborted %v", c.ID(), c.Key, c.Fence, c.Instance, c.Status, c.Aborted))
		}
	}
	t.Logf("calls of %s:\n  %s", key, strings.Join(calls, "\n  "))
	for _, o := range s.cl.Orchs {
		t.Logf("%s's log lines about %s:\n%s", o.Name, key, grepLog(o.LogPath, `"campaign_id":"`+target+`"`, 40))
	}
	var st apiCampaign
	status, err := (&Checker{Addrs: s.cl.LiveAddrs}).get(ctx, &http.Client{Timeout: 5 * time.Second}, tenant, "/api/v1/campaigns/"+target, &st)
	if err != nil || status != http.StatusOK || st.State != "completed" {
		t.Errorf("%s ends %q (status %d, %v), want completed", key, st.State, status, err)
	}
}

// metricSum is the sum of every series of a counter on the instance's
// /metrics (0 when it cannot be read).
func metricSum(addr, name string) float64 {
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + addr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// grepLog returns the last n lines of the file at path that contain s.
func grepLog(path, s string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) || strings.HasPrefix(l, "---- ") {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return strings.Join(out, "\n")
}

// workDir makes the test's directory of logs and data, removed after a
// pass unless -chaos.keep.
func workDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "chaos-"+t.Name()+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || *flagKeep {
			t.Logf("logs and data kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}
