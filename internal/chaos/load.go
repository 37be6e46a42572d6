//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

// Outcomes of sending a command.
const (
	Stored  = "stored"  // 202, or a PubAck: the command is in CAMPAIGN_COMMANDS
	Refused = "refused" // a definite answer that it was not taken (4xx, a colliding id)
	Unknown = "unknown" // no definite answer before the load gave up
)

// Kinds of invalid commands the load sends on purpose (each must end in the
// DLQ exactly once).
const (
	InvalidBadJSON  = "bad-json"        // a body that is not JSON, on an existing campaign's subject
	InvalidMismatch = "tenant-mismatch" // body tenant_id differs from the subject's tenant (an existing campaign)
	InvalidGhost    = "ghost"           // a valid start for a campaign that does not exist ("unknown campaign")
	// InvalidPoison: a pause of an existing campaign whose type holds
	// 400,000 bytes of 0xff, which a reason quoting it without a bound
	// makes too large for an event or a NATS message (review defect 1).
	InvalidPoison = "poison"
	// InvalidSquat: junk published by another tenant, on its own subject,
	// under the command id the ingress would derive from a valid HTTP
	// command's Idempotency-Key and body if that derivation were
	// predictable (review defect 4); sent just before that HTTP command.
	InvalidSquat = "squat"
)

// poisonBytes is the size of the poison command's type.
const poisonBytes = 400_000

// invalidKinds are the kinds the load cycles through (InvalidSquat aside:
// it goes with HTTP commands, LoadConfig.Squats).
var invalidKinds = []string{InvalidBadJSON, InvalidMismatch, InvalidGhost, InvalidPoison}

// CmdRecord is one command the load sent, and what it was told.
type CmdRecord struct {
	N        int    `json:"n"` // order of sending, over the whole load
	ID       string `json:"id"`
	Verb     string `json:"verb"`
	Tenant   string `json:"tenant"`
	Campaign string `json:"campaign"`
	Via      string `json:"via"`               // "http" or "nats"
	Start    bool   `json:"start,omitempty"`   // create with "start": true
	Invalid  string `json:"invalid,omitempty"` // one of the Invalid* kinds
	Outcome  string `json:"outcome"`
	Detail   string `json:"detail,omitempty"`
	// Order is the position among the campaign's own commands (0: the
	// create), which one goroutine sends one after the other, each only
	// after the previous one was stored: the stream's order. -1 for the
	// invalid commands, sent from elsewhere.
	Order     int       `json:"order"`
	StreamSeq uint64    `json:"stream_seq,omitempty"` // from the PubAck (NATS only)
	Attempts  int       `json:"attempts"`
	Sent      time.Time `json:"sent"`
	Done      time.Time `json:"done"`
}

// LoadConfig sizes the load.
type LoadConfig struct {
	Seed      uint64
	Campaigns int
	Tenants   []string
	// Spread is the time over which the creates are spread.
	Spread time.Duration
	// MaxVerbs is the most random verbs sent to one campaign after its create.
	MaxVerbs int
	// MaxGap is the longest pause between two commands of one campaign.
	MaxGap time.Duration
	// HTTPShare is the share of commands sent over HTTP (the rest over NATS).
	HTTPShare float64
	// Invalid is how many invalid commands to send (cycling through the kinds).
	Invalid int
	// HTTPDeadline bounds the retries of one HTTP command (a killed ingress
	// leaves its Idempotency-Key reserved for about 75 s).
	HTTPDeadline time.Duration
	// PublishAttempts bounds the publishes of one NATS command (default 10;
	// more while a stream has no leader for seconds).
	PublishAttempts int
	// Squats is how many HTTP commands are preceded by another tenant's
	// junk under the id an unkeyed derivation would give them
	// (InvalidSquat).
	Squats int
}

// Load sends the commands and records them.
type Load struct {
	cfg    LoadConfig
	js     jetstream.JetStream
	addrs  func() []string
	client *http.Client
	logf   func(format string, args ...any)

	mu       sync.Mutex
	cmds     []*CmdRecord
	existing []CampaignRef // campaigns whose create was stored
	squats   int           // InvalidSquat commands sent
}

// CampaignRef names a campaign.
type CampaignRef struct{ Tenant, ID string }

func (c CampaignRef) String() string { return c.Tenant + "/" + c.ID }

// NewLoad prepares a load that publishes on js and sends HTTP requests to
// one of addrs() (the live instances, asked again for every attempt).
func NewLoad(cfg LoadConfig, js jetstream.JetStream, addrs func() []string, logf func(string, ...any)) *Load {
	if cfg.HTTPDeadline == 0 {
		cfg.HTTPDeadline = 150 * time.Second
	}
	if cfg.PublishAttempts == 0 {
		cfg.PublishAttempts = 10
	}
	return &Load{cfg: cfg, js: js, addrs: addrs, logf: logf, client: &http.Client{Timeout: 20 * time.Second}}
}

// Run sends the whole load and returns when every command has its outcome.
func (l *Load) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range l.cfg.Campaigns {
		wg.Go(func() { l.campaign(ctx, i) })
	}
	wg.Go(func() { l.invalids(ctx) })
	wg.Wait()
}

// Commands returns a copy of the records, in order of sending.
func (l *Load) Commands() []CmdRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]CmdRecord, len(l.cmds))
	for i, c := range l.cmds {
		out[i] = *c
	}
	return out
}

// newRecord registers a command about to be sent.
func (l *Load) newRecord(r CmdRecord) *CmdRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	r.N = len(l.cmds) + 1
	r.Sent = time.Now()
	p := &r
	l.cmds = append(l.cmds, p)
	return p
}

func (l *Load) finish(r *CmdRecord, outcome, detail string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r.Outcome, r.Detail, r.Done = outcome, detail, time.Now()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func randDur(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}

// campaign sends one campaign's commands, one after the other.
func (l *Load) campaign(ctx context.Context, i int) {
	rng := rand.New(rand.NewPCG(l.cfg.Seed, uint64(i)+1))
	tenant := l.cfg.Tenants[i%len(l.cfg.Tenants)]
	id := fmt.Sprintf("cmp-%03d", i)
	if l.cfg.Campaigns > 1 {
		sleepCtx(ctx, l.cfg.Spread*time.Duration(i)/time.Duration(l.cfg.Campaigns-1)+randDur(rng, 0, 200*time.Millisecond))
	}
	start := rng.Float64() < 0.8
	rec := l.send(ctx, rng, tenant, id, "create", start, 0, "")
	if rec.Outcome != Stored {
		l.logf("load: create of %s/%s not stored (%s: %s): no further commands for it", tenant, id, rec.Outcome, rec.Detail)
		return
	}
	l.mu.Lock()
	l.existing = append(l.existing, CampaignRef{tenant, id})
	l.mu.Unlock()
	order := 1
	if !start {
		sleepCtx(ctx, randDur(rng, 0, l.cfg.MaxGap))
		l.send(ctx, rng, tenant, id, "start", false, order, "")
		order++
	}
	last := ""
	for j := range rng.IntN(l.cfg.MaxVerbs + 1) {
		gap := randDur(rng, 10*time.Millisecond, l.cfg.MaxGap)
		if j == 0 {
			gap = randDur(rng, 0, 150*time.Millisecond) // while the steps run
		}
		sleepCtx(ctx, gap)
		if ctx.Err() != nil {
			return
		}
		last = pickVerb(rng, last)
		l.send(ctx, rng, tenant, id, last, false, order, "")
		order++
	}
}

// pickVerb chooses the next random verb; a pause is mostly followed by a
// resume.
func pickVerb(rng *rand.Rand, last string) string {
	if last == "pause" && rng.Float64() < 0.7 {
		return "resume"
	}
	x := rng.IntN(100)
	switch {
	case x < 32:
		return "pause"
	case x < 52:
		return "resume"
	case x < 60:
		return "cancel"
	case x < 90:
		return "retry"
	default:
		return "start"
	}
}

// send sends one valid command over HTTP or NATS (chosen at random).
// via is "http", "nats" or "" (chosen at random).
func (l *Load) send(ctx context.Context, rng *rand.Rand, tenant, id, verb string, start bool, order int, via string) *CmdRecord {
	if via == "" {
		via = "nats"
		if rng.Float64() < l.cfg.HTTPShare {
			via = "http"
		}
	}
	rec := l.newRecord(CmdRecord{Verb: verb, Tenant: tenant, Campaign: id, Via: via, Start: start, Order: order})
	if via == "http" {
		key := fmt.Sprintf("chaos-%s-%d-%016x", id, order, rng.Uint64())
		var path string
		var body []byte
		if verb == "create" {
			path = "/api/v1/campaigns"
			body, _ = json.Marshal(map[string]any{"campaign_id": id, "name": "chaos " + id, "start": start})
		} else {
			path = "/api/v1/campaigns/" + id + "/" + verb
		}
		l.squat(ctx, rng, tenant, key, path, body)
		outcome, detail, cmdID := l.http(ctx, rec, tenant, key, path, body)
		l.mu.Lock()
		rec.ID = cmdID
		l.mu.Unlock()
		l.finish(rec, outcome, detail)
		return rec
	}
	env := events.CommandEnvelope{
		ID:   fmt.Sprintf("n-%s-%s-%d-%016x", tenant, id, order, rng.Uint64()),
		Type: verb, TenantID: tenant, CampaignID: id,
	}
	now := time.Now().UTC()
	env.IssuedAt = &now
	if verb == "create" {
		env.Payload, _ = json.Marshal(map[string]any{"name": "chaos " + id, "start": start})
	}
	l.mu.Lock()
	rec.ID = env.ID
	l.mu.Unlock()
	outcome, detail := l.publish(ctx, rec, events.NewCommandMsg(env, ""))
	l.finish(rec, outcome, detail)
	return rec
}

// squat, for the first LoadConfig.Squats HTTP commands, has another
// tenant publish junk on its own subject under the id that the command
// (Idempotency-Key key, POST path with body, for tenant) would get if the
// ingress derived it without its secret: an attacker who knows the
// derivation and guesses the key and body, but not the secret. The junk
// must be dead-lettered (bad JSON) and the command applied all the same.
func (l *Load) squat(ctx context.Context, rng *rand.Rand, tenant, key, path string, body []byte) {
	l.mu.Lock()
	n := l.squats
	if n >= l.cfg.Squats {
		l.mu.Unlock()
		return
	}
	l.squats++
	l.mu.Unlock()
	attacker := "intruder"
	for _, t := range l.cfg.Tenants {
		if t != tenant {
			attacker = t
			break
		}
	}
	id := predictedCommandID(tenant, key, path, body)
	target := CampaignRef{attacker, fmt.Sprintf("squat-%d-%04x", n, rng.Uint32()&0xffff)}
	msg := nats.NewMsg(events.CommandSubject(target.Tenant, target.ID, "pause"))
	msg.Header.Set(jetstream.MsgIDHeader, id)
	msg.Data = []byte("junk")
	rec := l.newRecord(CmdRecord{ID: id, Verb: "pause", Tenant: target.Tenant, Campaign: target.ID, Via: "nats", Invalid: InvalidSquat, Order: -1})
	outcome, detail := l.publish(ctx, rec, msg)
	l.finish(rec, outcome, detail)
}

// predictedCommandID is the command id the ingress derives for a POST to
// path with body under Idempotency-Key key (internal/httpapi deriveIDs),
// computed as an attacker would without the server's secret: with an
// empty key. Only an ingress whose secret is empty (or a derivation that
// ignores it) gives this id.
func predictedCommandID(tenant, key, path string, body []byte) string {
	sum := sha256.Sum256(body)
	m := hmac.New(sha256.New, nil)
	m.Write([]byte("campaign-orchestrator/idempotency\x00" + tenant + "\x00" + key + "\x00" + "POST " + path + " " + hex.EncodeToString(sum[:])))
	return "idem-" + hex.EncodeToString(m.Sum(nil)[:16])
}

// publish publishes msg until JetStream acknowledges it (the same
// Nats-Msg-Id every time, so a retry after a lost PubAck is deduplicated).
func (l *Load) publish(ctx context.Context, rec *CmdRecord, msg *nats.Msg) (outcome, detail string) {
	var last error
	for attempt := 1; attempt <= l.cfg.PublishAttempts; attempt++ {
		l.mu.Lock()
		rec.Attempts = attempt
		l.mu.Unlock()
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ack, err := l.js.PublishMsg(pctx, msg)
		cancel()
		if err == nil {
			if ack.Duplicate && attempt == 1 {
				return Refused, "PubAck Duplicate on the first publish: the id collides"
			}
			l.mu.Lock()
			rec.StreamSeq = ack.Sequence
			l.mu.Unlock()
			return Stored, ""
		}
		last = err
		if ctx.Err() != nil {
			break
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	return Unknown, fmt.Sprintf("publish: %v", last)
}

// http sends one command to a live instance, retrying (same
// Idempotency-Key) on network errors, 5xx, 429 and 409 "still in progress",
// until a definite answer or HTTPDeadline. It returns the command id of a
// 202.
func (l *Load) http(ctx context.Context, rec *CmdRecord, tenant, key, path string, body []byte) (outcome, detail, cmdID string) {
	deadline := time.Now().Add(l.cfg.HTTPDeadline)
	delay := 100 * time.Millisecond
	var lastErr string
	for attempt := 1; ; attempt++ {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return Unknown, "gave up after " + lastErr, ""
		}
		l.mu.Lock()
		rec.Attempts = attempt
		l.mu.Unlock()
		addrs := l.addrs()
		if len(addrs) == 0 {
			lastErr = "no live instance"
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		addr := addrs[rand.IntN(len(addrs))]
		status, resp, err := l.do(ctx, addr, tenant, key, path, body)
		retry := false
		switch {
		case err != nil:
			lastErr, retry = fmt.Sprintf("attempt %d on %s: %v", attempt, addr, err), true
		case status >= 500 || status == http.StatusTooManyRequests ||
			(status == http.StatusConflict && bytes.Contains(resp, []byte("in progress"))):
			lastErr, retry = fmt.Sprintf("attempt %d on %s: %d %s", attempt, addr, status, bytes.TrimSpace(resp)), true
		}
		if retry {
			sleepCtx(ctx, delay)
			delay = min(2*delay, 2*time.Second)
			continue
		}
		if status != http.StatusAccepted {
			return Refused, fmt.Sprintf("%d %s", status, bytes.TrimSpace(resp)), ""
		}
		var a struct {
			CommandID string `json:"command_id"`
		}
		if err := json.Unmarshal(resp, &a); err != nil || a.CommandID == "" {
			return Unknown, fmt.Sprintf("202 without a command id: %s", resp), ""
		}
		return Stored, "", a.CommandID
	}
}

func (l *Load) do(ctx context.Context, addr, tenant, key, path string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("X-Tenant-ID", tenant)
	req.Header.Set("Idempotency-Key", key)
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}

// invalids sends the invalid commands at random moments of the load, each
// to a random campaign that exists (or to a ghost).
func (l *Load) invalids(ctx context.Context) {
	rng := rand.New(rand.NewPCG(l.cfg.Seed, 0))
	kinds := invalidKinds
	for n := range l.cfg.Invalid {
		sleepCtx(ctx, randDur(rng, 0, l.cfg.Spread/time.Duration(max(l.cfg.Invalid, 1))+time.Second))
		var target CampaignRef
		if err := waitFor(ctx, 50*time.Millisecond, func() bool {
			l.mu.Lock()
			defer l.mu.Unlock()
			if len(l.existing) == 0 {
				return false
			}
			target = l.existing[rng.IntN(len(l.existing))]
			return true
		}); err != nil {
			return
		}
		rec, msg := l.invalid(rng, n, kinds[n%len(kinds)], target)
		outcome, detail := l.publish(ctx, rec, msg)
		l.finish(rec, outcome, detail)
	}
}

// invalid registers the n-th invalid command, of kind, aimed at target (an
// existing campaign), and returns its record and message.
func (l *Load) invalid(rng *rand.Rand, n int, kind string, target CampaignRef) (*CmdRecord, *nats.Msg) {
	id := fmt.Sprintf("bad-%d-%016x", n, rng.Uint64())
	var msg *nats.Msg
	switch kind {
	case InvalidBadJSON:
		msg = nats.NewMsg(events.CommandSubject(target.Tenant, target.ID, "pause"))
		msg.Header.Set(jetstream.MsgIDHeader, id)
		msg.Data = []byte(`{"id":"` + id + `","type":"pause","tenant_id":`)
	case InvalidMismatch:
		other := "intruder"
		for _, t := range l.cfg.Tenants {
			if t != target.Tenant {
				other = t
				break
			}
		}
		msg = events.NewCommandMsg(events.CommandEnvelope{ID: id, Type: "pause", TenantID: other, CampaignID: target.ID}, "")
		msg.Subject = events.CommandSubject(target.Tenant, target.ID, "pause")
	case InvalidGhost:
		target = CampaignRef{target.Tenant, fmt.Sprintf("ghost-%d", n)}
		msg = events.NewCommandMsg(events.CommandEnvelope{ID: id, Type: "start", TenantID: target.Tenant, CampaignID: target.ID}, "")
	case InvalidPoison:
		msg = nats.NewMsg(events.CommandSubject(target.Tenant, target.ID, "pause"))
		msg.Header.Set(jetstream.MsgIDHeader, id)
		body := make([]byte, 0, poisonBytes+200)
		body = append(body, `{"id":"`+id+`","type":"`...)
		body = append(body, bytes.Repeat([]byte{0xff}, poisonBytes)...)
		body = append(body, `","tenant_id":"`+target.Tenant+`","campaign_id":"`+target.ID+`"}`...)
		msg.Data = body
	}
	verb := msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:]
	rec := l.newRecord(CmdRecord{ID: id, Verb: verb, Tenant: target.Tenant, Campaign: target.ID, Via: "nats", Invalid: kind, Order: -1})
	return rec, msg
}

// Send sends one valid command outside the random load (a scenario's own
// campaign), recorded like the others; a stored create makes the campaign a
// target of the invalid commands too.
func (l *Load) Send(ctx context.Context, tenant, id, verb string, start bool, order int, via string) *CmdRecord {
	rng := rand.New(rand.NewPCG(l.cfg.Seed, uint64(1<<32+order)))
	rec := l.send(ctx, rng, tenant, id, verb, start, order, via)
	if verb == "create" && rec.Outcome == Stored {
		l.mu.Lock()
		l.existing = append(l.existing, CampaignRef{tenant, id})
		l.mu.Unlock()
	}
	return rec
}
