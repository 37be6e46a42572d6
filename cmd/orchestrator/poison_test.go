package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
	"github.com/campaign-orchestrator/orchestrator/internal/deadletter"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/events/natstest"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/store/redistest"
	"github.com/campaign-orchestrator/orchestrator/internal/worker"
)

// Consumer timing of the poison test: short, in the production ratios
// (ack wait > LOCK_TTL).
const (
	poisonAckWait    = 1500 * time.Millisecond
	poisonMaxDeliver = 3
	poisonDupWindow  = time.Second // CAMPAIGN_COMMANDS's duplicate window
)

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// outcomeLog records what one instance's dead-letter handler did.
type outcomeLog struct {
	mu  sync.Mutex
	all []deadletter.Outcome
}

func (l *outcomeLog) observe(o deadletter.Outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all = append(l.all, o)
}

// advisory returns the outcome of the advisory about seq, if handled.
func (l *outcomeLog) advisory(seq uint64) (deadletter.Outcome, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, o := range l.all {
		if o.StreamSeq == seq && o.Source == "advisory" {
			return o, true
		}
	}
	return deadletter.Outcome{}, false
}

// waitUntil polls cond until it holds or d passes.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testLog() *slog.Logger {
	if os.Getenv("TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// cli runs the orchestrator binary's command line in-process.
func cli(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(ctx, args, func(string) string { return "" }, &out, &errOut)
	if err != nil {
		err = fmt.Errorf("%w (stderr: %s)", err, errOut.String())
	}
	return out.String(), err
}

// A command whose handler keeps failing (a fault at BeforeWrite for one
// campaign) reaches max_deliver while two worker instances run, each with its
// dead-letter handler: it becomes exactly one DLQ entry and leaves the work
// queue; other campaigns are not held up. Once the fault is gone,
// `orchestrator dlq replay <seq>` completes the campaign, and replaying again
// (within and after the duplicate window) changes nothing. `trace`, with and
// without --follow, shows the timeline.
func TestPoisonCommandDeadLetteredOnceThenReplayed(t *testing.T) {
	srv := natstest.Start(t)
	url := srv.ClientURL()
	_, js := natstest.Connect(t, srv)
	rds := redistest.New(t)
	down, _ := newDownstream(t)

	var faulty atomic.Bool
	faulty.Store(true)
	fault := func(p worker.FaultPoint, k store.Key) error {
		if p == worker.BeforeWrite && k.Campaign == "poison" && faulty.Load() {
			return errors.New("injected: the handler keeps failing")
		}
		return nil
	}
	cfg := testConfig(t, map[string]string{
		"NATS_URL": url, "REDIS_URL": rds.URL(), "STEPS_BASE_URL": down.URL,
		"DUPLICATE_WINDOW": poisonDupWindow.String(), "WORKERS": "4",
	})
	cfg.Role = config.RoleWorker
	cfg.LockTTL = 500 * time.Millisecond // below the 1 s LOCK_TTL accepts, as the ack wait is
	var logs [2]outcomeLog
	var apps [2]*App
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		stop()
		wg.Wait()
		for _, a := range apps {
			if a != nil {
				_ = a.Close()
			}
		}
	})
	for i := range apps {
		a, err := NewApp(context.Background(), cfg, testLog().With("instance", i), Options{
			Consumer: func(c *jetstream.ConsumerConfig) {
				c.AckWait, c.BackOff, c.MaxDeliver = poisonAckWait, nil, poisonMaxDeliver
			},
			Fault:      fault,
			DeadLetter: deadletter.Config{Observe: logs[i].observe},
		})
		if err != nil {
			t.Fatalf("instance %d: %v", i, err)
		}
		apps[i] = a
		wg.Go(func() {
			if err := a.Run(runCtx); err != nil {
				t.Errorf("instance %d: %v", i, err)
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	publish := func(campaign, id string) uint64 {
		t.Helper()
		m := events.NewCommandMsg(events.CommandEnvelope{ID: id, Type: "create", TenantID: "acme", CampaignID: campaign,
			Payload: []byte(`{"name":"` + campaign + `","start":true}`)}, "")
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	history := func(campaign string) []events.CloudEvent {
		t.Helper()
		evs, err := events.History(ctx, js, "acme", campaign)
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	completed := func(campaign string) func() bool {
		return func() bool {
			evs := history(campaign)
			return len(evs) > 0 && evs[len(evs)-1].Type == fsm.EvCompleted
		}
	}
	commands, err := js.Stream(ctx, events.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	consumed := func(seq uint64) func() bool {
		return func() bool {
			_, err := commands.GetMsg(ctx, seq)
			return errors.Is(err, jetstream.ErrMsgNotFound)
		}
	}

	seq := publish("poison", "poison-create")
	publish("healthy", "healthy-create")
	waitUntil(t, 30*time.Second, "healthy campaign completed beside the poison one", completed("healthy"))

	// Both instances hear the MAX_DELIVERIES advisory.
	waitUntil(t, 60*time.Second, "both instances handling the advisory", func() bool {
		_, ok0 := logs[0].advisory(seq)
		_, ok1 := logs[1].advisory(seq)
		return ok0 && ok1
	})
	o0, _ := logs[0].advisory(seq)
	o1, _ := logs[1].advisory(seq)
	if o0.Err != nil || o1.Err != nil || (o0.Result == deadletter.Stored) == (o1.Result == deadletter.Stored) {
		t.Fatalf("outcomes %+v and %+v: want exactly one %s", o0, o1, deadletter.Stored)
	}
	entries, err := deadletter.List(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("%d dead letters, want exactly 1: %+v", len(entries), entries)
	}
	dl := entries[0]
	if dl.Subject != "campaign.dlq.acme.poison" || dl.OriginalSeq != seq || dl.CommandID != "poison-create" || !strings.Contains(dl.Reason, "max deliveries") {
		t.Fatalf("dead letter = %+v", dl)
	}
	if !consumed(seq)() {
		t.Fatalf("poison command %d still in %s", seq, events.StreamCommands)
	}
	if evs := history("poison"); len(evs) != 0 {
		t.Fatalf("poison campaign has events: %v", evs)
	}

	out, err := cli(t, ctx, "dlq", "list", "--nats-url", url)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{strconv.FormatUint(dl.Seq, 10), "campaign.cmd.acme.poison.create", "poison-create", "max deliveries", "1 dead letter(s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("dlq list output lacks %q:\n%s", want, out)
		}
	}
	out, err = cli(t, ctx, "dlq", "list", "--json", "--nats-url", url)
	if err != nil || !strings.Contains(out, `"command_id": "poison-create"`) || !strings.Contains(out, `"name": "poison"`) {
		t.Errorf("dlq list --json: %v\n%s", err, out)
	}

	// Follow the campaign's timeline while it is replayed.
	var follow syncBuffer
	fctx, stopFollow := context.WithCancel(ctx)
	followDone := make(chan error, 1)
	go func() {
		followDone <- run(fctx, []string{"trace", "acme/poison", "--follow", "--nats-url", url}, func(string) string { return "" }, &follow, io.Discard)
	}()

	// The fix, then the replay.
	faulty.Store(false)
	replay := func() (stored uint64) {
		t.Helper()
		out, err := cli(t, ctx, "dlq", "replay", strconv.FormatUint(dl.Seq, 10), "--nats-url", url)
		if !strings.Contains(out, "poison-create") || !strings.Contains(out, "kept in CAMPAIGN_DLQ") {
			t.Errorf("dlq replay output:\n%s", out)
		}
		if m := regexp.MustCompile(`stored as CAMPAIGN_COMMANDS/(\d+)`).FindStringSubmatch(out); m != nil {
			if err != nil {
				t.Fatal(err)
			}
			n, _ := strconv.ParseUint(m[1], 10, 64)
			return n
		} else if !strings.Contains(out, "not stored") {
			t.Fatalf("dlq replay output says neither stored nor not stored:\n%s", out)
		}
		// Nothing stored: the command fails, and says what to do.
		if err == nil || !strings.Contains(err.Error(), "not stored") || !strings.Contains(err.Error(), "--new-id") {
			t.Fatalf("dlq replay that stored nothing: error %v, want one saying so and naming --new-id", err)
		}
		return 0
	}
	first := replay()
	firstAt := time.Now()
	if first == 0 {
		t.Fatal("first replay not stored")
	}
	waitUntil(t, 30*time.Second, "poison campaign completed after the replay", completed("poison"))
	evs := history("poison")
	for i, e := range evs {
		if e.Seq() != uint64(i+1) {
			t.Fatalf("event %d has sequence %d", i+1, e.Seq())
		}
	}
	if evs[0].Type != fsm.EvCreated || evs[0].CommandID != "poison-create" {
		t.Fatalf("first event %s by command %s", evs[0].Type, evs[0].CommandID)
	}

	// Replaying again changes nothing: deduplicated by the stream within its
	// window, absorbed by the campaign's ledger after it.
	waitUntil(t, 10*time.Second, "first replay consumed", consumed(first))
	lastStored := firstAt
	if again := replay(); again != 0 { // stored: the window had passed already
		lastStored = time.Now()
		waitUntil(t, 10*time.Second, "second replay consumed", consumed(again))
	}
	time.Sleep(time.Until(lastStored.Add(poisonDupWindow + 200*time.Millisecond))) // outlive the duplicate window
	third := replay()
	if third == 0 {
		t.Fatal("replay after the duplicate window not stored")
	}
	waitUntil(t, 10*time.Second, "third replay consumed", consumed(third))
	if got := history("poison"); len(got) != len(evs) {
		t.Fatalf("replays added events: %d, then %d", len(evs), len(got))
	}
	c, err := apps[0].Store().Load(ctx, store.Key{Tenant: "acme", Campaign: "poison"})
	if err != nil || c.State != fsm.Completed || c.Seq != uint64(len(evs)) {
		t.Fatalf("stored campaign %s seq %d (%v), want completed at %d", c.State, c.Seq, err, len(evs))
	}
	if n, _ := deadletter.List(ctx, js); len(n) != 1 {
		t.Fatalf("%d dead letters after the replays, want 1 (kept)", len(n))
	}

	// --new-id: a new command under a fresh id, not deduplicated: this
	// create of an existing campaign is stored and rejected.
	out, err = cli(t, ctx, "dlq", "replay", strconv.FormatUint(dl.Seq, 10), "--new-id", "--nats-url", url)
	if err != nil || !regexp.MustCompile(`as new command dlq-replay\.\d+\.[0-9a-f]{16}: stored as CAMPAIGN_COMMANDS/\d+`).MatchString(out) {
		t.Fatalf("dlq replay --new-id: %v\n%s", err, out)
	}
	waitUntil(t, 10*time.Second, "the new-id replay rejected", func() bool { return len(history("poison")) == len(evs)+1 })
	if got := history("poison"); got[len(got)-1].Type != fsm.EvRejected || !strings.HasPrefix(got[len(got)-1].CommandID, "dlq-replay.") {
		t.Fatalf("last event %s by %s, want %s by a dlq-replay.… command", got[len(got)-1].Type, got[len(got)-1].CommandID, fsm.EvRejected)
	}
	evs = history("poison")

	// trace: one aligned line per event.
	out, err = cli(t, ctx, "trace", "acme/poison", "--nats-url", url)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != len(evs)+1 || !strings.HasPrefix(lines[0], "TIME") {
		t.Fatalf("trace printed %d lines for %d events:\n%s", len(lines), len(evs), out)
	}
	typeCol := strings.Index(lines[0], "EVENT")
	for i, e := range evs {
		line := lines[i+1]
		want := strings.TrimPrefix(e.Type, "campaign.")
		if !strings.HasPrefix(line[typeCol:], want) || !strings.Contains(line, " "+strconv.Itoa(i+1)+" ") {
			t.Errorf("trace line %d = %q, want sequence %d and %s in the EVENT column", i+1, line, i+1, want)
		}
	}
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) < 6 || f[2] != "step.succeeded" {
			continue
		}
		if _, err := time.ParseDuration(f[5]); err != nil || f[4] != "1" {
			t.Errorf("trace line %q: no step, run 1 and duration (%v)", line, err)
		}
	}
	waitUntil(t, 10*time.Second, "trace --follow showing the completion", func() bool { return strings.Contains(follow.String(), "completed") })
	stopFollow()
	select {
	case err := <-followDone:
		if err != nil {
			t.Fatalf("trace --follow: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("trace --follow did not stop when interrupted")
	}
	if got, want := follow.String(), out; got != want {
		t.Errorf("trace --follow printed\n%s\nwant the same as trace:\n%s", got, want)
	}
}
