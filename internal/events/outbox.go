package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// An outbox entry is a message the worker writes to a campaign's outbox in
// the same atomic write as the state change that produced it, and publishes
// after that write (PublishOutbox). The store keeps entries as opaque bytes:
// their format is this package's.
//
// outboxEntry is that format: the JSON the store wrote itself while the
// outbox was not opaque to it, so that an outbox left by an earlier version
// is published as it was written.
type outboxEntry struct {
	Subject string            `json:"subject"`
	Header  map[string]string `json:"header,omitempty"`
	Data    []byte            `json:"data"`
}

// EventEntry is the outbox entry of a campaign's domain event: the message
// NewEventMsg builds, with its errors.
func EventEntry(tenant, campaign string, ev fsm.Event, traceparent string) ([]byte, error) {
	m, err := NewEventMsg(tenant, campaign, ev, traceparent)
	if err != nil {
		return nil, err
	}
	return encodeOutbox(m)
}

// encodeOutbox encodes m as an outbox entry (a header's first value only:
// the messages of this package have one value per header).
func encodeOutbox(m *nats.Msg) ([]byte, error) {
	e := outboxEntry{Subject: m.Subject, Data: m.Data}
	if len(m.Header) > 0 {
		e.Header = make(map[string]string, len(m.Header))
		for k := range m.Header {
			e.Header[k] = m.Header.Get(k)
		}
	}
	return json.Marshal(e)
}

// decodeOutbox decodes what encodeOutbox made.
func decodeOutbox(b []byte) (*nats.Msg, error) {
	var e outboxEntry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, err
	}
	if e.Subject == "" {
		return nil, errors.New("no subject")
	}
	m := &nats.Msg{Subject: e.Subject, Header: make(nats.Header, len(e.Header)), Data: e.Data}
	for k, v := range e.Header {
		m.Header.Set(k, v)
	}
	return m, nil
}

// PublishOutbox publishes one campaign's outbox entries, oldest first: its
// events with PublishEvents (each sequence stored once, however often the
// outbox is published again), then any command entry, with its Nats-Msg-Id
// (an advance, in an outbox written by a version that published its
// advances: deduplicated by the stream and, when stale, dropped by the
// state machine). It returns how many events it stored itself. An entry it
// cannot decode, or an event of another campaign, is an error wrapping
// ErrInvalidEvent, and nothing is published.
func (p *Publisher) PublishOutbox(ctx context.Context, tenant, campaign string, entries [][]byte) (int, error) {
	var evs, cmds []*nats.Msg
	for i, b := range entries {
		m, err := decodeOutbox(b)
		if err != nil {
			return 0, fmt.Errorf("outbox entry %d of %s/%s: %v: %w", i, tenant, campaign, err, ErrInvalidEvent)
		}
		if IsEventSubject(m.Subject) {
			evs = append(evs, m)
		} else {
			cmds = append(cmds, m)
		}
	}
	n := 0
	if len(evs) > 0 {
		var err error
		if n, err = p.PublishEvents(ctx, tenant, campaign, evs); err != nil {
			return n, err
		}
	}
	for _, m := range cmds {
		if _, err := p.js.PublishMsg(ctx, m); err != nil {
			return n, fmt.Errorf("publish %s: %w", m.Subject, err)
		}
	}
	return n, nil
}
