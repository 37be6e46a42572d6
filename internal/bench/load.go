package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// How campaigns are sent.
const (
	// ViaNATS publishes create commands (start=true) on
	// campaign.cmd.<tenant>.<campaign>.create with a JetStream publish.
	ViaNATS = "nats"
	// ViaHTTP posts them to the ingress: POST /api/v1/campaigns with
	// "start": true.
	ViaHTTP = "http"
)

// Config is one run of the load generator.
type Config struct {
	// Campaigns is how many campaigns to run (open loop with Duration: Rate ×
	// Duration instead).
	Campaigns int
	// Concurrency bounds the campaigns in flight in closed loop (0: all of
	// them at once).
	Concurrency int
	// Rate, when > 0, sends campaigns open loop at this many per second, each
	// at its intended time whatever the ones before it do; latencies are
	// measured from the intended time (no coordinated omission).
	Rate float64
	// Duration, in open loop, is how long to send (Campaigns = Rate × Duration).
	Duration time.Duration
	// Via is ViaNATS (default) or ViaHTTP.
	Via string
	// Tenant of the campaigns (default "bench-<random>", so that runs on a
	// shared server never meet: campaign ids are c<n>).
	Tenant string
	// Workflow of the campaigns (default standard).
	Workflow string
	// Senders is the number of goroutines sending (default 32).
	Senders int
	// Timeout bounds the wait for the campaigns to end (default 10 min).
	Timeout time.Duration
	// Settle is waited after the last campaign ended before the counters
	// are read, for the orchestrator's trailing work (acks, releases;
	// default 300 ms).
	Settle time.Duration
	// Progress, when set, gets a line every second.
	Progress io.Writer
	// OnAllInFlight, when set, is called once, when every campaign has been
	// sent and the fake has received a first step request of each: all of
	// them are in flight (e.g. to take a heap profile then).
	OnAllInFlight func()
	// AllInFlightCalls is the number of step requests the fake must have
	// received for all campaigns to count as in flight (default Campaigns;
	// less when the orchestrators' STEPS_IN_FLIGHT bounds the calls).
	AllInFlightCalls int
}

func (c Config) withDefaults() (Config, error) {
	if c.Via == "" {
		c.Via = ViaNATS
	}
	if c.Via != ViaNATS && c.Via != ViaHTTP {
		return c, fmt.Errorf("via %q: want %s or %s", c.Via, ViaNATS, ViaHTTP)
	}
	if c.Rate < 0 || c.Concurrency < 0 || c.Campaigns < 0 || c.Duration < 0 {
		return c, errors.New("negative campaigns, concurrency, rate or duration")
	}
	if c.Rate > 0 && c.Duration > 0 {
		c.Campaigns = int(math.Ceil(c.Rate * c.Duration.Seconds()))
	}
	if c.Campaigns <= 0 {
		return c, errors.New("no campaigns to run")
	}
	if c.Concurrency == 0 || c.Concurrency > c.Campaigns {
		c.Concurrency = c.Campaigns
	}
	if c.Tenant == "" {
		c.Tenant = "bench-" + randomHex(4)
	}
	if !events.ValidToken(c.Tenant) {
		return c, fmt.Errorf("tenant %q: not a valid token (%s)", c.Tenant, events.TokenRE)
	}
	if c.Workflow == "" {
		c.Workflow = fsm.DefaultWorkflow
	}
	if c.Senders <= 0 {
		c.Senders = 32
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Minute
	}
	if c.AllInFlightCalls <= 0 || c.AllInFlightCalls > c.Campaigns {
		c.AllInFlightCalls = c.Campaigns
	}
	if c.Settle <= 0 {
		c.Settle = 300 * time.Millisecond
	}
	return c, nil
}

// Target is the running service under load.
type Target struct {
	// NC and JS are the load generator's own connection to the service's
	// NATS server.
	NC *nats.Conn
	JS jetstream.JetStream
	// HTTPURL is the ingress base URL (ViaHTTP), e.g. http://127.0.0.1:8000.
	HTTPURL string
	// Fake is the step service the orchestrator calls (its STEPS_BASE_URL).
	Fake *Fake
	// Meters are read before and after the run.
	Meters Meters
}

// Service is what a run measured.
type Service struct {
	Tenant      string  `json:"tenant"`
	Mode        string  `json:"mode"` // "closed" or "open"
	Concurrency int     `json:"concurrency,omitempty"`
	Rate        float64 `json:"rate,omitempty"`
	Via         string  `json:"via"`
	// Campaigns sent, accepted (PubAck or 202), failed to send, ended by
	// campaign.completed, by campaign.failed (or cancelled), not ended.
	Campaigns  int `json:"campaigns"`
	Accepted   int `json:"accepted"`
	SendErrors int `json:"send_errors"`
	Completed  int `json:"completed"`
	Failed     int `json:"failed"`
	Unfinished int `json:"unfinished"`
	// ElapsedS runs from the first send to the last campaign's end.
	ElapsedS      float64 `json:"elapsed_s"`
	CampaignsPerS float64 `json:"campaigns_per_s"`
	// Commands are the distinct commandids of the run's events (the creates
	// and every advance).
	Commands            int     `json:"commands"`
	CommandsPerCampaign float64 `json:"commands_per_campaign"`
	CommandsPerS        float64 `json:"commands_per_s"`
	// CommandsStored is the growth of CAMPAIGN_COMMANDS's last sequence
	// (every message stored there, whoever sent it; nil: not read).
	CommandsStored *uint64 `json:"commands_stored,omitempty"`
	// Events are distinct events (by campaign and sequence); Redelivered
	// counts the deliveries of an event already seen.
	Events            int     `json:"events"`
	EventsPerCampaign float64 `json:"events_per_campaign"`
	EventsPerS        float64 `json:"events_per_s"`
	Redelivered       int     `json:"events_seen_twice"`
	// Send is intended send time → PubAck or 202.
	Send Dist `json:"send_ms"`
	// Latency is intended send time → campaign.completed seen.
	Latency Dist `json:"create_to_completed_ms"`
	// StepDue is the per-step overhead (a): the `time` of the event before
	// the step (campaign.started or the previous step.succeeded) → the fake
	// received the request. Event times have millisecond resolution (they
	// are truncated: this reads up to 1 ms high).
	StepDue Dist `json:"step_due_to_request_ms"`
	// StepDueSeen is (a) from when the load generator saw that event.
	StepDueSeen Dist `json:"step_due_seen_to_request_ms"`
	// StepDone is the per-step overhead (b): the fake wrote its answer →
	// the load generator saw step.succeeded.
	StepDone Dist `json:"step_answer_to_succeeded_seen_ms"`
	// StepDoneTime is (b) to the step.succeeded event's `time` (millisecond
	// resolution, truncated: up to 1 ms low).
	StepDoneTime Dist `json:"step_answer_to_succeeded_time_ms"`
	// StepCalls is the number of requests the fake served.
	StepCalls int `json:"step_calls"`
	// Resources (CPU seconds, Redis and JetStream API requests) and the CPU
	// per campaign in milliseconds.
	Resources        Resources `json:"resources"`
	CPUPerCampaignMS CPU       `json:"cpu_per_campaign_ms"`
	// PeakRSSMiB is this process's VmHWM during the run (reset at its start
	// when the kernel allows: PeakRSSReset).
	PeakRSSMiB   float64 `json:"peak_rss_mib"`
	PeakRSSReset bool    `json:"peak_rss_reset"`
	SelfIncludes string  `json:"self_includes,omitempty"`
	// Orchestrators are the `orchestrator serve` child processes (when the
	// orchestrator does not run in this process), each measured apart.
	Orchestrators []ProcUse `json:"orchestrators,omitempty"`
	// OrchestratorsPeakRSSMiB is the sum of their VmHWM;
	// OrchestratorsRSSMaxMiB the largest sum of their VmRSS sampled every
	// 250 ms (their peak together).
	OrchestratorsPeakRSSMiB float64 `json:"orchestrators_peak_rss_mib,omitempty"`
	OrchestratorsRSSMaxMiB  float64 `json:"orchestrators_rss_max_mib,omitempty"`
	// MaxInFlight is the most campaigns sent and not ended at once (sampled
	// every 250 ms) and AllInFlight whether every campaign was in flight at
	// once (all sent, and Config.AllInFlightCalls step requests received,
	// before any ended).
	MaxInFlight int  `json:"max_in_flight"`
	AllInFlight bool `json:"all_in_flight"`
	// NotMeasured lists what could not be read, and why.
	NotMeasured []string `json:"not_measured,omitempty"`
}

// ProcUse is what one child process used during a run.
type ProcUse struct {
	PID              int     `json:"pid"`
	CPUS             float64 `json:"cpu_s"`
	CPUPerCampaignMS float64 `json:"cpu_per_campaign_ms"`
	// PeakRSSMiB is its VmHWM during the run (reset at its start when the
	// kernel allows: PeakRSSReset); RSSEndMiB its VmRSS at the end.
	PeakRSSMiB   float64 `json:"peak_rss_mib"`
	RSSEndMiB    float64 `json:"rss_end_mib"`
	PeakRSSReset bool    `json:"peak_rss_reset"`
}

// Run drives cfg.Campaigns campaigns through the service and measures them.
// It returns the figures even when some campaigns did not end (Unfinished),
// with an error saying so.
func Run(ctx context.Context, cfg Config, t Target) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if t.NC == nil || t.JS == nil || t.Fake == nil {
		return nil, errors.New("bench: target needs NC, JS and Fake")
	}
	if cfg.Via == ViaHTTP && t.HTTPURL == "" {
		return nil, errors.New("bench: --via http needs the ingress URL")
	}
	tr := newTracker(cfg)
	sub, err := t.NC.Subscribe(events.CampaignEvents(cfg.Tenant, "*"), tr.onEvent)
	if err != nil {
		return nil, fmt.Errorf("subscribe to events: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)
	if err := t.NC.FlushTimeout(5 * time.Second); err != nil {
		return nil, err
	}
	mt, err := newMeter(t.Meters)
	if err != nil {
		return nil, err
	}
	defer mt.close()
	send, err := newSender(cfg, t)
	if err != nil {
		return nil, err
	}

	storedBefore, storedErr := lastSeq(ctx, t.JS)
	rssReset := resetPeakRSS()
	childReset := make([]bool, len(t.Meters.Orchestrators))
	for i, pid := range t.Meters.Orchestrators {
		childReset[i] = resetProcPeakRSS(strconv.Itoa(pid))
	}
	before := mt.snapshot(ctx)
	t0 := time.Now()
	tr.start(t0)

	rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	stopProgress := tr.progress(cfg.Progress)
	stopSampler := tr.sample(cfg, t)

	jobs := make(chan int, cfg.Campaigns)
	var wg sync.WaitGroup
	for range cfg.Senders {
		wg.Go(func() {
			for i := range jobs {
				err := send(rctx, i)
				tr.sent(i, err)
			}
		})
	}
	// The dispatcher: closed loop, a campaign leaves when one ends; open
	// loop, each at its intended time.
	dispatched := 0
dispatch:
	for i := range cfg.Campaigns {
		if cfg.Rate > 0 {
			at := t0.Add(time.Duration(float64(i) / cfg.Rate * float64(time.Second)))
			if d := time.Until(at); d > 0 {
				select {
				case <-time.After(d):
				case <-rctx.Done():
					break dispatch
				}
			}
			tr.intend(i, at)
		} else {
			select {
			case <-tr.slots(): // a slot: fewer than Concurrency in flight
			case <-rctx.Done():
				break dispatch
			}
			tr.intend(i, time.Now())
		}
		jobs <- i
		dispatched++
	}
	close(jobs)
	wg.Wait()
	tr.waitAll(rctx, dispatched)
	end := tr.lastEnd()
	if end.IsZero() {
		end = time.Now()
	}
	stopProgress()
	maxRSS, maxInFlight, allInFlight := stopSampler()
	select {
	case <-time.After(cfg.Settle):
	case <-ctx.Done():
	}
	after := mt.snapshot(context.WithoutCancel(ctx))
	peak, _, rssErr := PeakRSS()
	storedAfter, storedErr2 := lastSeq(context.WithoutCancel(ctx), t.JS)

	s := tr.result(end.Sub(t0), t.Fake)
	s.Resources = mt.diff(before, after, s.Commands)
	if s.Completed+s.Failed > 0 {
		s.CPUPerCampaignMS = s.Resources.CPU.scaled(1000 / float64(s.Completed+s.Failed))
	}
	s.PeakRSSMiB, s.PeakRSSReset = float64(peak)/(1<<20), rssReset
	s.SelfIncludes = t.Meters.SelfIncludes
	s.MaxInFlight, s.AllInFlight = maxInFlight, allInFlight
	if len(t.Meters.Orchestrators) > 0 {
		s.OrchestratorsRSSMaxMiB = float64(maxRSS) / (1 << 20)
		ended := s.Completed + s.Failed
		for i, pid := range t.Meters.Orchestrators {
			u := ProcUse{PID: pid, PeakRSSReset: childReset[i]}
			if i < len(s.Resources.CPU.Orchestrators) {
				u.CPUS = s.Resources.CPU.Orchestrators[i]
				if ended > 0 {
					u.CPUPerCampaignMS = u.CPUS * 1000 / float64(ended)
				}
			}
			peak, now, err := ProcPeakRSS(pid)
			if err != nil {
				mt.note(fmt.Sprintf("orchestrator %d RSS", pid), err)
			}
			u.PeakRSSMiB, u.RSSEndMiB = float64(peak)/(1<<20), float64(now)/(1<<20)
			s.OrchestratorsPeakRSSMiB += u.PeakRSSMiB
			s.Orchestrators = append(s.Orchestrators, u)
		}
	}
	if storedErr == nil && storedErr2 == nil {
		d := storedAfter - storedBefore
		s.CommandsStored = &d
	} else {
		mt.note("CAMPAIGN_COMMANDS sequence", errors.Join(storedErr, storedErr2))
	}
	if rssErr != nil {
		mt.note("peak RSS", rssErr)
	}
	if t.Meters.Redis == nil {
		s.NotMeasured = append(s.NotMeasured, "Redis commands and CPU: no Redis in this run (in-process store)")
	}
	if t.Meters.JSAPI == nil {
		s.NotMeasured = append(s.NotMeasured, "JetStream API total: no server counter available")
	}
	s.NotMeasured = append(s.NotMeasured, mt.errs...)
	switch {
	case ctx.Err() != nil:
		return s, ctx.Err()
	case s.Unfinished > 0 || s.SendErrors > 0:
		return s, fmt.Errorf("bench: %d of %d campaigns did not end within %s (%d could not be sent)", s.Unfinished+s.SendErrors, s.Campaigns, cfg.Timeout, s.SendErrors)
	}
	return s, nil
}

// lastSeq is CAMPAIGN_COMMANDS's last sequence (one STREAM.INFO request:
// called outside the measured window).
func lastSeq(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.StreamCommands)
	if err != nil {
		return 0, err
	}
	return st.CachedInfo().State.LastSeq, nil
}

// campaignID is the id of campaign i of a run.
func campaignID(i int) string { return "c" + strconv.Itoa(i) }

// newSender returns the function that sends campaign i's create-and-start.
func newSender(cfg Config, t Target) (func(context.Context, int) error, error) {
	payload, err := json.Marshal(struct {
		Name     string `json:"name"`
		Workflow string `json:"workflow"`
		Start    bool   `json:"start"`
	}{"bench", cfg.Workflow, true})
	if err != nil {
		return nil, err
	}
	if cfg.Via == ViaNATS {
		return func(ctx context.Context, i int) error {
			msg := events.NewCommandMsg(events.CommandEnvelope{
				ID: ulid.Make().String(), Type: string(fsm.Create), TenantID: cfg.Tenant, CampaignID: campaignID(i), Payload: payload,
			}, "")
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err := t.JS.PublishMsg(pctx, msg)
			return err
		}, nil
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: cfg.Senders, MaxIdleConnsPerHost: cfg.Senders, IdleConnTimeout: time.Minute,
	}}
	url := strings.TrimRight(t.HTTPURL, "/") + "/api/v1/campaigns"
	return func(ctx context.Context, i int) error {
		body, _ := json.Marshal(struct {
			CampaignID string `json:"campaign_id"`
			Name       string `json:"name"`
			Workflow   string `json:"workflow"`
			Start      bool   `json:"start"`
		}{campaignID(i), "bench", cfg.Workflow, true}) // plain struct: cannot fail
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Tenant-ID", cfg.Tenant)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("POST %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
		}
		return nil
	}, nil
}

// campaignNumber is n for a campaign id c<n>.
func campaignNumber(id string) (int, bool) {
	digits, ok := strings.CutPrefix(id, "c")
	if !ok || digits == "" || len(digits) > 9 || digits[0] == '+' || digits[0] == '-' {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	return n, err == nil
}

// tracker follows every campaign of a run from its intended send time to
// its end, from the events seen on campaign.evt.<tenant>.>. It keeps about
// 200 bytes per campaign (no event is kept), so that the load generator
// barely shows in the process's RSS.
type tracker struct {
	cfg  Config
	free chan struct{} // closed loop: one token per campaign that may start
	seed maphash.Seed

	mu       sync.Mutex
	t0       time.Time
	camps    []campaign
	steps    []string       // the workflow's steps, from the first campaign.created
	stepIdx  map[string]int // their indices
	commands int            // distinct commandids, over all campaigns
	events   int
	dups     int
	ended    int // campaigns ended (completed, failed, cancelled) or not sent
	sentOK   int
	sendErrs int
	firstErr error
	last     time.Time // the last end
	endedCh  chan struct{}

	dispatched atomic.Int64
}

// Outcomes of a campaign.
const (
	outcomeNone uint8 = iota
	outcomeCompleted
	outcomeFailed // failed or cancelled
	outcomeNotSent
)

type campaign struct {
	intended int64 // Unix ns
	end      int64 // when its terminal event was seen (or its send failed)
	send     time.Duration
	outcome  uint8
	seen     uint64              // bit n: the event of sequence n (< 64) was seen
	seenMore map[uint64]struct{} // sequences from 64
	cmds     []uint64            // hashes of its distinct commandids
	// The times (`time`, seen) of campaign.started (or the latest resumed or
	// retried) and of each step's step.succeeded, by step index.
	startAt, startSeen int64
	succ               []stepTimes
}

type stepTimes struct{ at, seen int64 }

func newTracker(cfg Config) *tracker {
	t := &tracker{cfg: cfg, camps: make([]campaign, cfg.Campaigns), stepIdx: map[string]int{}, seed: maphash.MakeSeed(),
		free: make(chan struct{}, cfg.Campaigns), endedCh: make(chan struct{}, 1)}
	for range cfg.Concurrency {
		t.free <- struct{}{}
	}
	return t
}

func (t *tracker) start(t0 time.Time) {
	t.mu.Lock()
	t.t0 = t0
	t.mu.Unlock()
}

func (t *tracker) slots() <-chan struct{} { return t.free }

func (t *tracker) intend(i int, at time.Time) {
	t.mu.Lock()
	t.camps[i].intended = at.UnixNano()
	t.mu.Unlock()
	t.dispatched.Add(1)
}

func (t *tracker) sent(i int, err error) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	c := &t.camps[i]
	c.send = time.Duration(now.UnixNano() - c.intended)
	if err != nil {
		t.sendErrs++
		if t.firstErr == nil {
			t.firstErr = err
			fmt.Fprintf(orDiscard(t.cfg.Progress), "bench: sending campaign %s: %v\n", campaignID(i), err)
		}
		t.endLocked(c, outcomeNotSent, now)
		return
	}
	t.sentOK++
}

// endLocked records campaign c's end (once).
func (t *tracker) endLocked(c *campaign, outcome uint8, now time.Time) {
	if c.outcome != outcomeNone {
		return
	}
	c.outcome, c.end = outcome, now.UnixNano()
	t.ended++
	if outcome != outcomeNotSent && now.After(t.last) {
		t.last = now
	}
	select { // closed loop: another campaign may start (never full there)
	case t.free <- struct{}{}:
	default:
	}
	select {
	case t.endedCh <- struct{}{}:
	default:
	}
}

// event is the part of a CloudEvent the tracker reads.
type event struct {
	Type       string          `json:"type"`
	Time       time.Time       `json:"time"`
	CampaignID string          `json:"campaignid"`
	Sequence   string          `json:"sequence"`
	CommandID  string          `json:"commandid"`
	Data       json.RawMessage `json:"data"`
}

func (t *tracker) onEvent(m *nats.Msg) {
	seen := time.Now()
	var e event
	if json.Unmarshal(m.Data, &e) != nil {
		return
	}
	i, ok := campaignNumber(e.CampaignID)
	if !ok || i >= len(t.camps) {
		return
	}
	seq, err := strconv.ParseUint(e.Sequence, 10, 64)
	if err != nil {
		return
	}
	var d struct {
		Step  string   `json:"step"`
		Steps []string `json:"steps"`
	}
	if e.Type == fsm.EvStepSucceeded || e.Type == fsm.EvCreated {
		_ = json.Unmarshal(e.Data, &d)
	}
	var cmd uint64
	if e.CommandID != "" {
		cmd = maphash.String(t.seed, e.CommandID)
	}
	at, now := e.Time.UnixNano(), seen.UnixNano()

	t.mu.Lock()
	defer t.mu.Unlock()
	c := &t.camps[i]
	if seq < 64 {
		if c.seen&(1<<seq) != 0 {
			t.dups++
			return
		}
		c.seen |= 1 << seq
	} else {
		if _, dup := c.seenMore[seq]; dup {
			t.dups++
			return
		}
		if c.seenMore == nil {
			c.seenMore = map[uint64]struct{}{}
		}
		c.seenMore[seq] = struct{}{}
	}
	t.events++
	if cmd != 0 && !slices.Contains(c.cmds, cmd) {
		c.cmds = append(c.cmds, cmd)
		t.commands++
	}
	switch e.Type {
	case fsm.EvCreated:
		if t.steps == nil && len(d.Steps) > 0 {
			t.steps = d.Steps
			for k, s := range d.Steps {
				t.stepIdx[s] = k
			}
		}
	case fsm.EvStarted, fsm.EvResumed, fsm.EvRetried:
		if at > c.startAt {
			c.startAt, c.startSeen = at, now
		}
	case fsm.EvStepSucceeded:
		if k, ok := t.stepIdx[d.Step]; ok {
			if c.succ == nil {
				c.succ = make([]stepTimes, len(t.steps))
			}
			if k < len(c.succ) {
				c.succ[k] = stepTimes{at: at, seen: now}
			}
		}
	case fsm.EvCompleted:
		t.endLocked(c, outcomeCompleted, seen)
	case fsm.EvFailed, fsm.EvCancelled:
		t.endLocked(c, outcomeFailed, seen)
	}
}

// waitAll waits until the n dispatched campaigns ended or ctx ends.
func (t *tracker) waitAll(ctx context.Context, n int) {
	for {
		t.mu.Lock()
		done := t.ended >= n
		t.mu.Unlock()
		if done {
			return
		}
		select {
		case <-t.endedCh:
		case <-ctx.Done():
			return
		}
	}
}

func (t *tracker) lastEnd() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last
}

// progress prints a line every second to w until the returned function is
// called.
func (t *tracker) progress(w io.Writer) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		prev, prevAt := 0, time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				t.mu.Lock()
				ended, errs, t0 := t.ended, t.sendErrs, t.t0
				t.mu.Unlock()
				inflight := int(t.dispatched.Load()) - ended
				rate := float64(ended-prev) / now.Sub(prevAt).Seconds()
				prev, prevAt = ended, now
				line := fmt.Sprintf("bench: %5.0fs  %d/%d done  %.1f campaigns/s  %d in flight", now.Sub(t0).Seconds(), ended, t.cfg.Campaigns, rate, inflight)
				if errs > 0 {
					line += fmt.Sprintf("  %d send errors", errs)
				}
				fmt.Fprintln(w, line)
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// sample reads, every 250 ms until the returned function is called, the
// campaigns in flight and the children's RSS; when every campaign has been
// sent and had its first step requested, it calls cfg.OnAllInFlight (once).
// The function returns the largest sum of the children's VmRSS (bytes), the
// most campaigns in flight, and whether all of them were at once.
func (t *tracker) sample(cfg Config, tg Target) (stop func() (maxRSS uint64, maxInFlight int, all bool)) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var maxRSS uint64
	var maxIn int
	var all bool
	wg.Go(func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			var sum uint64
			for _, pid := range tg.Meters.Orchestrators {
				if _, now, err := ProcPeakRSS(pid); err == nil {
					sum += now
				}
			}
			maxRSS = max(maxRSS, sum)
			t.mu.Lock()
			ended := t.ended
			t.mu.Unlock()
			dispatched := int(t.dispatched.Load())
			maxIn = max(maxIn, dispatched-ended)
			if !all && dispatched == cfg.Campaigns && ended == 0 && tg.Fake.Calls() >= cfg.AllInFlightCalls {
				all = true
				if cfg.OnAllInFlight != nil {
					cfg.OnAllInFlight()
				}
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	return func() (uint64, int, bool) { close(done); wg.Wait(); return maxRSS, maxIn, all }
}

// result computes the figures.
func (t *tracker) result(elapsed time.Duration, fake *Fake) *Service {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &Service{Tenant: t.cfg.Tenant, Via: t.cfg.Via, Campaigns: int(t.dispatched.Load()),
		Accepted: t.sentOK, SendErrors: t.sendErrs, Commands: t.commands, Events: t.events, Redelivered: t.dups,
		ElapsedS: elapsed.Seconds(), StepCalls: fake.Calls()}
	if t.cfg.Rate > 0 {
		s.Mode, s.Rate = "open", t.cfg.Rate
	} else {
		s.Mode, s.Concurrency = "closed", t.cfg.Concurrency
	}
	send, lat := newRecorder(), newRecorder()
	due, dueSeen, done, doneTime := newRecorder(), newRecorder(), newRecorder(), newRecorder()
	ns := func(d int64) time.Duration { return time.Duration(d) }
	for i := range t.camps[:s.Campaigns] {
		c := &t.camps[i]
		switch c.outcome {
		case outcomeNotSent:
			continue
		case outcomeCompleted:
			s.Completed++
			lat.record(ns(c.end - c.intended))
		case outcomeNone:
			s.Unfinished++
		default:
			s.Failed++
		}
		send.record(c.send)
		for k, step := range t.steps {
			r, ok := fake.record(t.cfg.Tenant, i, step)
			if !ok {
				continue
			}
			dueAt, dueSeenAt := c.startAt, c.startSeen
			if k > 0 {
				dueAt, dueSeenAt = 0, 0
				if k-1 < len(c.succ) {
					dueAt, dueSeenAt = c.succ[k-1].at, c.succ[k-1].seen
				}
			}
			if dueAt != 0 {
				due.record(ns(r.received - dueAt))
				dueSeen.record(ns(r.received - dueSeenAt))
			}
			if k < len(c.succ) && c.succ[k].seen != 0 && r.answered != 0 {
				done.record(ns(c.succ[k].seen - r.answered))
				doneTime.record(ns(c.succ[k].at - r.answered))
			}
		}
	}
	s.Send, s.Latency = send.dist(), lat.dist()
	s.StepDue, s.StepDueSeen, s.StepDone, s.StepDoneTime = due.dist(), dueSeen.dist(), done.dist(), doneTime.dist()
	if ended := s.Completed + s.Failed; ended > 0 {
		s.CommandsPerCampaign = float64(s.Commands) / float64(ended)
		s.EventsPerCampaign = float64(s.Events) / float64(ended)
	}
	if sec := elapsed.Seconds(); sec > 0 {
		s.CampaignsPerS = float64(s.Completed+s.Failed) / sec
		s.CommandsPerS = float64(s.Commands) / sec
		s.EventsPerS = float64(s.Events) / sec
	}
	return s
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
