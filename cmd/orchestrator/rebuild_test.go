package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/events/natstest"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/store/redistest"
	"github.com/campaign-orchestrator/orchestrator/streams"
)

// fencedSteps answers every step with 200, records each call's
// Campaign-Fence by campaign, and holds the calls of one campaign's step
// until released.
type fencedSteps struct {
	mu      sync.Mutex
	fences  map[string][]uint64 // campaign → fences of its calls, in order
	hold    string              // "<campaign>/<step>" held
	held    chan struct{}       // closed when the held call arrives
	release chan struct{}
}

func (f *fencedSteps) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Campaign string `json:"campaign_id"`
		Step     string `json:"step"`
	}
	_ = json.NewDecoder(r.Body).Decode(&body)
	fence, _ := strconv.ParseUint(r.Header.Get("Campaign-Fence"), 10, 64)
	f.mu.Lock()
	f.fences[body.Campaign] = append(f.fences[body.Campaign], fence)
	hold := f.hold == body.Campaign+"/"+body.Step
	if hold {
		f.hold = ""
		close(f.held)
	}
	f.mu.Unlock()
	if hold {
		select {
		case <-f.release:
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"step":%q}`, body.Step)
}

func (f *fencedSteps) of(campaign string) []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uint64(nil), f.fences[campaign]...)
}

// `orchestrator rebuild` after Redis lost everything (FLUSHALL): every
// campaign of CAMPAIGN_EVENTS comes back as it was (state, ledger, fence
// floor), a running one whose holder lost its lock goes on from its
// trigger, an old command id sent again is not applied again, and no call
// after the loss carries a fence below one before. A second run skips
// them all; --dry-run writes nothing.
func TestRebuildCommand(t *testing.T) {
	srv := natstest.Start(t)
	natsURL := srv.ClientURL()
	_, js := natstest.Connect(t, srv)
	rds := redistest.New(t)
	steps := &fencedSteps{fences: map[string][]uint64{}, hold: "running/render", held: make(chan struct{}), release: make(chan struct{})}
	down := httptest.NewServer(steps)
	t.Cleanup(down.Close)
	const window = 500 * time.Millisecond
	env := map[string]string{"NATS_URL": natsURL, "REDIS_URL": rds.URL(), "STEPS_BASE_URL": down.URL, "DUPLICATE_WINDOW": window.String(),
		"LOCK_TTL": "1s"} // the rebuild waits it out (the app's own is shorter)
	cfg := testConfig(t, env)
	cfg.Role = config.RoleWorker
	cfg.LockTTL = 500 * time.Millisecond
	app, err := NewApp(context.Background(), cfg, testLog(), Options{
		Consumer: func(c *jetstream.ConsumerConfig) { c.AckWait, c.BackOff = 1500*time.Millisecond, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := app.Run(runCtx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() { stop(); <-done; _ = app.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	publish := func(campaign string, verb fsm.Verb, id, payload string) {
		t.Helper()
		m := events.NewCommandMsg(events.CommandEnvelope{ID: id, Type: string(verb), TenantID: "acme", CampaignID: campaign, Payload: json.RawMessage(payload)}, "")
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatalf("publish %s %s: %v", verb, campaign, err)
		}
	}
	rs, err := store.NewRedis(ctx, rds.URL(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	key := func(c string) store.Key { return store.Key{Tenant: "acme", Campaign: c} }
	idle := func(c string, want fsm.State) fsm.Campaign {
		t.Helper()
		var got fsm.Campaign
		deadline := time.Now().Add(20 * time.Second)
		for {
			var err error
			got, err = rs.Load(ctx, key(c))
			in, _ := rs.Inbox(ctx, key(c), 1)
			last, ok, _ := events.NewPublisher(js).Last(ctx, "acme", c)
			if err == nil && got.State == want && len(in) == 0 && ok && last == got.Seq {
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not idle in state %s: %+v, %v", c, want, got, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	publish("done", fsm.Create, "done-create", `{"name":"done","start":true}`)
	publish("pending", fsm.Create, "pending-create", `{"name":"pending","params":{"audience":"all"}}`)
	publish("rejected", fsm.Create, "rejected-create", `{"name":"rejected"}`)
	publish("running", fsm.Create, "running-create", `{"name":"running","start":true}`)
	idle("rejected", fsm.Pending)
	publish("rejected", fsm.Pause, "rejected-pause", "")
	before := map[string]fsm.Campaign{
		"done":    idle("done", fsm.Completed),
		"pending": idle("pending", fsm.Pending),
	}
	waitSeq := func(c string, seq uint64) fsm.Campaign {
		t.Helper()
		for {
			if got := idle(c, fsm.Pending); got.Seq == seq {
				return got
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	before["rejected"] = waitSeq("rejected", 2)
	select {
	case <-steps.held:
	case <-ctx.Done():
		t.Fatal("the running campaign's render step never called")
	}
	var floor uint64
	for _, f := range steps.of("running") {
		floor = max(floor, f)
	}

	rc := redis.NewClient(&redis.Options{Addr: rds.Addr()})
	defer rc.Close()
	if err := rc.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string { return env[k] }
	var out bytes.Buffer
	if err := run(ctx, []string{"rebuild", "--dry-run"}, getenv, &out, io.Discard); err != nil {
		t.Fatalf("rebuild --dry-run: %v\n%s", err, out.String())
	}
	// The running campaign's holder, its lock gone, may meet it first
	// and rebuild it itself.
	if n := summary(t, out.String(), "would rebuild"); n["would rebuild"]+n["skipped"] != 4 || n["would rebuild"] < 3 {
		t.Fatalf("rebuild --dry-run said:\n%s", out.String())
	}
	if _, err := rs.Load(ctx, key("done")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("--dry-run wrote: %v", err)
	}
	out.Reset()
	if err := run(ctx, []string{"rebuild", "--tenant", "acme"}, getenv, &out, io.Discard); err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out.String())
	}
	t.Logf("orchestrator rebuild:\n%s", out.String())
	if n := summary(t, out.String(), "rebuilt"); n["rebuilt"]+n["skipped"] != 4 || n["rebuilt"] < 3 || n["failed"] != 0 || n["raised on"] != n["rebuilt"] {
		t.Fatalf("rebuild said:\n%s", out.String())
	}
	for c, want := range before {
		got := idle(c, want.State)
		if got.Seq != want.Seq || got.Step != want.Step || got.Name != want.Name || string(got.Params) != string(want.Params) ||
			len(got.Workflow.Steps) != len(want.Workflow.Steps) || len(got.Outputs) != len(want.Outputs) || got.Fence < want.Fence {
			t.Errorf("%s rebuilt as %+v\nwas %+v", c, got, want)
		}
	}
	for _, id := range []string{"done-create", "pending-create", "rejected-create", "rejected-pause", "running-create"} {
		c, _, _ := strings.Cut(id, "-")
		if ok, err := rs.Applied(ctx, key(c), id); err != nil || !ok {
			t.Errorf("%s not in the rebuilt ledger of %s: %v", id, c, err)
		}
	}
	out.Reset()
	if err := run(ctx, []string{"rebuild"}, getenv, &out, io.Discard); err != nil || !strings.Contains(out.String(), "rebuilt 0, skipped 4") {
		t.Fatalf("second rebuild: %v\n%s", err, out.String())
	}

	// The running campaign goes on (its holder's lock went with Redis):
	// the render call is made again, with a fence above the history's.
	close(steps.release)
	t0 := time.Now()
	idle("running", fsm.Completed)
	t.Logf("the running campaign completed %s after the release; fences of its calls %v (history's highest before the loss %d)", time.Since(t0).Round(time.Millisecond), steps.of("running"), floor)
	fences := steps.of("running")
	for i, f := range fences[len(fences)-3:] { // schedule, dispatch and the render made again at least
		if f <= floor {
			t.Errorf("call %d after the loss with fence %d, not above %d (%v)", i, f, floor, fences)
		}
	}

	// An old command id sent again past the duplicate window: not applied.
	time.Sleep(window + 200*time.Millisecond)
	seq := before["pending"].Seq
	publish("pending", fsm.Create, "pending-create", `{"name":"pending"}`)
	publish("pending", fsm.Start, "pending-start", "")
	got := idle("pending", fsm.Completed)
	evs, err := events.History(ctx, js, "acme", "pending")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs[seq:] {
		if e.Type == fsm.EvRejected || e.Type == fsm.EvCreated {
			t.Errorf("after the rebuild: %s of command %s (the create sent again was applied)", e.Type, e.CommandID)
		}
	}
	for _, f := range steps.of("pending") {
		if f <= before["pending"].Fence {
			t.Errorf("a call of the rebuilt pending campaign with fence %d, not above the history's %d", f, before["pending"].Fence)
		}
	}
	if got.Seq != uint64(len(evs)) {
		t.Errorf("state at sequence %d, history at %d", got.Seq, len(evs))
	}
}

// summary reads the numbers of rebuild's last line: verb N, skipped N,
// expired N, failed N; fence floors raised on N.
func summary(t *testing.T, out, verb string) map[string]int {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	n := map[string]int{}
	for _, name := range []string{verb, "skipped", "expired", "failed", "raised on"} {
		i := strings.Index(last, name+" ")
		if i < 0 {
			t.Fatalf("no %q in the summary %q", name, last)
		}
		rest := last[i+len(name)+1:]
		end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		if end < 0 {
			end = len(rest)
		}
		v, err := strconv.Atoi(rest[:end])
		if err != nil {
			t.Fatalf("summary %q: %s: %v", last, name, err)
		}
		n[name] = v
	}
	return n
}

// TestRebuildRechecksAndFails: `orchestrator rebuild` reads each
// campaign's last event again right before installing it, and goes on from
// the longer history should it have grown since its first read (a holder
// from before the loss publishing late); a campaign whose campaign.created
// aged out of CAMPAIGN_EVENTS, or whose history holds an event the service
// did not write, is reported failed, naming why, and not installed.
func TestRebuildRechecksAndFails(t *testing.T) {
	srv := natstest.Start(t)
	_, js := natstest.Connect(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	specs, err := events.LoadSpecs(streams.FS)
	if err != nil {
		t.Fatal(err)
	}
	if err := specs.Apply(ctx, js, events.Overrides{}); err != nil {
		t.Fatal(err)
	}
	rds := redistest.New(t)
	st, err := store.NewRedis(ctx, rds.URL(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	wf := fsm.Workflow{Name: "w", Steps: []fsm.Step{{Name: "a", URL: "http://steps/a", Timeout: time.Second}}}
	now := time.Now().UTC()
	camps := map[string]*fsm.Campaign{}
	// apply applies cmd to the campaign and publishes its events, as a
	// worker would.
	apply := func(id string, cmd fsm.Command, tweak func(*nats.Msg)) {
		t.Helper()
		cmd.Tenant, cmd.Campaign = "acme", id
		now = now.Add(time.Millisecond)
		r, err := fsm.Apply(camps[id], cmd, now)
		if rej := (*fsm.RejectedError)(nil); errors.As(err, &rej) {
			err = nil
		}
		if err != nil {
			t.Fatalf("%s %s: %v", cmd.Verb, id, err)
		}
		var msgs []*nats.Msg
		for _, ev := range r.Events {
			ev.Fence = 3
			m, err := events.NewEventMsg("acme", id, ev, "")
			if err != nil {
				t.Fatal(err)
			}
			if tweak != nil {
				tweak(m)
			}
			msgs = append(msgs, m)
		}
		if _, err := events.PublishEvents(ctx, js, "acme", id, msgs); err != nil {
			t.Fatal(err)
		}
		c := r.Campaign
		camps[id] = &c
	}
	create := func(id string) {
		apply(id, fsm.Command{ID: id + "-create", Verb: fsm.Create, Workflow: &wf, Create: &fsm.CreatePayload{Name: id, Workflow: wf.Name}}, nil)
	}
	for _, id := range []string{"grows", "aged", "forged"} {
		create(id)
	}
	apply("aged", fsm.Command{ID: "aged-pause", Verb: fsm.Pause}, nil) // rejected: a second event
	apply("forged", fsm.Command{ID: "forged-start", Verb: fsm.Start}, func(m *nats.Msg) {
		m.Data = []byte(strings.Replace(string(m.Data), `"source":"campaign-orchestrator"`, `"source":"someone-else"`, 1))
	})
	stream, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(events.CampaignEvents("acme", "aged")))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.DeleteMsg(ctx, first.Sequence); err != nil { // aged out
		t.Fatal(err)
	}

	// Right before "grows" is installed, a holder from before the loss
	// publishes its start.
	var once sync.Once
	beforeInstall = func(k store.Key) {
		if k.Campaign == "grows" {
			once.Do(func() { apply("grows", fsm.Command{ID: "grows-start", Verb: fsm.Start}, nil) })
		}
	}
	t.Cleanup(func() { beforeInstall = nil })
	var out bytes.Buffer
	sum, err := rebuildAll(ctx, js, st, campaignFilter("acme", ""), rebuildOpts{}, &out)
	if err != nil {
		t.Fatalf("rebuildAll: %v\n%s", err, out.String())
	}
	t.Logf("rebuild said:\n%s", out.String())
	if sum.rebuilt != 1 || sum.failed != 2 {
		t.Errorf("rebuilt %d, failed %d; want 1 and 2", sum.rebuilt, sum.failed)
	}
	got, err := st.Load(ctx, store.Key{Tenant: "acme", Campaign: "grows"})
	if err != nil || got.State != fsm.Running || got.Seq != 2 {
		t.Errorf("grows installed as %s at %d (%v): want running at 2, the start published before the install", got.State, got.Seq, err)
	}
	for id, why := range map[string]string{"aged": "no longer in " + events.StreamEvents, "forged": "not written by the service"} {
		line := ""
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.HasPrefix(l, "failed acme/"+id+":") {
				line = l
			}
		}
		if !strings.Contains(line, why) {
			t.Errorf("%s: output line %q does not say %q", id, line, why)
		}
		if _, err := st.Load(ctx, store.Key{Tenant: "acme", Campaign: id}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s installed: %v", id, err)
		}
	}
}
