//go:build chaos

package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/store/redistest"
)

// Network and Redis fault kinds, as counted in the summary.
const (
	FaultDropReply    = "redis-drop-reply"   // a reply lost after the command ran, the connection closed
	FaultRedisReset   = "redis-reset"        // every open connection to Redis reset (RST)
	FaultRedisHole    = "redis-black-hole"   // Redis unreachable (accepted, nothing forwarded, then closed) for a while
	FaultRedisKill    = "redis-kill9"        // redis-server killed with SIGKILL
	FaultRedisStart   = "redis-restart"      // redis-server started again (from its append-only file)
	FaultStepReset    = "step-reset"         // every open connection to the step services reset
	FaultStepHole     = "step-black-hole"    // the step services unreachable for longer than STEP_TIMEOUT
	FaultStepSlow     = "step-slow"          // the step services' answers held for a while
	FaultStepLate     = "step-late-answer"   // a step answered after its timeout (the fake itself)
	FaultStep5xx      = "step-5xx"           // a step answered 500 (the fake itself)
	FaultStepExhaust  = "step-retries-spent" // a step run that failed after its network retries (observed)
	FaultStepRecovers = "step-retried-ok"    // a step run that succeeded after a network retry (observed)
)

// addN counts n faults of kind with one line in the timeline.
func (f *Faults) addN(kind string, n int, what string) {
	if n <= 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[kind] += n
	f.log = append(f.log, time.Since(f.start).Round(time.Millisecond).String()+" "+kind+" ×"+fmt.Sprint(n)+" "+what)
}

// faultPhase runs the load with loop injecting faults from the start until
// both the load is sent and minimum has passed; loop must return soon after
// its ctx ends.
func (s *scenario) faultPhase(minimum time.Duration, loop func(ctx context.Context)) {
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); loop(ctx) }()
	minFaults := time.After(minimum)
	s.load.Run(context.Background())
	s.t.Logf("load sent in %s", time.Since(s.start).Round(time.Millisecond))
	<-minFaults
	stop()
	<-done
	s.t.Logf("faults stopped at %s", time.Since(s.start).Round(time.Millisecond))
}

// TestChaosRedisFaults puts two proxies between the orchestrators and
// redis-server: a TCP proxy that resets every connection or black-holes
// Redis for a few seconds (connections accepted, nothing forwarded, then
// closed), in front of redistest's RESP proxy that loses the reply to one
// command after Redis ran it and closes the connection (CONTRACT guarantee
// 7, under the whole system). The checker reads Redis directly.
func TestChaosRedisFaults(t *testing.T) {
	s := newScenario(t)
	s.load.cfg.Spread = time.Duration(float64(25*time.Second) * s.scale)
	resp := redistest.NewProxy(t, s.rdb.Options().Addr)
	tcp := NewTCPProxy(t, resp.Addr())
	s.cl.Redis = "redis://" + tcp.Addr() + "/0"
	s.startOrchs("A", "B", "C")

	var dropped []func() int
	s.faultPhase(time.Duration(float64(30*time.Second)*s.scale), func(ctx context.Context) {
		for {
			sleepCtx(ctx, randDur(s.rng, 600*time.Millisecond, 2*time.Second))
			if ctx.Err() != nil {
				break
			}
			switch x := s.rng.IntN(100); {
			case x < 55:
				// Lose the reply of the next script (a store operation),
				// or of the next command of any kind.
				what, match := "next EVALSHA/EVAL", func(args [][]byte) bool {
					return len(args) > 0 && (strings.EqualFold(string(args[0]), "evalsha") || strings.EqualFold(string(args[0]), "eval"))
				}
				if s.rng.IntN(3) == 0 {
					what, match = "next command", func(args [][]byte) bool { return len(args) > 0 }
				}
				d := resp.DropReply(match)
				wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				_ = waitFor(wctx, 10*time.Millisecond, func() bool { return d() > 0 })
				cancel()
				if d() > 0 {
					s.faults.Add(FaultDropReply, what)
				}
				dropped = append(dropped, d)
			case x < 85:
				n := tcp.Reset()
				s.faults.Add(FaultRedisReset, fmt.Sprintf("%d connections", n))
			default:
				d := randDur(s.rng, 2*time.Second, 5*time.Second)
				n := tcp.BlackHole(d)
				s.faults.Add(FaultRedisHole, fmt.Sprintf("%s, %d connections closed after", d.Round(time.Millisecond), n))
			}
		}
		resp.DropReply(func([][]byte) bool { return false }) // disarm
	})
	st := tcp.Stats()
	t.Logf("redis proxy: %d connections accepted, %d reset, %d black-holed; RESP proxy commands %v", st["accepted"], st["reset"], st["holed"], topCommands(resp.Commands(), 8))
	s.finish(3 * time.Minute)
}

// topCommands names the n commonest commands.
func topCommands(m map[string]int, n int) string {
	type kv struct {
		k string
		v int
	}
	var all []kv
	for k, v := range m {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
	var out []string
	for i, e := range all {
		if i == n {
			break
		}
		out = append(out, fmt.Sprintf("%s=%d", e.k, e.v))
	}
	return strings.Join(out, " ")
}

// TestChaosRedisRestart runs the orchestrators on a redis-server with the
// append-only file fsynced before every acknowledgement, and kills it with
// SIGKILL a few times during the load, starting it again after a moment:
// nothing it acknowledged may be lost, and the checker passes.
func TestChaosRedisRestart(t *testing.T) {
	s := newScenario(t)
	s.load.cfg.Spread = time.Duration(float64(25*time.Second) * s.scale)
	rs := StartRedisAOF(t, s.cl.Dir)
	s.cl.Redis = rs.URL()
	old := s.rdb
	s.rdb = redis.NewClient(&redis.Options{Addr: rs.Addr()}) // closed by newScenario's Cleanup
	_ = old.Close()
	s.startOrchs("A", "B", "C")

	var restartErr error
	s.faultPhase(time.Duration(float64(30*time.Second)*s.scale), func(ctx context.Context) {
		for {
			sleepCtx(ctx, randDur(s.rng, 4*time.Second, 9*time.Second))
			if ctx.Err() != nil {
				return
			}
			keys, _ := s.rdb.DBSize(context.Background()).Result()
			pid := rs.pid()
			rs.Kill()
			s.faults.Add(FaultRedisKill, fmt.Sprintf("pid %d with %d keys", pid, keys))
			time.Sleep(randDur(s.rng, 500*time.Millisecond, 3*time.Second))
			if err := rs.Start(); err != nil {
				restartErr = err
				return
			}
			after, _ := s.rdb.DBSize(context.Background()).Result()
			s.faults.Add(FaultRedisStart, fmt.Sprintf("pid %d with %d keys loaded", rs.pid(), after))
		}
	})
	if restartErr != nil {
		t.Fatalf("redis-server restart: %v", restartErr)
	}
	s.finish(3 * time.Minute)
}

// Step settings of TestChaosStepNetwork: short enough that a black hole of a
// few seconds outlasts a run's every attempt (1 s + 0.2 s + 1 s + 0.4 s + 1 s
// ≈ 3.6 s) and a short fault only some of them.
const (
	netStepTimeout = time.Second
	netStepRetries = 2
	netStepBackoff = 200 * time.Millisecond
)

// TestChaosStepNetwork puts a TCP proxy between the orchestrators and the
// step services that resets connections, black-holes them for longer than
// STEP_TIMEOUT and holds answers (slow), while the fake answers 500 to the
// first call of some runs (CONTRACT: a 4xx/5xx fails the step at once) and
// answers some calls after the step's timeout. Network errors are retried
// with back-off (STEP_MAX_RETRIES): some runs survive, some fail after
// their retries, and a later `retry` of the load brings a failed campaign
// back. The checker's rules apply (one Idempotency-Key per run, no overlaps
// from current fences); besides, no call answered 5xx may be retried within
// its run.
func TestChaosStepNetwork(t *testing.T) {
	s := newScenario(t)
	s.load.cfg.Spread = time.Duration(float64(25*time.Second) * s.scale)
	proxy := NewTCPProxy(t, strings.TrimPrefix(s.cl.Down.URL(), "http://"))
	s.cl.env = append(s.cl.env,
		"STEPS_BASE_URL=http://"+proxy.Addr(),
		"STEP_TIMEOUT="+netStepTimeout.String(),
		fmt.Sprintf("STEP_MAX_RETRIES=%d", netStepRetries),
		"STEP_BACKOFF_BASE="+netStepBackoff.String())

	// A share of calls, fixed by the seed and the call's key and attempt,
	// answers after the timeout.
	var lateMu sync.Mutex
	late := 0
	lateFrac := func(key string, attempt int) float64 {
		h := fnv.New64a()
		fmt.Fprintf(h, "late|%d|%s|%d", s.seed, key, attempt)
		return float64(mix64(h.Sum64())>>11) / (1 << 53)
	}
	s.cl.Down.SetRule(func(c Call) (Behavior, bool) {
		if lateFrac(c.Key, c.Attempt) >= 0.08 {
			return Behavior{}, false
		}
		lateMu.Lock()
		late++
		lateMu.Unlock()
		return Behavior{Delay: netStepTimeout + 500*time.Millisecond}, true
	})
	s.startOrchs("A", "B", "C")

	s.faultPhase(time.Duration(float64(30*time.Second)*s.scale), func(ctx context.Context) {
		for {
			sleepCtx(ctx, randDur(s.rng, 1500*time.Millisecond, 4*time.Second))
			if ctx.Err() != nil {
				return
			}
			switch x := s.rng.IntN(100); {
			case x < 35:
				n := proxy.Reset()
				s.faults.Add(FaultStepReset, fmt.Sprintf("%d connections", n))
			case x < 70:
				d := randDur(s.rng, 2*netStepTimeout, 5*netStepTimeout)
				n := proxy.BlackHole(d)
				s.faults.Add(FaultStepHole, fmt.Sprintf("%s, %d connections closed after", d.Round(time.Millisecond), n))
			default:
				delay := randDur(s.rng, netStepTimeout/3, 3*netStepTimeout/2)
				d := randDur(s.rng, 2*time.Second, 4*time.Second)
				proxy.SetSlow(delay)
				s.faults.Add(FaultStepSlow, fmt.Sprintf("answers held %s for %s", delay.Round(time.Millisecond), d.Round(time.Millisecond)))
				sleepCtx(ctx, d)
				proxy.SetSlow(0)
			}
		}
	})
	st := proxy.Stats()
	t.Logf("step proxy: %d connections accepted, %d reset, %d black-holed", st["accepted"], st["reset"], st["holed"])

	// Figures and the fail-fast rule, from the fake's record (before the
	// checker, which reads it again at the end).
	lateMu.Lock()
	n := late
	lateMu.Unlock()
	s.finishStepNetwork(proxy, n)
}

// mix64 is splitmix64's finaliser: FNV-1a alone barely changes its high
// bits for a change in the last byte (the attempt number).
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// finishStepNetwork adds the step-network figures and the 5xx fail-fast
// check to the findings, then finishes the scenario.
func (s *scenario) finishStepNetwork(proxy *TCPProxy, late int) *Summary {
	// Wait for the system to settle first, so that the record is final:
	// finish waits again (at once idle) and then checks.
	ctx := context.Background()
	WaitQuiet(ctx, s.js, s.rdb, s.cl.Down, 3*time.Minute, s.t.Logf)
	byKey := map[string][]Call{}
	fiveKeys := map[string]int{} // run → the first attempt a 5xx answered
	fives, unseen := 0, 0
	for _, c := range s.cl.Down.Calls() {
		byKey[c.Key] = append(byKey[c.Key], c)
		if c.Status >= 500 {
			fives++
			// A 500 the proxy held, discarded or cut off may have
			// reached the orchestrator as a timeout or a reset (a
			// network error, retried): only the others must fail fast.
			if proxy.Tainted(c.Remote) {
				unseen++
			} else if a, ok := fiveKeys[c.Key]; !ok || c.Attempt < a {
				fiveKeys[c.Key] = c.Attempt
			}
		}
	}
	for _, key := range sortedKeys(byKey) {
		cs := byKey[key]
		sort.Slice(cs, func(i, j int) bool { return cs[i].Start.Before(cs[j].Start) })
		for i, c := range cs {
			if c.Status < 500 || proxy.Tainted(c.Remote) {
				continue
			}
			// A later call of this run may come from a new holder (a
			// higher fence), never as a retry of the same holder.
			for _, d := range cs[i+1:] {
				if d.Fence == c.Fence {
					s.extra = append(s.extra, Finding{Kind: KindFSM, Campaign: c.Tenant + "/" + c.Campaign,
						Detail: fmt.Sprintf("call %s (%s attempt %d) answered %d was retried by the same holder: call %s attempt %d", c.ID(), key, c.Attempt, c.Status, d.ID(), d.Attempt)})
				}
			}
		}
	}
	// From the history: runs that failed on a 5xx, runs that failed after
	// their network retries, runs that succeeded after a retry.
	msgs, err := readStream(ctx, s.js, streamEvents)
	if err != nil {
		s.t.Fatalf("read %s: %v", streamEvents, err)
	}
	retrying := map[string]int{}
	failedFast, exhausted, recovered, other := 0, 0, 0, 0
	var reasons []string
	for _, m := range msgs {
		var e event
		if json.Unmarshal(m.Data, &e) != nil {
			continue
		}
		_ = json.Unmarshal(e.Data, &e.data)
		run := fmt.Sprintf("%s.%s.%s.%d", e.Tenant, e.Campaign, e.data.Step, e.data.Run)
		switch strings.TrimPrefix(e.Type, "campaign.") {
		case "step.retrying":
			retrying[run]++
			// Attempts before the one a 5xx answered (timed out, reset)
			// are rightly retried; that one and later ones must not be.
			if a, ok := fiveKeys[run]; ok && e.data.Attempt >= a {
				s.extra = append(s.extra, Finding{Kind: KindFSM, Campaign: e.Tenant + "/" + e.Campaign,
					Detail: fmt.Sprintf("run %s was answered 5xx, yet retried (event %s)", run, e.ID)})
			}
		case "step.succeeded":
			if retrying[run] > 0 {
				recovered++
			}
		case "step.failed":
			var d struct {
				Error string `json:"error"`
			}
			_ = json.Unmarshal(e.Data, &d)
			switch {
			case strings.Contains(d.Error, "retries exhausted"):
				exhausted++
			case strings.Contains(d.Error, "answered 5"):
				failedFast++
			default:
				other++
			}
			if len(reasons) < 2 {
				reasons = append(reasons, run+": "+d.Error)
			}
		}
	}
	s.faults.addN(FaultStep5xx, fives, fmt.Sprintf("calls answered 500 by the fake (%d of them held or cut off by the proxy)", unseen))
	s.faults.addN(FaultStepLate, late, "calls answered after STEP_TIMEOUT by the fake")
	s.faults.addN(FaultStepRecovers, recovered, "step runs that succeeded after a network retry")
	s.faults.addN(FaultStepExhaust, exhausted, "step runs that failed after their network retries")
	s.t.Logf("step runs: %d failed at once on a 5xx, %d succeeded after a network retry, %d failed after their %d network retries, %d failed otherwise; e.g. %q",
		failedFast, recovered, exhausted, netStepRetries, other, reasons)
	return s.finish(time.Minute)
}

// FaultRedisEmpty is redis-server killed and started again with none of its
// data (its files removed): a store that lost everything.
const FaultRedisEmpty = "redis-empty-restart"

// TestChaosRedisEmpty (CONTRACT guarantee 8): while campaigns run their
// steps (the step services held 1.5–3 s per call), redis-server is killed
// and started again EMPTY. Then `orchestrator rebuild` runs once, as an
// operator would after the loss: it rebuilds every campaign the store no
// longer holds, with its ledger and a fencing counter above every fence of
// its history, and parks the next advance of each running one (the sweep
// takes it over). Campaigns idle at the loss have no trigger anywhere
// (their inbox went with Redis): the rebuild command is what makes them
// right; a worker that meets a campaign first (the holders of running ones
// whose lock vanished, their command still unacknowledged) rebuilds it
// itself, and the rebuild command then skips it. The checker's rules all
// apply: every command applied once, no gap, store and history agree,
// fences never go backwards along a campaign's events, and no call after
// the loss carries a fence at or below one made before it (checked here).
//
// The loss comes once the load is sent and no external command lives only
// in the store (no inbox holding one, no outbox holding its unpublished
// events): a command acknowledged into an inbox lives only in Redis, and no
// rebuild can bring it back (RELIABILITY.md).
func TestChaosRedisEmpty(t *testing.T) {
	s := newScenario(t)
	rs := StartRedisAOF(t, s.cl.Dir)
	s.cl.Redis = rs.URL()
	old := s.rdb
	s.rdb = redis.NewClient(&redis.Options{Addr: rs.Addr()}) // closed by newScenario's Cleanup
	_ = old.Close()
	s.cl.Down.SetRule(func(c Call) (Behavior, bool) {
		return Behavior{Delay: randDurHash(s.seed, c.Key, c.Attempt, 1500*time.Millisecond, 3*time.Second)}, true
	})
	s.startOrchs("A", "B", "C")
	ctx := context.Background()
	s.load.Run(ctx)
	s.t.Logf("load sent in %s", time.Since(s.start).Round(time.Millisecond))

	// Wait for no external command to be in transit or waiting in the store.
	deadline := time.Now().Add(time.Duration(float64(time.Minute) * max(s.scale, 1)))
	lastWhy := time.Now()
	for {
		quiet, why, err := noExternalWaiting(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if quiet {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("external commands still waiting: %s", why)
		}
		if time.Since(lastWhy) > 2*time.Second {
			t.Logf("waiting for the external commands: %s", why)
			lastWhy = time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	inFlight := s.cl.Down.InFlight()
	keys, _ := s.rdb.DBSize(ctx).Result()
	running := 0
	for iter := s.rdb.Scan(ctx, 0, redisPrefix+":{*}:state", 1000).Iterator(); iter.Next(ctx); {
		if st, _ := s.rdb.HGet(ctx, iter.Val(), "st").Result(); st == "running" {
			running++
		}
	}
	lossAt := time.Now()
	var before uint64
	beforeByCampaign := map[string]uint64{}
	for _, c := range s.cl.Down.Calls() {
		k := c.Tenant + "/" + c.Campaign
		beforeByCampaign[k] = max(beforeByCampaign[k], c.Fence)
		before = max(before, c.Fence)
	}
	pid := rs.pid()
	rs.Kill()
	if err := rs.Wipe(); err != nil {
		t.Fatal(err)
	}
	if err := rs.Start(); err != nil {
		t.Fatalf("redis-server restart: %v", err)
	}
	after, _ := s.rdb.DBSize(ctx).Result()
	s.faults.Add(FaultRedisEmpty, fmt.Sprintf("pid %d with %d keys, %d campaigns running, %d step calls in flight; started again with %d keys", pid, keys, running, inFlight, after))

	out, err := s.cl.RunTool(ctx, "rebuild")
	t.Logf("orchestrator rebuild:\n%s", out)
	if err != nil {
		t.Fatalf("orchestrator rebuild: %v", err)
	}

	s.finish(3 * time.Minute)
	// No call after the loss with a fence at or below one before it (a
	// run's later attempts keep their first attempt's fence).
	for _, c := range s.cl.Down.Calls() {
		k := c.Tenant + "/" + c.Campaign
		if c.Attempt == 1 && c.Start.After(lossAt) && c.Fence <= beforeByCampaign[k] {
			s.t.Errorf("finding fence-backwards %s: call %s of %s with fence %d after the loss, at or below the %d before it", k, c.Key, c.Step, c.Fence, beforeByCampaign[k])
		}
	}
	t.Logf("highest fence before the loss: %d", before)
}

// noExternalWaiting reports whether no external command lives only in
// Redis: parked in an inbox (and so acknowledged on JetStream), or applied
// with its events still unpublished in an outbox. A command still in
// CAMPAIGN_COMMANDS (the message backing a holder, unacknowledged until
// its drain ends) survives the loss: it comes back, and the worker that
// meets it rebuilds its campaign.
func noExternalWaiting(ctx context.Context, s *scenario) (bool, string, error) {
	evs, err := s.js.Stream(ctx, streamEvents)
	if err != nil {
		return false, "", err
	}
	iter := s.rdb.Scan(ctx, 0, redisPrefix+":{*}:*box", 1000).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		switch {
		case strings.HasSuffix(key, ":inbox"):
			ids, err := s.rdb.ZRange(ctx, key, 0, -1).Result()
			if err != nil {
				return false, "", err
			}
			for _, id := range ids {
				if !strings.Contains(id, ".advance.") {
					return false, key + " holds " + id, nil
				}
			}
		case strings.HasSuffix(key, ":outbox"):
			// Published messages stay until the campaign's next write
			// trims them: only an event not yet in the stream waits.
			msgs, err := s.rdb.LRange(ctx, key, 0, -1).Result()
			if err != nil {
				return false, "", err
			}
			for _, raw := range msgs {
				var m struct {
					Subject string            `json:"subject"`
					Header  map[string]string `json:"header"`
				}
				if json.Unmarshal([]byte(raw), &m) != nil || strings.Contains(m.Header["Command-Id"], ".advance.") {
					continue
				}
				id := m.Header["Nats-Msg-Id"]
				toks := strings.SplitN(m.Subject, ".", 5)
				if len(toks) < 5 {
					continue
				}
				last, err := evs.GetLastMsgForSubject(ctx, "campaign.evt."+toks[2]+"."+toks[3]+".>")
				if err != nil {
					return false, key + ": " + err.Error(), nil
				}
				n, _ := strconv.ParseUint(id[strings.LastIndexByte(id, '.')+1:], 10, 64)
				lastID := last.Header.Get("Nats-Msg-Id")
				stored, _ := strconv.ParseUint(lastID[strings.LastIndexByte(lastID, '.')+1:], 10, 64)
				if n > stored {
					return false, key + " holds event " + id + " of " + m.Header["Command-Id"] + ", not yet published", nil
				}
			}
		}
	}
	return true, "", iter.Err()
}

// randDurHash is a duration in [lo, hi) fixed by the seed and the call.
func randDurHash(seed uint64, key string, attempt int, lo, hi time.Duration) time.Duration {
	h := fnv.New64a()
	fmt.Fprintf(h, "delay|%d|%s|%d", seed, key, attempt)
	return lo + time.Duration(mix64(h.Sum64())%uint64(hi-lo))
}
