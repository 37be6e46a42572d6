//go:build chaos

package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

// The checker reads everything back at the end — CAMPAIGN_EVENTS,
// CAMPAIGN_DLQ, CAMPAIGN_COMMANDS and its consumer, the Redis keys, the HTTP
// API — and compares it with what the load sent and what the downstream fake
// saw. It uses none of the service's decoding, state machine or store code:
// the names below (streams, subjects, key layout, event types) are the
// contract's (CONTRACT sections 2–5, the doc comment of internal/store/redis.go),
// written out again on purpose.

const (
	streamCommands = "CAMPAIGN_COMMANDS"
	streamEvents   = "CAMPAIGN_EVENTS"
	streamDLQ      = "CAMPAIGN_DLQ"
	consumerName   = "orchestrator"
	redisPrefix    = "co" // store.Options.Prefix default
)

// Finding kinds. Every kind but KindStaleOverlap fails the scenario.
const (
	KindLost         = "lost"          // a stored command with no event (or a missing rejection)
	KindAppliedTwice = "applied-twice" // a command's state change (or rejection) more than once
	KindGap          = "gap"           // an event sequence skipped
	KindRepeat       = "repeat"        // an event sequence stored again
	KindEnvelope     = "envelope"      // an event's id, headers or attributes off the contract
	KindFSM          = "fsm"           // an order of events the state machine does not allow
	KindOrder        = "order"         // a campaign's commands applied out of stream order
	KindUnknownCmd   = "unknown-command"
	KindMismatch     = "store-mismatch" // store / API state differs from the history
	KindStuck        = "stuck"          // a campaign not idle at the end
	KindOverlap      = "overlap"        // two downstream calls at once from holders with the same (current) fence
	KindStaleOverlap = "stale-overlap"  // two calls at once, one with a stale fence: reported apart
	KindStaleWrite   = "stale-write"    // a step result taken from a call with a stale fence, or an event's fence below an earlier event's
	KindBadKey       = "bad-key"        // an Idempotency-Key that does not name the step run
	KindDLQ          = "dlq"            // a DLQ entry not explained, missing, repeated or with the wrong reason
	KindLeftover     = "leftover"       // something left in CAMPAIGN_COMMANDS, an inbox or an outbox
	KindQuiescence   = "quiescence"     // the system did not become idle before the deadline
	KindRefused      = "refused"        // a valid command not taken (4xx), or no answer after the client's retries
)

// Finding is one problem the checker found.
type Finding struct {
	Kind     string `json:"kind"`
	Campaign string `json:"campaign,omitempty"`
	Detail   string `json:"detail"`
}

// Summary is a scenario's figures.
type Summary struct {
	Scenario        string         `json:"scenario"`
	Seed            uint64         `json:"seed"`
	Scale           float64        `json:"scale"`
	Duration        string         `json:"duration"`
	Campaigns       int            `json:"campaigns"`
	Events          int            `json:"events"`
	Commands        int            `json:"commands"`
	CommandsStored  int            `json:"commands_stored"`
	CommandsUnknown int            `json:"commands_unknown"`
	CommandsRefused int            `json:"commands_refused"`
	CommandsHTTP    int            `json:"commands_http"`
	CommandsNATS    int            `json:"commands_nats"`
	CommandsRetried int            `json:"commands_retried"` // sent more than once (same id / Idempotency-Key)
	SlowestCommand  string         `json:"slowest_command"`  // longest time from first send to stored
	InvalidSent     int            `json:"invalid_sent"`
	DLQEntries      int            `json:"dlq_entries"`
	Faults          map[string]int `json:"faults"`
	DownstreamCalls int            `json:"downstream_calls"`
	RepeatedCalls   int            `json:"repeated_calls"`
	CallsByInstance map[string]int `json:"calls_by_instance,omitempty"`
	FinalStates     map[string]int `json:"final_states"`
	EventTypes      map[string]int `json:"event_types"`
	Quiescent       bool           `json:"quiescent"`
	QuiesceTook     string         `json:"quiesce_took"`
	Counts          map[string]int `json:"counts"` // findings by kind
	Findings        []Finding      `json:"findings,omitempty"`
}

// Failed reports whether any finding fails the scenario.
func (s *Summary) Failed() bool {
	for k, n := range s.Counts {
		if k != KindStaleOverlap && n > 0 {
			return true
		}
	}
	return false
}

// Line is the one-line summary.
func (s *Summary) Line() string {
	c := func(k string) int { return s.Counts[k] }
	var faults []string
	for k, n := range s.Faults {
		faults = append(faults, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(faults)
	return fmt.Sprintf("%s seed=%d: %d campaigns, %d commands (%d stored, %d unknown, %d refused; %d invalid), %d events, %d DLQ, "+
		"%d downstream calls (%d repeated), faults [%s], took %s; lost: %d, applied twice: %d, overlaps: %d (stale apart: %d), "+
		"stale writes: %d, gaps: %d, repeats: %d, fsm: %d, order: %d, store mismatches: %d, stuck: %d, dlq: %d, leftovers: %d, refused: %d",
		s.Scenario, s.Seed, s.Campaigns, s.Commands, s.CommandsStored, s.CommandsUnknown, s.CommandsRefused, s.InvalidSent,
		s.Events, s.DLQEntries, s.DownstreamCalls, s.RepeatedCalls, strings.Join(faults, " "), s.Duration,
		c(KindLost), c(KindAppliedTwice), c(KindOverlap), c(KindStaleOverlap), c(KindStaleWrite), c(KindGap), c(KindRepeat),
		c(KindFSM), c(KindOrder), c(KindMismatch), c(KindStuck), c(KindDLQ), c(KindLeftover), c(KindRefused))
}

// Checker reads the system back.
type Checker struct {
	JS    jetstream.JetStream
	Redis *redis.Client
	// Addrs are the live instances' HTTP addresses (GET /api/v1/campaigns/{id}).
	Addrs func() []string
	Down  *Downstream

	findings []Finding
}

func (c *Checker) add(kind, campaign, format string, args ...any) {
	c.findings = append(c.findings, Finding{Kind: kind, Campaign: campaign, Detail: fmt.Sprintf(format, args...)})
}

// rawMsg is one stored message.
type rawMsg struct {
	Seq     uint64
	Subject string
	Header  nats.Header
	Data    []byte
}

// readStream returns every message of a stream, in stream order.
func readStream(ctx context.Context, js jetstream.JetStream, name string) ([]rawMsg, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", name, err)
	}
	var out []rawMsg
	if info.State.Msgs == 0 {
		return nil, nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("stream %s seq %d: %w", name, seq, err)
		}
		out = append(out, rawMsg{Seq: m.Sequence, Subject: m.Subject, Header: m.Header, Data: m.Data})
	}
	return out, nil
}

// event is a CloudEvent as the contract describes it (CONTRACT section 4).
type event struct {
	SpecVersion string          `json:"specversion"`
	ID          string          `json:"id"`
	Source      string          `json:"source"`
	Type        string          `json:"type"`
	Subject     string          `json:"subject"`
	Tenant      string          `json:"tenantid"`
	Campaign    string          `json:"campaignid"`
	Sequence    string          `json:"sequence"`
	CommandID   string          `json:"commandid"`
	Fence       string          `json:"fence"`
	Data        json.RawMessage `json:"data"`

	streamSeq uint64
	seq       uint64
	short     string // type without "campaign."
	data      eventData
}

type eventData struct {
	Step    string          `json:"step"`
	Run     int             `json:"run"`
	Attempt int             `json:"attempt"`
	Steps   []string        `json:"steps"`
	Output  json.RawMessage `json:"output"`
	State   string          `json:"state"`
	Reason  string          `json:"reason"`
}

var seqRE = regexp.MustCompile(`^[0-9]{20}$`)

// history is one campaign's events and what replaying them gives.
type history struct {
	key    string // tenant/campaign
	tenant string
	id     string
	events []*event // in stream order, repeats left out

	// replay result
	state    string
	steps    []string
	idx      int
	inFlight bool
	runs     map[string]int
	started  map[string]map[int]bool // step -> runs that had step.started
}

// Run checks everything and fills the findings of s.
func (c *Checker) Run(ctx context.Context, cmds []CmdRecord, s *Summary) error {
	msgs, err := readStream(ctx, c.JS, streamEvents)
	if err != nil {
		return err
	}
	s.Events = len(msgs)
	hists := c.parseEvents(msgs)
	byCmd := c.checkLifecycles(hists, cmds)
	c.checkCommands(hists, cmds, byCmd)
	if err := c.checkFinalStates(ctx, hists, s); err != nil {
		return err
	}
	c.checkDownstream(ctx, hists, s)
	if err := c.checkDLQ(ctx, cmds, s); err != nil {
		return err
	}
	if err := c.checkLeftovers(ctx); err != nil {
		return err
	}
	s.Campaigns = len(hists)
	s.EventTypes = map[string]int{}
	for _, h := range hists {
		for _, e := range h.events {
			s.EventTypes[e.short]++
		}
	}
	if s.Counts == nil {
		s.Counts = map[string]int{}
	}
	for _, f := range c.findings {
		s.Counts[f.Kind]++
	}
	s.Findings = append(s.Findings, c.findings...)
	return nil
}

// parseEvents checks each event's envelope and each campaign's sequence
// (1..N, no gap, no repeat) and groups the events by campaign.
func (c *Checker) parseEvents(msgs []rawMsg) map[string]*history {
	hists := map[string]*history{}
	next := map[string]uint64{}
	topFence := map[string]uint64{} // the highest fence of each campaign's events so far
	for _, m := range msgs {
		toks := strings.SplitN(m.Subject, ".", 5)
		if len(toks) != 5 || toks[0] != "campaign" || toks[1] != "evt" {
			c.add(KindEnvelope, "", "stream seq %d: subject %q is not campaign.evt.<t>.<c>.<type>", m.Seq, m.Subject)
			continue
		}
		tenant, camp, typ := toks[2], toks[3], toks[4]
		key := tenant + "/" + camp
		var e event
		if err := json.Unmarshal(m.Data, &e); err != nil {
			c.add(KindEnvelope, key, "stream seq %d: body is not JSON: %v", m.Seq, err)
			continue
		}
		_ = json.Unmarshal(e.Data, &e.data)
		e.streamSeq = m.Seq
		e.short = strings.TrimPrefix(e.Type, "campaign.")
		n, err := strconv.ParseUint(e.Sequence, 10, 64)
		var bad []string
		if err != nil || !seqRE.MatchString(e.Sequence) || n == 0 {
			bad = append(bad, fmt.Sprintf("sequence %q not 20 zero-padded digits", e.Sequence))
		}
		e.seq = n
		wantID := tenant + "." + camp + "." + strconv.FormatUint(n, 10)
		check := func(what, got, want string) {
			if got != want {
				bad = append(bad, fmt.Sprintf("%s %q, want %q", what, got, want))
			}
		}
		check("specversion", e.SpecVersion, "1.0")
		check("source", e.Source, "campaign-orchestrator")
		check("type", e.Type, "campaign."+typ)
		check("subject", e.Subject, key)
		check("tenantid", e.Tenant, tenant)
		check("campaignid", e.Campaign, camp)
		check("id", e.ID, wantID)
		check("Nats-Msg-Id", m.Header.Get("Nats-Msg-Id"), wantID)
		check("Campaign-Id", m.Header.Get("Campaign-Id"), camp)
		check("Tenant-Id", m.Header.Get("Tenant-Id"), tenant)
		check("Command-Id", m.Header.Get("Command-Id"), e.CommandID)
		if e.CommandID == "" {
			bad = append(bad, "no commandid")
		}
		if f, err := strconv.ParseUint(e.Fence, 10, 64); err != nil || f == 0 {
			bad = append(bad, fmt.Sprintf("fence %q not a fencing token", e.Fence))
		}
		if len(bad) > 0 {
			c.add(KindEnvelope, key, "event %s (stream seq %d): %s", e.ID, m.Seq, strings.Join(bad, "; "))
		}
		h := hists[key]
		if h == nil {
			h = &history{key: key, tenant: tenant, id: camp}
			hists[key] = h
		}
		want := next[key] + 1
		switch {
		case n == want:
			next[key] = n
		case n < want:
			c.add(KindRepeat, key, "sequence %d (%s, command %s) again after %d (stream seq %d)", n, e.Type, e.CommandID, want-1, m.Seq)
			continue
		default:
			c.add(KindGap, key, "sequence %d (%s) follows %d: %d missing", n, e.Type, want-1, n-want)
			next[key] = n
		}
		// Fences never go backwards (CONTRACT guarantees 2 and 8): a
		// writer whose fence is below an earlier event's was fenced out,
		// or its store lost the fencing counter and nothing raised it.
		if f, _ := strconv.ParseUint(e.Fence, 10, 64); f < topFence[key] {
			c.add(KindStaleWrite, key, "sequence %d (%s) written with fence %d, below the fence %d of an earlier event", n, e.Type, f, topFence[key])
		} else {
			topFence[key] = f
		}
		h.events = append(h.events, &e)
	}
	return hists
}

// Event types (short forms) caused by the internal advance, and by the
// external commands.
var (
	internalTypes = map[string]bool{"step.started": true, "step.retrying": true, "step.succeeded": true, "step.failed": true, "failed": true, "completed": true}
	externalTypes = map[string]bool{"created": true, "started": true, "paused": true, "resumed": true, "cancelled": true, "retried": true, "command.rejected": true}
	verbEvent     = map[string]string{"start": "started", "pause": "paused", "resume": "resumed", "cancel": "cancelled", "retry": "retried"}
)

// allowed is CONTRACT section 5: may verb apply to a campaign in state?
func allowed(verb, state string) bool {
	switch verb {
	case "create":
		return state == ""
	case "start":
		return state == "pending"
	case "pause":
		return state == "running"
	case "resume":
		return state == "paused"
	case "cancel":
		return state == "pending" || state == "running" || state == "paused"
	case "retry":
		return state == "failed"
	}
	return false
}

// cmdEvent is one event of a command.
type cmdEvent struct {
	key string
	e   *event
}

// checkLifecycles replays every campaign's events through the contract's
// state machine and returns the events of every command id.
func (c *Checker) checkLifecycles(hists map[string]*history, cmds []CmdRecord) map[string][]cmdEvent {
	byID := map[string]*CmdRecord{}
	for i := range cmds {
		if cmds[i].ID != "" {
			byID[cmds[i].ID] = &cmds[i]
		}
	}
	byCmd := map[string][]cmdEvent{}
	for _, key := range sortedKeys(hists) {
		h := hists[key]
		h.runs, h.started = map[string]int{}, map[string]map[int]bool{}
		advPrefix := h.tenant + "." + h.id + ".advance."
		prevType, prevCmd := "", ""
		for _, e := range h.events {
			first := len(byCmd[e.CommandID]) == 0
			byCmd[e.CommandID] = append(byCmd[e.CommandID], cmdEvent{key, e})
			internal := strings.HasPrefix(e.CommandID, advPrefix)
			rec := byID[e.CommandID]
			switch {
			case internal && !internalTypes[e.short]:
				c.add(KindFSM, key, "seq %d %s caused by the internal advance %s", e.seq, e.Type, e.CommandID)
			case !internal && !externalTypes[e.short]:
				c.add(KindFSM, key, "seq %d %s caused by the external command %s", e.seq, e.Type, e.CommandID)
			case !internal && rec == nil:
				c.add(KindUnknownCmd, key, "seq %d %s carries command id %q, which the load never sent", e.seq, e.Type, e.CommandID)
			}
			// The command's own verdict, against the state before it.
			if rec != nil && first && rec.Invalid == "" {
				ok := allowed(rec.Verb, h.state)
				want := "command.rejected"
				if ok {
					want = verbEvent[rec.Verb]
					if rec.Verb == "create" {
						want = "created"
					}
				}
				if e.short != want {
					c.add(KindFSM, key, "seq %d: %s %s (%s) in state %q gave %s, want %s", e.seq, rec.Via, rec.Verb, rec.ID, h.state, e.short, want)
				}
			}
			if rec != nil && rec.Invalid != "" && e.short != "command.rejected" {
				c.add(KindFSM, key, "seq %d: invalid command %s (%s) gave %s, want command.rejected", e.seq, rec.ID, rec.Invalid, e.short)
			}
			if msg := h.apply(e, prevType, prevCmd); msg != "" {
				c.add(KindFSM, key, "seq %d %s (command %s): %s", e.seq, e.Type, e.CommandID, msg)
			}
			prevType, prevCmd = e.short, e.CommandID
		}
	}
	return byCmd
}

// apply moves the replayed state by one event; it returns what is wrong
// with the event, or "".
func (h *history) apply(e *event, prevType, prevCmd string) string {
	st := h.state
	cur := ""
	if h.idx < len(h.steps) {
		cur = h.steps[h.idx]
	}
	stepOK := func() string {
		if e.data.Step != cur {
			return fmt.Sprintf("step %q, but the current step is %q (index %d)", e.data.Step, cur, h.idx)
		}
		return ""
	}
	switch e.short {
	case "created":
		if st != "" || e.seq != 1 {
			return fmt.Sprintf("created in state %q at sequence %d", st, e.seq)
		}
		h.state, h.steps = "pending", e.data.Steps
		if len(h.steps) == 0 {
			return "created without steps"
		}
	case "command.rejected":
		if st == "" {
			return "rejected before the campaign was created"
		}
	case "started":
		if st != "pending" {
			return "started from " + st
		}
		h.state = "running"
	case "step.started":
		if st != "running" || h.inFlight {
			return fmt.Sprintf("step started in state %s (in flight %v)", st, h.inFlight)
		}
		if m := stepOK(); m != "" {
			return m
		}
		if want := max(h.runs[cur], 1); e.data.Run != want {
			return fmt.Sprintf("run %d, want %d", e.data.Run, want)
		}
		h.runs[cur] = e.data.Run
		if h.started[cur] == nil {
			h.started[cur] = map[int]bool{}
		}
		h.started[cur][e.data.Run] = true
		h.inFlight = true
	case "step.retrying":
		if st != "running" || !h.inFlight {
			return fmt.Sprintf("step retrying in state %s (in flight %v)", st, h.inFlight)
		}
		return stepOK()
	case "step.succeeded", "step.failed":
		if st != "running" || !h.inFlight {
			return fmt.Sprintf("step result in state %s (in flight %v)", st, h.inFlight)
		}
		if m := stepOK(); m != "" {
			return m
		}
		if e.data.Run != h.runs[cur] {
			return fmt.Sprintf("run %d, want %d", e.data.Run, h.runs[cur])
		}
		h.inFlight = false
		if e.short == "step.succeeded" {
			h.idx++
		}
	case "failed":
		if st != "running" || prevType != "step.failed" || prevCmd != e.CommandID {
			return fmt.Sprintf("failed in state %s after %s", st, prevType)
		}
		h.state = "failed"
	case "completed":
		if st != "running" || h.inFlight || h.idx != len(h.steps) {
			return fmt.Sprintf("completed in state %s at step %d of %d (in flight %v)", st, h.idx, len(h.steps), h.inFlight)
		}
		h.state = "completed"
	case "paused", "resumed", "cancelled":
		from := map[string][]string{"paused": {"running"}, "resumed": {"paused"}, "cancelled": {"pending", "running", "paused"}}[e.short]
		if !slices.Contains(from, st) {
			return e.short + " from " + st
		}
		if h.inFlight {
			// CONTRACT 5: applied when the step in flight ends.
			return e.short + " while a step is in flight"
		}
		h.state = map[string]string{"paused": "paused", "resumed": "running", "cancelled": "cancelled"}[e.short]
	case "retried":
		if st != "failed" {
			return "retried from " + st
		}
		h.runs[cur]++
		if e.data.Run != h.runs[cur] {
			return fmt.Sprintf("retried run %d, want %d", e.data.Run, h.runs[cur])
		}
		h.state = "running"
	default:
		return "unknown event type"
	}
	return ""
}

// checkCommands checks every command the load sent against the events:
// nothing stored lost, nothing applied twice, each campaign's commands in
// the order they were stored; and every advance applied at most once.
func (c *Checker) checkCommands(hists map[string]*history, cmds []CmdRecord, byCmd map[string][]cmdEvent) {
	for _, r := range cmds {
		key := r.Tenant + "/" + r.Campaign
		evs := byCmd[r.ID]
		if r.ID == "" {
			c.add(KindRefused, key, "%s %s: %s after %d attempts, id unknown: %s", r.Via, r.Verb, r.Outcome, r.Attempts, r.Detail)
			continue
		}
		for _, ce := range evs {
			if ce.key != key {
				c.add(KindFSM, key, "command %s (%s) has event %s in campaign %s", r.ID, r.Verb, ce.e.ID, ce.key)
			}
		}
		var types []string
		for _, ce := range evs {
			types = append(types, ce.e.short)
		}
		_, exists := hists[key]
		if r.Outcome != Stored {
			// The load sends valid commands only to campaigns whose create
			// was stored, with at most one instance down at a time: each
			// must be taken.
			c.add(KindRefused, key, "%s %s %s (%s): %s after %d attempts: %s", r.Via, r.Verb, r.ID, orInvalid(r.Invalid), r.Outcome, r.Attempts, r.Detail)
		}
		switch {
		case r.Outcome == Refused:
			if len(evs) > 0 {
				c.add(KindAppliedTwice, key, "command %s (%s) was refused (%s) but has events %v", r.ID, r.Verb, r.Detail, types)
			}
			continue
		case r.Invalid == InvalidGhost || r.Invalid == InvalidSquat:
			if len(evs) > 0 {
				c.add(KindFSM, key, "command %s for a campaign that does not exist has events %v", r.ID, types)
			}
			continue
		case !exists:
			if r.Outcome == Stored {
				c.add(KindLost, key, "%s %s %s stored, but the campaign has no events at all", r.Via, r.Verb, r.ID)
			}
			continue
		}
		var want []string
		switch {
		case r.Invalid != "":
			want = []string{"command.rejected"}
		case r.Verb == "create" && len(evs) > 0 && evs[0].e.short == "created" && r.Start:
			want = []string{"created", "started"}
		default:
			want = []string{types0(types)}
		}
		switch {
		case len(evs) == 0 && r.Outcome == Stored:
			c.add(KindLost, key, "%s %s %s (%s) stored at %s but no event carries its id", r.Via, r.Verb, r.ID, orInvalid(r.Invalid), r.Done.Format(time.StampMilli))
		case len(evs) > len(want):
			c.add(KindAppliedTwice, key, "%s %s %s gave events %v, want %v", r.Via, r.Verb, r.ID, types, want)
		case len(evs) > 0 && !slices.Equal(types, want):
			c.add(KindFSM, key, "%s %s %s gave events %v, want %v", r.Via, r.Verb, r.ID, types, want)
		}
	}
	// Order: a campaign's own commands, each stored before the next was
	// sent, must take effect in that order.
	per := map[string][]CmdRecord{}
	for _, r := range cmds {
		if r.Order >= 0 && r.Outcome == Stored && r.ID != "" {
			per[r.Tenant+"/"+r.Campaign] = append(per[r.Tenant+"/"+r.Campaign], r)
		}
	}
	for key, rs := range per {
		sort.Slice(rs, func(i, j int) bool { return rs[i].Order < rs[j].Order })
		var last uint64
		lastID := ""
		for _, r := range rs {
			evs := byCmd[r.ID]
			if len(evs) == 0 {
				continue
			}
			if s := evs[0].e.seq; s < last {
				c.add(KindOrder, key, "%s (%s, sent after %s) applied at sequence %d, before %s at %d", r.ID, r.Verb, lastID, s, lastID, last)
			} else {
				last, lastID = s, r.ID
			}
		}
	}
	// Advances: each is applied once.
	for id, evs := range byCmd {
		if len(evs) == 0 || !strings.Contains(id, ".advance.") {
			continue
		}
		seen := map[string]uint64{}
		for _, ce := range evs {
			if ce.e.short == "step.retrying" {
				continue
			}
			if s, dup := seen[ce.e.short]; dup {
				c.add(KindAppliedTwice, ce.key, "advance %s gave %s twice (sequences %d and %d)", id, ce.e.Type, s, ce.e.seq)
			}
			seen[ce.e.short] = ce.e.seq
		}
	}
}

func types0(types []string) string {
	if len(types) == 0 {
		return ""
	}
	return types[0]
}

func orInvalid(s string) string {
	if s == "" {
		return "valid"
	}
	return s
}

// storedCampaign is what the checker reads of the state in Redis (the JSON
// of the "data" field of P:{t/c}:state).
type storedCampaign struct {
	State string `json:"state"`
	Step  int    `json:"step"`
	Seq   uint64 `json:"seq"`
	Fence uint64 `json:"fence"`
}

// apiCampaign is what the checker reads of GET /api/v1/campaigns/{id}.
type apiCampaign struct {
	State     string `json:"state"`
	StepIndex int    `json:"step_index"`
	Sequence  uint64 `json:"sequence"`
}

func stateKey(tenant, campaign, what string) string {
	return redisPrefix + ":{" + tenant + "/" + campaign + "}:" + what
}

// checkFinalStates compares the replayed state of every campaign with the
// store (Redis) and the HTTP API; a campaign still running is stuck.
func (c *Checker) checkFinalStates(ctx context.Context, hists map[string]*history, s *Summary) error {
	s.FinalStates = map[string]int{}
	client := &http.Client{Timeout: 5 * time.Second}
	for _, key := range sortedKeys(hists) {
		h := hists[key]
		s.FinalStates[h.state]++
		if h.state == "running" || h.state == "" {
			c.add(KindStuck, key, "ends in state %q after %d events (step %d of %d, in flight %v)", h.state, len(h.events), h.idx, len(h.steps), h.inFlight)
		}
		var last uint64
		if n := len(h.events); n > 0 {
			last = h.events[n-1].seq
		}
		raw, err := c.Redis.HGet(ctx, stateKey(h.tenant, h.id, "state"), "data").Result()
		switch {
		case errors.Is(err, redis.Nil):
			c.add(KindMismatch, key, "no state in Redis (%s)", stateKey(h.tenant, h.id, "state"))
		case err != nil:
			return fmt.Errorf("redis: %w", err)
		default:
			var sc storedCampaign
			if err := json.Unmarshal([]byte(raw), &sc); err != nil {
				c.add(KindMismatch, key, "state in Redis is not JSON: %v", err)
			} else if sc.State != h.state || sc.Seq != last || sc.Step != h.idx {
				c.add(KindMismatch, key, "Redis has state %s seq %d step %d; the history gives %s seq %d step %d", sc.State, sc.Seq, sc.Step, h.state, last, h.idx)
			}
		}
		var ac apiCampaign
		status, err := c.get(ctx, client, h.tenant, "/api/v1/campaigns/"+h.id, &ac)
		switch {
		case err != nil:
			c.add(KindMismatch, key, "GET /api/v1/campaigns/%s: %v", h.id, err)
		case status != http.StatusOK:
			c.add(KindMismatch, key, "GET /api/v1/campaigns/%s: status %d", h.id, status)
		case ac.State != h.state || ac.Sequence != last || ac.StepIndex != h.idx:
			c.add(KindMismatch, key, "the API shows state %s sequence %d step %d; the history gives %s %d %d", ac.State, ac.Sequence, ac.StepIndex, h.state, last, h.idx)
		}
	}
	return nil
}

// get GETs path from a live instance (trying each) as tenant.
func (c *Checker) get(ctx context.Context, client *http.Client, tenant, path string, v any) (int, error) {
	var last error = errors.New("no live instance")
	for _, addr := range c.Addrs() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("X-Tenant-ID", tenant)
		resp, err := client.Do(req)
		if err != nil {
			last = err
			continue
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			last = err
			continue
		}
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(b, v); err != nil {
				return resp.StatusCode, fmt.Errorf("body: %v", err)
			}
		}
		return resp.StatusCode, nil
	}
	return 0, last
}

var keyRE = regexp.MustCompile(`^([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]+)\.([0-9]+)$`)

// checkDownstream checks the calls the fake saw: well-formed keys naming a
// run the history started, no two calls at once for one campaign from the
// same (current) fence, and every step result taken from a call with the
// highest fence that called that step run.
func (c *Checker) checkDownstream(ctx context.Context, hists map[string]*history, s *Summary) {
	calls := c.Down.Calls()
	s.DownstreamCalls = len(calls)
	s.CallsByInstance = map[string]int{}
	byCampaign := map[string][]Call{}
	byKey := map[string][]Call{}
	byN := map[string]Call{}
	now := time.Now()
	for _, cl := range calls {
		key := cl.Tenant + "/" + cl.Campaign
		inst := cl.Instance
		if inst == "" {
			inst = "?"
		}
		if i := strings.IndexByte(inst, '('); i > 0 {
			inst = inst[:i]
		}
		s.CallsByInstance[inst]++
		byCampaign[key] = append(byCampaign[key], cl)
		byKey[cl.Key] = append(byKey[cl.Key], cl)
		byN[cl.ID()] = cl
		m := keyRE.FindStringSubmatch(cl.Key)
		switch {
		case m == nil || m[1] != cl.Tenant || m[2] != cl.Campaign || m[3] != cl.Step:
			c.add(KindBadKey, key, "call %s: Idempotency-Key %q does not name %s/%s step %s", cl.ID(), cl.Key, cl.Tenant, cl.Campaign, cl.Step)
			continue
		case cl.BodyStep != cl.Step:
			c.add(KindBadKey, key, "call %s: path step %s, body step %s", cl.ID(), cl.Step, cl.BodyStep)
		case cl.Fence == 0:
			c.add(KindBadKey, key, "call %s: Campaign-Fence %q", cl.ID(), cl.FenceRaw)
		}
		run, _ := strconv.Atoi(m[4])
		if h := hists[key]; h == nil || !h.started[cl.Step][run] {
			c.add(KindBadKey, key, "call %s (key %s): the history never started run %d of step %s", cl.ID(), cl.Key, run, cl.Step)
		}
	}
	s.RepeatedCalls = len(calls) - len(byKey)
	for _, key := range sortedKeys(byCampaign) {
		cs := byCampaign[key]
		sort.Slice(cs, func(i, j int) bool { return cs[i].Start.Before(cs[j].Start) })
		end := func(cl Call) time.Time {
			if cl.End.IsZero() {
				return now
			}
			return cl.End
		}
		for i := range cs {
			for j := i + 1; j < len(cs) && cs[j].Start.Before(end(cs[i])); j++ {
				a, b := cs[i], cs[j]
				what := fmt.Sprintf("calls %s (%s fence %d %s, %s–%s) and %s (%s fence %d %s, %s–%s) at once",
					a.ID(), a.Key, a.Fence, a.Instance, a.Start.Format("15:04:05.000"), end(a).Format("15:04:05.000"),
					b.ID(), b.Key, b.Fence, b.Instance, b.Start.Format("15:04:05.000"), end(b).Format("15:04:05.000"))
				if a.Fence == b.Fence {
					c.add(KindOverlap, key, "%s with the same fence", what)
				} else {
					c.add(KindStaleOverlap, key, "%s: fence %d is stale", what, min(a.Fence, b.Fence))
				}
			}
		}
		var maxFence uint64
		for _, cl := range cs {
			maxFence = max(maxFence, cl.Fence)
		}
		if h := hists[key]; h != nil {
			if f, err := c.Redis.Get(ctx, stateKey(h.tenant, h.id, "fence")).Uint64(); err == nil && f < maxFence {
				c.add(KindStaleWrite, key, "the fencing counter is %d, below the fence %d a call carried", f, maxFence)
			}
		}
	}
	for _, key := range sortedKeys(hists) {
		h := hists[key]
		for _, e := range h.events {
			if e.short != "step.succeeded" {
				continue
			}
			var out struct {
				Call string `json:"call"`
			}
			_ = json.Unmarshal(e.data.Output, &out)
			cl, ok := byN[out.Call]
			wantKey := fmt.Sprintf("%s.%s.%s.%d", h.tenant, h.id, e.data.Step, e.data.Run)
			if !ok {
				c.add(KindStaleWrite, key, "seq %d step.succeeded %s: output %s is no call the downstream answered", e.seq, e.data.Step, e.data.Output)
				continue
			}
			if cl.Key != wantKey || cl.Status != http.StatusOK {
				c.add(KindStaleWrite, key, "seq %d step.succeeded %s run %d took the output of call %s (key %s, status %d)", e.seq, e.data.Step, e.data.Run, cl.ID(), cl.Key, cl.Status)
				continue
			}
			var top uint64
			for _, o := range byKey[cl.Key] {
				top = max(top, o.Fence)
			}
			if cl.Fence < top {
				c.add(KindStaleWrite, key, "seq %d step.succeeded %s: output of call %s with fence %d, but fence %d called the same run", e.seq, e.data.Step, cl.ID(), cl.Fence, top)
			}
		}
	}
}

// maxReason bounds a dead letter's reason (CONTRACT guarantee 6: bounded).
const maxReason = 1024

// checkDLQ matches every DLQ entry with an invalid command the load sent:
// each such command exactly once, with the reason its kind calls for, and
// nothing else.
func (c *Checker) checkDLQ(ctx context.Context, cmds []CmdRecord, s *Summary) error {
	msgs, err := readStream(ctx, c.JS, streamDLQ)
	if err != nil {
		return err
	}
	s.DLQEntries = len(msgs)
	want := map[string]CmdRecord{}
	for _, r := range cmds {
		if r.Invalid != "" {
			s.InvalidSent++
			if r.Outcome == Stored {
				want[r.ID] = r
			}
		}
	}
	count := map[string]int{}
	for _, m := range msgs {
		id := m.Header.Get("Command-Id")
		reason := m.Header.Get("Reason")
		r, ok := want[id]
		if !ok {
			c.add(KindDLQ, strings.TrimPrefix(m.Subject, "campaign.dlq."), "DLQ seq %d not explained by an invalid command of the load: command %q, subject %s, reason %q",
				m.Seq, id, m.Header.Get("Original-Subject"), reason)
			continue
		}
		count[id]++
		need := map[string]string{InvalidBadJSON: "bad JSON", InvalidMismatch: "tenant_id", InvalidGhost: "unknown campaign",
			InvalidPoison: "does not match the subject's verb", InvalidSquat: "bad JSON"}[r.Invalid]
		if !strings.Contains(reason, need) {
			c.add(KindDLQ, r.Tenant+"/"+r.Campaign, "DLQ seq %d for %s (%s): reason %q does not say %q", m.Seq, id, r.Invalid, events.BoundReason(reason), need)
		}
		if len(reason) > maxReason || !utf8.ValidString(reason) {
			c.add(KindDLQ, r.Tenant+"/"+r.Campaign, "DLQ seq %d for %s (%s): reason of %d bytes (valid UTF-8: %v), want at most %d bytes of UTF-8",
				m.Seq, id, r.Invalid, len(reason), utf8.ValidString(reason), maxReason)
		}
		if wantSubj := "campaign.dlq." + r.Tenant + "." + r.Campaign; m.Subject != wantSubj {
			c.add(KindDLQ, r.Tenant+"/"+r.Campaign, "DLQ seq %d for %s on %s, want %s", m.Seq, id, m.Subject, wantSubj)
		}
	}
	for id, r := range want {
		if count[id] != 1 {
			c.add(KindDLQ, r.Tenant+"/"+r.Campaign, "invalid command %s (%s) dead-lettered %d times, want once", id, r.Invalid, count[id])
		}
	}
	return nil
}

// checkLeftovers: nothing in CAMPAIGN_COMMANDS, nothing pending on the
// consumer, no inbox or outbox holding anything.
func (c *Checker) checkLeftovers(ctx context.Context) error {
	q, err := quietness(ctx, c.JS, c.Redis)
	if err != nil {
		return err
	}
	for _, what := range q.leftovers() {
		c.add(KindLeftover, "", "%s", what)
	}
	return nil
}

// quiet is what the quiescence test looks at.
type quiet struct {
	commands   uint64   // messages in CAMPAIGN_COMMANDS
	pending    uint64   // consumer: not delivered yet
	ackPending int      // consumer: delivered, not acknowledged
	nonEmpty   []string // inbox, inboxdata and outbox keys with something in them
	running    []string // campaigns whose stored state is running
}

func (q quiet) leftovers() []string {
	var out []string
	if q.commands > 0 || q.pending > 0 || q.ackPending > 0 {
		out = append(out, fmt.Sprintf("%s holds %d messages (consumer: %d pending, %d awaiting ack)", streamCommands, q.commands, q.pending, q.ackPending))
	}
	for _, k := range q.nonEmpty {
		out = append(out, k+" is not empty")
	}
	return out
}

func (q quiet) idle() bool { return len(q.leftovers()) == 0 && len(q.running) == 0 }

func (q quiet) String() string {
	return fmt.Sprintf("commands=%d pending=%d ack_pending=%d non-empty inbox/outbox keys=%d running=%d %v",
		q.commands, q.pending, q.ackPending, len(q.nonEmpty), len(q.running), first(q.running, 5))
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func quietness(ctx context.Context, js jetstream.JetStream, rdb *redis.Client) (quiet, error) {
	var q quiet
	st, err := js.Stream(ctx, streamCommands)
	if err != nil {
		return q, err
	}
	si, err := st.Info(ctx)
	if err != nil {
		return q, err
	}
	q.commands = si.State.Msgs
	cons, err := st.Consumer(ctx, consumerName)
	if err != nil {
		return q, err
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return q, err
	}
	q.pending, q.ackPending = ci.NumPending, ci.NumAckPending
	for _, pat := range []string{"inbox", "inboxdata", "outbox"} {
		keys, err := scan(ctx, rdb, redisPrefix+":{*}:"+pat)
		if err != nil {
			return q, err
		}
		for _, k := range keys {
			var n int64
			switch pat {
			case "inbox":
				n, err = rdb.ZCard(ctx, k).Result()
			case "inboxdata":
				n, err = rdb.HLen(ctx, k).Result()
			case "outbox":
				n, err = rdb.LLen(ctx, k).Result()
			}
			if err != nil && !errors.Is(err, redis.Nil) {
				return q, err
			}
			if n > 0 {
				q.nonEmpty = append(q.nonEmpty, fmt.Sprintf("%s (%d)", k, n))
			}
		}
	}
	keys, err := scan(ctx, rdb, redisPrefix+":{*}:state")
	if err != nil {
		return q, err
	}
	for _, k := range keys {
		raw, err := rdb.HGet(ctx, k, "data").Result()
		if err != nil {
			continue
		}
		var sc storedCampaign
		if json.Unmarshal([]byte(raw), &sc) == nil && sc.State == "running" {
			q.running = append(q.running, k)
		}
	}
	sort.Strings(q.running)
	return q, nil
}

func scan(ctx context.Context, rdb *redis.Client, pattern string) ([]string, error) {
	var out []string
	it := rdb.Scan(ctx, 0, pattern, 500).Iterator()
	for it.Next(ctx) {
		out = append(out, it.Val())
	}
	return out, it.Err()
}

// WaitQuiet polls until the system is idle twice in a row (nothing in
// CAMPAIGN_COMMANDS or on the consumer, no inbox or outbox, no campaign
// running, no downstream call in flight), or until timeout. It returns
// whether it became idle, and the last observation.
func WaitQuiet(ctx context.Context, js jetstream.JetStream, rdb *redis.Client, down *Downstream, timeout time.Duration, logf func(string, ...any)) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	streak := 0
	last := ""
	lastLog := time.Now()
	err := waitFor(ctx, 500*time.Millisecond, func() bool {
		q, err := quietness(ctx, js, rdb)
		if err != nil {
			last = err.Error()
			streak = 0
			return false
		}
		last = q.String() + fmt.Sprintf(" downstream_in_flight=%d", down.InFlight())
		if q.idle() && down.InFlight() == 0 {
			streak++
		} else {
			streak = 0
		}
		if time.Since(lastLog) > 15*time.Second {
			logf("waiting for quiescence: %s", last)
			lastLog = time.Now()
		}
		return streak >= 2
	})
	return err == nil, last
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
