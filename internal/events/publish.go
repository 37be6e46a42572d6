package events

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Errors of PublishEvents. Compare with errors.Is.
var (
	// ErrSequenceGap: the first message to publish does not follow the
	// campaign's last stored event, or the messages are not consecutive.
	// Nothing after the stored events was published.
	ErrSequenceGap = errors.New("event sequence gap")
	// ErrPublishConflict: the campaign's last stored event kept changing
	// under PublishEvents without it being able to make progress.
	ErrPublishConflict = errors.New("event publish conflict")
	// ErrEventConflict: a sequence of the campaign is stored with another
	// event than the caller's (a holder that outlived the loss of the
	// campaign's state published the event of a write the store lost, say):
	// the caller's state is not the one the history shows, and it must not
	// go on from it. Nothing after the stored events was published.
	ErrEventConflict = errors.New("event sequence stored with another event")
)

// maxStaleConflicts bounds the "wrong last sequence" answers PublishEvents
// accepts without seeing the campaign's stored events progress.
const maxStaleConflicts = 5

// maxReasonLen bounds the Reason header of a DLQ copy.
const maxReasonLen = 1024

// PublishEvents publishes one campaign's event messages (built by
// NewEventMsg, consecutive, in sequence order) so that each sequence is stored
// at most once in CAMPAIGN_EVENTS, even when re-published long after the
// stream's duplicate window.
//
// It reads the campaign's last stored event (its sequence and stream
// sequence), skips the messages whose sequence is not above it once it has
// checked that each is the very event stored under its sequence (same
// subject, same body: a re-publish; any other is ErrEventConflict, never
// skipped), and publishes
// the rest with jetstream.WithExpectLastSequenceForSubject(last stream
// sequence, CampaignEvents(tenant, campaign)), chained from each PubAck. When
// another publisher got there first ("wrong last sequence"), it reads the
// last event again and goes on from there, so concurrent publishers of the
// same outbox store each event once, in order. The messages are not
// modified.
//
// It returns how many messages it stored itself (skipped ones and duplicates
// not counted). Errors: ErrSequenceGap when the messages would not follow the
// stored events, ErrEventConflict when a sequence is stored with another
// event, ErrPublishConflict when it cannot make progress, ErrInvalidEvent
// for a message not of this campaign, and wrapped JetStream errors.
func PublishEvents(ctx context.Context, js jetstream.JetStream, tenant, campaign string, msgs []*nats.Msg) (int, error) {
	return NewPublisher(js).PublishEvents(ctx, tenant, campaign, msgs)
}

// Publisher publishes campaigns' events like PublishEvents, without its
// look-ups: it looks CAMPAIGN_EVENTS up once (a STREAM.INFO request), and
// remembers each campaign's last stored event as its own PubAcks report it,
// so that publishing the next ones needs no read of the stream. What it
// remembers may be stale (another process published since): the publish is
// then refused ("wrong last sequence"), and it reads the stream as
// PublishEvents does. Safe for concurrent use.
type Publisher struct {
	js jetstream.JetStream

	mu     sync.Mutex
	stream jetstream.Stream
	last   map[string][2]uint64 // "<tenant>/<campaign>" → event sequence, stream sequence
}

// maxRemembered bounds Publisher's memory: past it, it forgets everything
// (the next publish of each campaign reads the stream once).
const maxRemembered = 100_000

// NewPublisher returns a Publisher over js.
func NewPublisher(js jetstream.JetStream) *Publisher {
	return &Publisher{js: js, last: map[string][2]uint64{}}
}

func (p *Publisher) streamHandle(ctx context.Context) (jetstream.Stream, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stream == nil {
		s, err := p.js.Stream(ctx, StreamEvents)
		if err != nil {
			return nil, err
		}
		p.stream = s
	}
	return p.stream, nil
}

func (p *Publisher) remembered(key string) (seq, streamSeq uint64, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.last[key]
	return v[0], v[1], ok
}

func (p *Publisher) remember(key string, seq, streamSeq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.last) >= maxRemembered {
		clear(p.last)
	}
	p.last[key] = [2]uint64{seq, streamSeq}
}

// Last returns the sequence of the campaign's last stored event (ok=false
// when it has none), read from the stream through p's stream handle; p
// remembers it, so that publishing the campaign's next event needs no
// other read.
func (p *Publisher) Last(ctx context.Context, tenant, campaign string) (seq uint64, ok bool, err error) {
	key := tenant + "/" + campaign
	if !ValidToken(tenant) || !ValidToken(campaign) {
		return 0, false, fmt.Errorf("last event of %s: bad tenant or campaign token: %w", key, ErrInvalidEvent)
	}
	stream, err := p.streamHandle(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("last event of %s: stream %s: %w", key, StreamEvents, err)
	}
	seq, streamSeq, _, err := lastStored(ctx, stream, tenant, campaign)
	if err != nil {
		return 0, false, fmt.Errorf("last event of %s: %w", key, err)
	}
	p.remember(key, seq, streamSeq)
	return seq, streamSeq != 0, nil
}

// PublishEvents is the package's PublishEvents through p.
func (p *Publisher) PublishEvents(ctx context.Context, tenant, campaign string, msgs []*nats.Msg) (int, error) {
	js := p.js
	if len(msgs) == 0 {
		return 0, nil
	}
	key := tenant + "/" + campaign
	if !ValidToken(tenant) || !ValidToken(campaign) {
		return 0, fmt.Errorf("publish events of %s: bad tenant or campaign token: %w", key, ErrInvalidEvent)
	}
	prefix := evtPrefix + tenant + "." + campaign + "."
	seqs := make([]uint64, len(msgs))
	for i, m := range msgs {
		if m == nil || !strings.HasPrefix(m.Subject, prefix) || len(m.Subject) == len(prefix) {
			return 0, fmt.Errorf("publish events of %s: message %d is not on %s: %w", key, i, CampaignEvents(tenant, campaign), ErrInvalidEvent)
		}
		n, ok := parseEventID(tenant, campaign, m.Header.Get(jetstream.MsgIDHeader))
		if !ok {
			return 0, fmt.Errorf("publish events of %s: message %d has no Nats-Msg-Id %s.%s.<n>: %w", key, i, tenant, campaign, ErrInvalidEvent)
		}
		if i > 0 && n != seqs[i-1]+1 {
			return 0, fmt.Errorf("publish events of %s: sequence %d follows %d: %w", key, n, seqs[i-1], ErrSequenceGap)
		}
		seqs[i] = n
	}

	stream, err := p.streamHandle(ctx)
	if err != nil {
		return 0, fmt.Errorf("publish events of %s: stream %s: %w", key, StreamEvents, err)
	}
	filter := CampaignEvents(tenant, campaign)
	stored, last, known := p.remembered(key)
	var lastMsg *jetstream.RawStreamMsg // the stored event at stored, when read
	if !known || stored+1 != seqs[0] {
		// Nothing remembered, or not what these messages follow (a
		// re-publish, another process's events): read the stream.
		if stored, last, lastMsg, err = lastStored(ctx, stream, tenant, campaign); err != nil {
			return 0, fmt.Errorf("publish events of %s: %w", key, err)
		}
	}
	defer func() { p.remember(key, stored, last) }()
	published, stale := 0, 0
	for i := 0; ; {
		for i < len(msgs) && seqs[i] <= stored {
			// Stored already: only the very same event may be skipped.
			if err := p.checkStored(ctx, tenant, campaign, msgs[i], seqs[i], stored, last, lastMsg); err != nil {
				return published, fmt.Errorf("publish events of %s: %w", key, err)
			}
			i++
		}
		if i == len(msgs) {
			return published, nil
		}
		if stored != 0 && seqs[i] != stored+1 {
			return published, fmt.Errorf("publish events of %s: stored up to %d, next is %d: %w", key, stored, seqs[i], ErrSequenceGap)
		}
		if err := publishAllowed(ctx); err != nil {
			return published, fmt.Errorf("publish event %s: %w", EventID(tenant, campaign, seqs[i]), err)
		}
		ack, err := js.PublishMsg(ctx, copyMsg(msgs[i]),
			jetstream.WithExpectStream(StreamEvents),
			jetstream.WithExpectLastSequenceForSubject(last, filter))
		if err == nil && !ack.Duplicate {
			published++
			stored, last, lastMsg = seqs[i], ack.Sequence, nil
			i++
			continue
		}
		if err != nil && !isWrongLastSeq(err) {
			return published, fmt.Errorf("publish event %s: %w", EventID(tenant, campaign, seqs[i]), err)
		}
		// Someone else stored events of this campaign (or this very one,
		// reported as a duplicate): start again from what is stored now.
		before := stored
		if stored, last, lastMsg, err = lastStored(ctx, stream, tenant, campaign); err != nil {
			return published, fmt.Errorf("publish events of %s: %w", key, err)
		}
		if stored <= before {
			// No progress: the read may come from a lagging replica (direct
			// gets are served by any replica). Give it a moment.
			if stale++; stale > maxStaleConflicts {
				return published, fmt.Errorf("publish events of %s: last stored event stays at %d (stream sequence %d): %w", key, stored, last, ErrPublishConflict)
			}
			select {
			case <-ctx.Done():
				return published, fmt.Errorf("publish events of %s: %w", key, ctx.Err())
			case <-time.After(time.Duration(stale) * 10 * time.Millisecond):
			}
		}
	}
}

// publishGuardKey is the context key of WithPublishGuard.
type publishGuardKey struct{}

// WithPublishGuard returns ctx with a check that PublishEvents makes before
// each publish of an event: when it returns an error, nothing more is
// published and PublishEvents returns it. The worker's lock holder checks
// there that its lock cannot have expired, so that a holder that outlived
// its lock (frozen, cut off from the store) stops publishing by the time
// the lock's TTL has passed: what a rebuild waits for (CONTRACT guarantee
// 8).
func WithPublishGuard(ctx context.Context, check func() error) context.Context {
	return context.WithValue(ctx, publishGuardKey{}, check)
}

func publishAllowed(ctx context.Context) error {
	if check, ok := ctx.Value(publishGuardKey{}).(func() error); ok {
		return check()
	}
	return nil
}

// lastStored returns the sequence and the stream sequence of the campaign's
// last stored event, and the event (0, 0, nil when there is none).
func lastStored(ctx context.Context, stream jetstream.Stream, tenant, campaign string) (seq, streamSeq uint64, raw *jetstream.RawStreamMsg, err error) {
	raw, err = stream.GetLastMsgForSubject(ctx, CampaignEvents(tenant, campaign))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, 0, nil, nil
	}
	if err != nil {
		return 0, 0, nil, fmt.Errorf("read last event: %w", err)
	}
	if seq, err = storedSeq(tenant, campaign, raw); err != nil {
		return 0, 0, nil, err
	}
	return seq, raw.Sequence, raw, nil
}

// storedSeq is the sequence of raw, a stored event of the campaign. The
// body is what says it (a foreign message may carry a Nats-Msg-Id in the
// service's own format); a header that says otherwise is a conflict too.
func storedSeq(tenant, campaign string, raw *jetstream.RawStreamMsg) (uint64, error) {
	ev, err := ParseEvent(raw.Data)
	if err == nil {
		if n, ok := parseEventID(tenant, campaign, raw.Header.Get(jetstream.MsgIDHeader)); !ok || n == ev.Seq() {
			return ev.Seq(), nil
		}
		err = fmt.Errorf("its %s says sequence %s, its body %d: %w", jetstream.MsgIDHeader,
			QuoteBounded(raw.Header.Get(jetstream.MsgIDHeader)), ev.Seq(), ErrInvalidEvent)
	}
	// Not an event of the campaign (a foreign publisher where the
	// permissions let one in): nothing can be chained to it, and a
	// rebuild cannot read through it. ErrInvalidEvent (a rebuild
	// dead-letters) and ErrEventConflict (a holder stops, signalled,
	// until it is removed).
	return 0, fmt.Errorf("message at stream sequence %d of %s is not an event of the campaign (%w): remove it (nats stream rmm %s %d): %w",
		raw.Sequence, StreamEvents, err, StreamEvents, raw.Sequence, ErrEventConflict)
}

// checkStored checks that m, the campaign's event number seq, is the event
// stored under that sequence: same subject, same body (a re-publish of the
// same outbox message). stored is the campaign's last stored sequence, at
// stream sequence last; lastMsg that event, when read. Only a re-publish
// takes this path, never the publish of a campaign's next event.
func (p *Publisher) checkStored(ctx context.Context, tenant, campaign string, m *nats.Msg, seq, stored, last uint64, lastMsg *jetstream.RawStreamMsg) error {
	raw := lastMsg
	if seq != stored || raw == nil {
		var err error
		if raw, err = storedEvent(ctx, p.js, tenant, campaign, seq, last); err != nil {
			return err
		}
	}
	if raw.Subject != m.Subject || !bytes.Equal(raw.Data, m.Data) {
		return fmt.Errorf("event %s is stored (stream sequence %d, %s) with other content than this one (%s): %w",
			EventID(tenant, campaign, seq), raw.Sequence, raw.Subject, m.Subject, ErrEventConflict)
	}
	return nil
}

// storedEvent returns the campaign's stored event number seq, at stream
// sequence at most hi, from the stream's leader: a binary search on stream
// sequences (the campaign's events are in sequence order), about log2(hi)
// gets. An event no longer stored (aged out) is ErrEventConflict: what the
// caller would skip cannot be checked.
func storedEvent(ctx context.Context, js jetstream.JetStream, tenant, campaign string, seq, hi uint64) (*jetstream.RawStreamMsg, error) {
	filter := CampaignEvents(tenant, campaign)
	lo := uint64(1)
	var found *jetstream.RawStreamMsg
	for lo <= hi {
		mid := lo + (hi-lo)/2
		raw, err := leaderMsgGet(ctx, js, StreamEvents, msgGet{Seq: mid, NextFor: filter})
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			hi = mid - 1
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read event %s: %w", EventID(tenant, campaign, seq), err)
		}
		n, err := storedSeq(tenant, campaign, raw)
		if err != nil {
			return nil, err
		}
		switch {
		case n == seq:
			return raw, nil
		case n < seq:
			lo = raw.Sequence + 1
		default:
			found = raw
			hi = mid - 1
		}
	}
	at := "none after it"
	if found != nil {
		at = fmt.Sprintf("the first after it is at stream sequence %d", found.Sequence)
	}
	return nil, fmt.Errorf("event %s is no longer stored (%s): cannot check it: %w", EventID(tenant, campaign, seq), at, ErrEventConflict)
}

// isWrongLastSeq reports whether err is JetStream's "wrong last sequence"
// (10071, or 10164 from replicated streams).
func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// copyMsg copies m's subject, headers and data into a new message, so that
// the publish options set on it do not touch the caller's message.
func copyMsg(m *nats.Msg) *nats.Msg {
	c := nats.NewMsg(m.Subject)
	for k, v := range m.Header {
		c.Header[k] = append([]string(nil), v...)
	}
	c.Data = m.Data
	return c
}

// DeadLetter publishes a copy of an invalid command on DLQSubject(inv.Tenant,
// inv.Campaign) and waits for its PubAck. The copy has the original body and
// headers (except the reserved Nats-* ones), plus Reason (inv.Reason on one
// line), Original-Subject, Original-Sequence (streamSeq, when not 0),
// Command-Id (see NewDeadLetterMsg) and Nats-Msg-Id = DLQIDPrefix + the command
// id, or "dlq.seq.<streamSeq>" when the id is unknown, so that dead-lettering
// a redelivered command again within the duplicate window stores one copy.
func DeadLetter(ctx context.Context, js jetstream.JetStream, original *nats.Msg, inv *InvalidCommand, streamSeq uint64) error {
	if original == nil || inv == nil {
		return errors.New("dead letter: no message or no reason")
	}
	m := NewDeadLetterMsg(original, inv, streamSeq)
	switch {
	case inv.ID != "":
		m.Header.Set(jetstream.MsgIDHeader, DLQIDPrefix+orUnknown(inv.Tenant)+"."+orUnknown(inv.Campaign)+"."+oneLine(inv.ID, maxCommandIDLen+64))
	case streamSeq > 0:
		m.Header.Set(jetstream.MsgIDHeader, "dlq.seq."+strconv.FormatUint(streamSeq, 10))
	}
	if _, err := js.PublishMsg(ctx, m, jetstream.WithExpectStream(StreamDLQ)); err != nil {
		return fmt.Errorf("dead letter %s to %s: %w", orUnknown(inv.ID), m.Subject, err)
	}
	return nil
}

// DeadLetterReceived is DeadLetter of a command message as the consumer
// received it.
func DeadLetterReceived(ctx context.Context, js jetstream.JetStream, msg jetstream.Msg, inv *InvalidCommand, streamSeq uint64) error {
	return DeadLetter(ctx, js, &nats.Msg{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()}, inv, streamSeq)
}

// DLQIDPrefix starts the Nats-Msg-Id of the dead letter of a command with an
// id: "dlq.id.<tenant>.<campaign>.<command id>". Its own prefix keeps a
// command whose id is, say, "seq.7" from colliding with the dead letter of
// stream sequence 7 (the copies of commands without an id, "dlq.seq.<n>",
// and of the MAX_DELIVERIES handler, "dlq.maxdeliver.<n>"); the tenant and
// campaign keep a publisher of another tenant who knows a command id from
// having its copy dropped as a duplicate of theirs.
const DLQIDPrefix = "dlq.id."

// oneLine makes s fit in a header value: no CR or LF, at most limit bytes
// (cut on a rune boundary).
func oneLine(s string, limit int) string {
	s = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ").Replace(s)
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
