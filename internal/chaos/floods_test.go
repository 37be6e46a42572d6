//go:build chaos

package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

// The floods of issue 9, sized by -chaos.scale: at scale 1 a tenth of the
// issue's figures (1,000 duplicates, 10,000 invalid messages, a backlog of
// 10,000 commands), at scale 10 the figures themselves.
const (
	floodDuplicates = 1000
	floodInvalid    = 10000
	floodBacklog    = 10000
)

// Flood finding kinds.
const (
	KindUnhealthy  = "unhealthy"   // /readyz not 200, memory past its bound, the concurrent campaign not done
	KindAckPending = "ack-pending" // more messages awaiting ack than the consumer's max_ack_pending
)

// rssLimit bounds an orchestrator's resident memory under a flood.
const rssLimit = 150 << 20

// publishers is how many goroutines publish a flood.
const publishers = 16

// smallLoad shrinks the scenario's random load to a background for a flood.
func (s *scenario) smallLoad() {
	cfg := s.load.cfg
	cfg.Campaigns = max(6, int(math.Round(20*s.scale)))
	cfg.Spread = time.Duration(float64(5*time.Second) * s.scale)
	cfg.Invalid = 3
	s.load = NewLoad(cfg, s.js, s.cl.LiveAddrs, s.t.Logf)
}

// flood runs one(w, i) for i in [0, n) from publishers goroutines (w is the
// goroutine's number) and returns how long it took.
func flood(n int, one func(w, i int)) time.Duration {
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range publishers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				one(w, i)
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

// rate is n per d, per second.
func rate(n int, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return strconv.Itoa(int(float64(n)/d.Seconds())) + "/s"
}

// rssBytes is the resident set size of process pid (0 if unknown).
func rssBytes(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// healthWatch samples every instance's /readyz and resident memory.
type healthWatch struct {
	mu              sync.Mutex
	base, peak      map[string]int64
	ready, notReady map[string]int
	lastNotReady    map[string]string
	samples         int
	stopOnce        sync.Once
	done, quit      chan struct{}
}

func watchHealth(orchs []*Orch, every time.Duration) *healthWatch {
	h := &healthWatch{base: map[string]int64{}, peak: map[string]int64{}, ready: map[string]int{}, notReady: map[string]int{},
		lastNotReady: map[string]string{}, done: make(chan struct{}), quit: make(chan struct{})}
	for _, o := range orchs {
		h.base[o.Name] = rssBytes(o.Pid())
	}
	client := &http.Client{Timeout: 2 * time.Second}
	go func() {
		defer close(h.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-h.quit:
				return
			case <-t.C:
			}
			for _, o := range orchs {
				rss := rssBytes(o.Pid())
				status, body := 0, ""
				if resp, err := client.Get("http://" + o.Addr() + "/readyz"); err != nil {
					body = err.Error()
				} else {
					var b [300]byte
					n, _ := resp.Body.Read(b[:])
					resp.Body.Close()
					status, body = resp.StatusCode, string(b[:n])
				}
				h.mu.Lock()
				h.peak[o.Name] = max(h.peak[o.Name], rss)
				if status == http.StatusOK {
					h.ready[o.Name]++
				} else {
					h.notReady[o.Name]++
					h.lastNotReady[o.Name] = fmt.Sprintf("%d %s", status, strings.TrimSpace(body))
				}
				h.mu.Unlock()
			}
			h.mu.Lock()
			h.samples++
			h.mu.Unlock()
		}
	}()
	return h
}

// stop ends the sampling, reports, and adds a finding per instance that was
// not ready or grew past rssLimit.
func (h *healthWatch) stop(s *scenario) {
	h.stopOnce.Do(func() { close(h.quit) })
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, name := range sortedKeys(h.base) {
		s.t.Logf("%s: resident memory %s before the flood, peak %s; /readyz 200 in %d of %d samples",
			name, mib(h.base[name]), mib(h.peak[name]), h.ready[name], h.ready[name]+h.notReady[name])
		if n := h.notReady[name]; n > 0 {
			s.extra = append(s.extra, Finding{Kind: KindUnhealthy, Detail: fmt.Sprintf("%s: /readyz not 200 in %d of %d samples (last: %s)",
				name, n, h.ready[name]+n, h.lastNotReady[name])})
		}
		if p := h.peak[name]; p > rssLimit {
			s.extra = append(s.extra, Finding{Kind: KindUnhealthy, Detail: fmt.Sprintf("%s: resident memory peaked at %s, over %s", name, mib(p), mib(rssLimit))})
		}
	}
}

// peakRSS is the highest peak of every instance.
func (h *healthWatch) peakRSS() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var p int64
	for _, v := range h.peak {
		p = max(p, v)
	}
	return p
}

// publishCopy publishes msg (a fresh copy each attempt) until JetStream
// answers, and returns the PubAck.
func publishCopy(ctx context.Context, js jetstream.JetStream, msg *nats.Msg) (*jetstream.PubAck, error) {
	var last error
	for range 10 {
		m := &nats.Msg{Subject: msg.Subject, Header: nats.Header{}, Data: msg.Data}
		for k, v := range msg.Header {
			m.Header[k] = append([]string(nil), v...)
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ack, err := js.PublishMsg(pctx, m)
		cancel()
		if err == nil {
			return ack, nil
		}
		last = err
		sleepCtx(ctx, 200*time.Millisecond)
	}
	return nil, last
}

// waitDrained waits until the system is quiet (WaitQuiet) and says how long
// that took.
func (s *scenario) waitDrained(timeout time.Duration) time.Duration {
	start := time.Now()
	if ok, last := WaitQuiet(context.Background(), s.js, s.rdb, s.cl.Down, timeout, s.t.Logf); !ok {
		s.t.Logf("not drained after %s: %s", timeout, last)
	}
	return time.Since(start)
}

// TestChaosFloodDuplicates publishes one command (a create that starts its
// campaign) and then 1,000 × scale copies of it from 16 publishers while a
// small random load runs: half with its Nats-Msg-Id (JetStream's duplicate
// window drops them), half without one, so that JetStream stores every copy
// and only the worker's ledger of applied command ids stands between them
// and a second effect. The checker must find the command applied once (one
// created, one started, one set of step events) and nothing left over.
func TestChaosFloodDuplicates(t *testing.T) {
	s := newScenario(t)
	s.smallLoad()
	n := max(100, int(math.Round(floodDuplicates*s.scale)))
	s.startOrchs("A", "B", "C")
	ctx := context.Background()
	const tenant, camp = "acme", "dup"
	env := events.CommandEnvelope{ID: fmt.Sprintf("dup-%d", s.seed), Type: "create", TenantID: tenant, CampaignID: camp}
	env.Payload, _ = json.Marshal(map[string]any{"name": "chaos dup", "start": true})
	now := time.Now().UTC()
	env.IssuedAt = &now
	msg := events.NewCommandMsg(env, "")
	rec := s.load.newRecord(CmdRecord{ID: env.ID, Verb: "create", Tenant: tenant, Campaign: camp, Via: "nats", Start: true})
	outcome, detail := s.load.publish(ctx, rec, msg)
	s.load.finish(rec, outcome, detail)
	if outcome != Stored {
		t.Fatalf("the command to duplicate: %s %s", outcome, detail)
	}
	noID := &nats.Msg{Subject: msg.Subject, Header: nats.Header{}, Data: msg.Data}
	for k, v := range msg.Header {
		if k != jetstream.MsgIDHeader {
			noID.Header[k] = v
		}
	}

	loadDone := make(chan struct{})
	go func() { s.load.Run(ctx); close(loadDone) }()
	var stored, deduped, failed atomic.Int64
	took := flood(n, func(_, i int) {
		m := msg
		if i%2 == 1 {
			m = noID
		}
		ack, err := publishCopy(ctx, s.js, m)
		switch {
		case err != nil:
			failed.Add(1)
		case ack.Duplicate:
			deduped.Add(1)
		default:
			stored.Add(1)
		}
	})
	s.faults.addN("duplicate-stored", int(stored.Load()), "copies JetStream stored (no Nats-Msg-Id, or outside the window)")
	s.faults.addN("duplicate-deduplicated", int(deduped.Load()), "copies JetStream dropped (same Nats-Msg-Id)")
	t.Logf("%d copies of %s published in %s (%s): %d stored, %d deduplicated by JetStream, %d not published",
		n, env.ID, took.Round(time.Millisecond), rate(n, took), stored.Load(), deduped.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("%d copies could not be published", failed.Load())
	}
	published := time.Now()
	<-loadDone
	s.waitDrained(3 * time.Minute)
	t.Logf("quiet %s after the last copy was published (the random load sent meanwhile)", time.Since(published).Round(time.Millisecond))
	s.finish(time.Minute)
	var evs []string
	msgs, err := readStream(ctx, s.js, streamEvents)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.Header.Get("Command-Id") == env.ID {
			evs = append(evs, m.Subject[strings.LastIndexByte(m.Subject, '.')+1:])
		}
	}
	t.Logf("events of %s: %v", env.ID, evs)
	if len(evs) != 2 {
		t.Errorf("command %s has %d events %v, want created and started once", env.ID, len(evs), evs)
	}
}

// TestChaosFloodInvalid publishes 10,000 × scale invalid commands (bad
// JSON, a tenant_id that is not the subject's, a start for a campaign that
// does not exist, in turn; the first two aimed at the small random load's
// campaigns) from 16 publishers. Each must be dead-lettered exactly once,
// with its reason (the checker); meanwhile every instance's /readyz must
// answer 200, its resident memory stay under rssLimit, and a campaign
// created while the flood drains must complete.
func TestChaosFloodInvalid(t *testing.T) {
	s := newScenario(t)
	s.smallLoad()
	n := max(300, int(math.Round(floodInvalid*s.scale)))
	const probeTenant, probe = "acme", "probe"
	s.cl.Down.SetRule(func(c Call) (Behavior, bool) {
		if c.Tenant == probeTenant && c.Campaign == probe {
			return Behavior{Delay: *flagLatency}, true // never an injected 500
		}
		return Behavior{}, false
	})
	orchs := s.startOrchs("A", "B", "C")
	ctx := context.Background()
	health := watchHealth(orchs, 250*time.Millisecond)
	loadDone := make(chan struct{})
	go func() { s.load.Run(ctx); close(loadDone) }()
	var targets []CampaignRef
	if err := waitFor(ctx, 50*time.Millisecond, func() bool {
		s.load.mu.Lock()
		defer s.load.mu.Unlock()
		targets = append(targets[:0], s.load.existing...)
		return len(targets) >= 3
	}); err != nil {
		t.Fatal(err)
	}

	kinds := []string{InvalidBadJSON, InvalidMismatch, InvalidGhost}
	rngs := make([]*rand.Rand, publishers)
	for w := range rngs {
		rngs[w] = rand.New(rand.NewPCG(s.seed, 0xf100d+uint64(w)))
	}
	var sent atomic.Int64
	probeDone := make(chan string, 1)
	go func() {
		// The campaign run while the flood drains: created once a fifth of
		// the flood is out.
		_ = waitFor(ctx, 20*time.Millisecond, func() bool { return sent.Load() >= int64(n/5) })
		start := time.Now()
		rec := s.load.Send(ctx, probeTenant, probe, "create", true, 0, "http")
		if rec.Outcome != Stored {
			probeDone <- fmt.Sprintf("create not stored: %s %s", rec.Outcome, rec.Detail)
			return
		}
		var st apiCampaign
		ck := &Checker{Addrs: s.cl.LiveAddrs}
		client := &http.Client{Timeout: 5 * time.Second}
		wctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
		defer cancel()
		err := waitFor(wctx, 100*time.Millisecond, func() bool {
			status, err := ck.get(wctx, client, probeTenant, "/api/v1/campaigns/"+probe, &st)
			return err == nil && status == http.StatusOK && (st.State == "completed" || st.State == "failed")
		})
		left := ""
		if si, err := s.js.Stream(ctx, streamCommands); err == nil {
			left = fmt.Sprintf("; %d commands still in %s then", si.CachedInfo().State.Msgs, streamCommands)
		}
		if err != nil || st.State != "completed" {
			probeDone <- fmt.Sprintf("ended %q (%v) %s after its create%s", st.State, err, time.Since(start).Round(time.Millisecond), left)
			return
		}
		probeDone <- fmt.Sprintf("completed %s after its create (stored after %s)%s", time.Since(start).Round(time.Millisecond),
			rec.Done.Sub(rec.Sent).Round(time.Millisecond), left)
	}()
	took := flood(n, func(w, i int) {
		rng := rngs[w]
		rec, msg := s.load.invalid(rng, 1_000_000+i, kinds[i%len(kinds)], targets[rng.IntN(len(targets))])
		outcome, detail := s.load.publish(ctx, rec, msg)
		s.load.finish(rec, outcome, detail)
		sent.Add(1)
	})
	s.faults.addN("invalid-flood", n, "invalid commands published")
	t.Logf("%d invalid commands published in %s (%s)", n, took.Round(time.Millisecond), rate(n, took))
	published := time.Now()
	<-loadDone
	s.waitDrained(4 * time.Minute)
	drained := time.Since(published)
	t.Logf("quiet %s after the last invalid command was published (%s from the first)", drained.Round(time.Millisecond), rate(n, took+drained))
	health.stop(s)
	p := <-probeDone
	t.Logf("campaign %s/%s created during the flood: %s", probeTenant, probe, p)
	if !strings.HasPrefix(p, "completed") {
		s.extra = append(s.extra, Finding{Kind: KindUnhealthy, Campaign: probeTenant + "/" + probe, Detail: "created during the flood: " + p})
	}
	sum := s.finish(time.Minute)
	t.Logf("FLOOD invalid=%d published_in=%s drained_after=%s peak_rss=%s dlq=%d", n, took.Round(time.Millisecond),
		drained.Round(time.Millisecond), mib(health.peakRSS()), sum.DLQEntries)
}

// TestChaosFloodBacklog publishes a backlog of 10,000 × scale commands —
// creates of 7,500 × scale campaigns (one in a hundred starting its steps)
// and then a cancel for 2,500 × scale of them — before any worker runs,
// then starts three orchestrators (WORKERS=32) and lowers the consumer's
// max_ack_pending to 64, below what the instances would hold at once, so
// that the server's limit is what throttles the drain. Sampling
// $JS.API.CONSUMER.INFO every 100 ms, num_ack_pending must never exceed
// max_ack_pending (once it first came under the lowered limit); the checker
// must find every command applied once, in order.
func TestChaosFloodBacklog(t *testing.T) {
	s := newScenario(t)
	n := max(400, int(math.Round(floodBacklog*s.scale)))
	creates := n * 3 / 4
	cancels := n - creates
	const lowAckPending = 64
	ctx := context.Background()

	// The streams and the consumer, as an operator applies them, and no
	// worker yet.
	apply := exec.Command(binaries.Orchestrator, "streams", "apply")
	apply.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + s.cl.Dir, "NATS_URL=" + s.cl.NATS}
	if out, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("orchestrator streams apply: %v\n%s", err, out)
	}
	tenants := s.load.cfg.Tenants
	rngs := make([]*rand.Rand, publishers)
	for w := range rngs {
		rngs[w] = rand.New(rand.NewPCG(s.seed, 0xbac+uint64(w)))
	}
	id := func(i int) (string, string) { return tenants[i%len(tenants)], fmt.Sprintf("bl-%06d", i) }
	var notStored atomic.Int64
	tookCreates := flood(creates, func(w, i int) {
		tenant, c := id(i)
		if rec := s.load.send(ctx, rngs[w], tenant, c, "create", i%100 == 0, 0, "nats"); rec.Outcome != Stored {
			notStored.Add(1)
		}
	})
	tookCancels := flood(cancels, func(w, i int) {
		tenant, c := id(i * creates / max(cancels, 1))
		if rec := s.load.send(ctx, rngs[w], tenant, c, "cancel", false, 1, "nats"); rec.Outcome != Stored {
			notStored.Add(1)
		}
	})
	if notStored.Load() > 0 {
		t.Fatalf("%d backlog commands not stored", notStored.Load())
	}
	st, err := s.js.Stream(ctx, streamCommands)
	if err != nil {
		t.Fatal(err)
	}
	backlog := st.CachedInfo().State.Msgs
	t.Logf("backlog: %d creates in %s (%s), %d cancels in %s; %s holds %d messages", creates, tookCreates.Round(time.Millisecond),
		rate(creates, tookCreates), cancels, tookCancels.Round(time.Millisecond), streamCommands, backlog)
	if backlog != uint64(n) {
		t.Fatalf("%s holds %d messages, want the %d published", streamCommands, backlog, n)
	}
	s.faults.addN("backlog", n, "commands published before any worker")

	// Sample the consumer from before the first worker.
	type sample struct {
		at                       time.Duration
		ackPending, maxAckPend   int
		pending                  uint64
		waiting                  int
		redelivered, deliveredTo uint64
	}
	var mu sync.Mutex
	var samples []sample
	// A limit is checked from the first sample under it: messages already
	// awaiting ack when it was lowered stay so until acked.
	var limit int  // the max_ack_pending of the last sample
	var armed bool // num_ack_pending came under limit since it took effect
	var peakSpec, peakLow, transient, atLimit, over int
	drainStart := time.Now()
	quit, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tk.C:
			}
			cons, err := st.Consumer(ctx, consumerName)
			if err != nil {
				continue
			}
			ci := cons.CachedInfo()
			sm := sample{at: time.Since(drainStart), ackPending: ci.NumAckPending, maxAckPend: ci.Config.MaxAckPending,
				pending: ci.NumPending, waiting: ci.NumWaiting, redelivered: uint64(ci.NumRedelivered), deliveredTo: ci.Delivered.Stream}
			mu.Lock()
			samples = append(samples, sm)
			if sm.maxAckPend != limit {
				limit, armed = sm.maxAckPend, false
			}
			armed = armed || sm.ackPending <= limit
			switch {
			case !armed:
				transient = max(transient, sm.ackPending)
			case limit == lowAckPending:
				peakLow = max(peakLow, sm.ackPending)
			default:
				peakSpec = max(peakSpec, sm.ackPending)
			}
			if armed && sm.ackPending == limit {
				atLimit++
			}
			if armed && sm.ackPending > limit {
				over++
				s.extra = append(s.extra, Finding{Kind: KindAckPending, Detail: fmt.Sprintf("at %s: %d messages awaiting ack, max_ack_pending %d",
					sm.at.Round(time.Millisecond), sm.ackPending, limit)})
			}
			mu.Unlock()
		}
	}()

	s.cl.env = append(s.cl.env, "WORKERS=32")
	orchs := s.startOrchs("A", "B", "C")
	started := time.Since(drainStart)
	cons, err := st.Consumer(ctx, consumerName)
	if err != nil {
		t.Fatal(err)
	}
	cfg := cons.CachedInfo().Config
	specMax := cfg.MaxAckPending
	cfg.MaxAckPending = lowAckPending
	if _, err := s.js.UpdateConsumer(ctx, streamCommands, cfg); err != nil {
		t.Fatalf("lower max_ack_pending: %v", err)
	}
	health := watchHealth(orchs, 250*time.Millisecond)
	drained := s.waitDrained(time.Duration(float64(4*time.Minute) * max(1, s.scale/3)))
	close(quit)
	<-sampled
	health.stop(s)
	total := time.Since(drainStart)
	mu.Lock()
	var redelivered uint64
	if len(samples) > 0 {
		redelivered = samples[len(samples)-1].redelivered
	}
	t.Logf("drain: 3 instances started in %s; max_ack_pending %d (the spec's) then %d; num_ack_pending peak %d under the first, %d under the second once under it (%d just after lowering); %d samples at the limit, %d over it, of %d; %d redelivered",
		started.Round(time.Millisecond), specMax, lowAckPending, peakSpec, peakLow, transient, atLimit, over, len(samples), redelivered)
	if limit != lowAckPending || !armed {
		t.Errorf("the lowered max_ack_pending %d never took effect (last sample: limit %d, under it %v)", lowAckPending, limit, armed)
	}
	mu.Unlock()
	t.Logf("backlog of %d drained in %s from the first instance's start (%s); quiet %s after the last instance was up", n,
		total.Round(time.Millisecond), rate(n, total), drained.Round(time.Millisecond))
	sum := s.finish(time.Minute)
	t.Logf("FLOOD backlog=%d drained_in=%s ack_pending_peak=%d/%d (before lowering %d/%d) peak_rss=%s events=%d",
		n, total.Round(time.Millisecond), peakLow, lowAckPending, peakSpec, specMax, mib(health.peakRSS()), sum.Events)
}
