package events_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

const benchTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// BenchmarkDecodeCommand measures DecodeCommand of the two commands a
// campaign's worker decodes most: a create (with start, params and the
// standard workflow resolved) and an advance.
func BenchmarkDecodeCommand(b *testing.B) {
	cases := []struct {
		name, subject, id, body string
		check                   func(c fsm.Command) bool
	}{
		{
			name: "create", subject: "campaign.cmd.acme.spring.create", id: "01JDCREATE",
			body: `{"id":"01JDCREATE","type":"create","tenant_id":"acme","campaign_id":"spring","issued_at":"2026-11-27T10:00:00Z","payload":{"name":"Spring sale","workflow":"standard","params":{"list":"vip","limit":1000},"start":true}}`,
			check: func(c fsm.Command) bool {
				return c.ID == "01JDCREATE" && c.Verb == fsm.Create && c.Tenant == "acme" && c.Campaign == "spring" &&
					c.Create != nil && c.Create.Name == "Spring sale" && c.Create.Start &&
					c.Workflow != nil && c.Workflow.Name == "standard"
			},
		},
		{
			name: "advance", subject: "campaign.cmd.acme.spring.advance", id: "acme.spring.advance.4.0123456789abcdef",
			body: `{"id":"acme.spring.advance.4.0123456789abcdef","type":"advance","tenant_id":"acme","campaign_id":"spring","payload":{"step":1,"run":2,"version":4}}`,
			check: func(c fsm.Command) bool {
				return c.ID == "acme.spring.advance.4.0123456789abcdef" && c.Verb == fsm.Advance && c.Tenant == "acme" && c.Campaign == "spring" &&
					c.Advance != nil && *c.Advance == fsm.AdvancePayload{Step: 1, Run: 2, Version: 4}
			},
		},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			h := hdr("Nats-Msg-Id", tc.id, "traceparent", benchTraceparent)
			data := []byte(tc.body)
			c, err := events.DecodeCommand(tc.subject, h, data, testWorkflows)
			if err != nil || !tc.check(c) {
				b.Fatalf("DecodeCommand = %+v, %v", c, err)
			}
			b.ReportAllocs()
			for b.Loop() {
				_, _ = events.DecodeCommand(tc.subject, h, data, testWorkflows)
			}
		})
	}
}

// BenchmarkNewCommandMsg measures encoding a create-and-start command, as the
// HTTP ingress publishes it.
func BenchmarkNewCommandMsg(b *testing.B) {
	issued := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	env := events.CommandEnvelope{
		ID: "01JDCREATE", Type: string(fsm.Create), TenantID: "acme", CampaignID: "spring", IssuedAt: &issued,
		Payload: []byte(`{"name":"Spring sale","params":{"list":"vip"},"start":true}`),
	}
	m := events.NewCommandMsg(env, benchTraceparent)
	if m.Subject != "campaign.cmd.acme.spring.create" || m.Header.Get("Nats-Msg-Id") != "01JDCREATE" || len(m.Data) == 0 {
		b.Fatalf("NewCommandMsg = %q %v %s", m.Subject, m.Header, m.Data)
	}
	if c, err := events.DecodeCommand(m.Subject, m.Header, m.Data, testWorkflows); err != nil || c.Create == nil || !c.Create.Start {
		b.Fatalf("the message does not decode back: %+v, %v", c, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = events.NewCommandMsg(env, benchTraceparent)
	}
}

// BenchmarkNewEventMsg measures encoding a campaign.step.succeeded event
// with a step output, the worker's most frequent event.
func BenchmarkNewEventMsg(b *testing.B) {
	ev := fsm.Event{
		Seq: 7, Type: fsm.EvStepSucceeded, Time: time.Date(2026, 11, 27, 10, 0, 1, 0, time.UTC), CommandID: "acme.spring.advance.6.0123456789abcdef",
		Data: map[string]any{"step": "segment", "run": 1, "attempt": 1, "duration_ms": int64(42), "output": json.RawMessage(`{"segment":"vip","count":1200}`)},
	}
	m, err := events.NewEventMsg("acme", "spring", ev, benchTraceparent)
	if err != nil || m.Subject != "campaign.evt.acme.spring.step.succeeded" || m.Header.Get("Nats-Msg-Id") != events.EventID("acme", "spring", 7) {
		b.Fatalf("NewEventMsg = %+v, %v", m, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = events.NewEventMsg("acme", "spring", ev, benchTraceparent)
	}
}

// BenchmarkNewDeadLetterMsg measures the DLQ copy of a command that
// DecodeCommand refused (a create with a bad payload).
func BenchmarkNewDeadLetterMsg(b *testing.B) {
	orig := nats.NewMsg("campaign.cmd.acme.spring.create")
	orig.Header.Set("Nats-Msg-Id", "01JDBAD")
	orig.Header.Set("traceparent", benchTraceparent)
	orig.Data = []byte(`{"id":"01JDBAD","type":"create","tenant_id":"acme","campaign_id":"spring","payload":{"name":42}}`)
	_, err := events.DecodeCommand(orig.Subject, orig.Header, orig.Data, testWorkflows)
	var inv *events.InvalidCommand
	if !errors.As(err, &inv) {
		b.Fatalf("DecodeCommand of a bad create: %v, want an *InvalidCommand", err)
	}
	m := events.NewDeadLetterMsg(orig, inv, 12)
	if m.Subject != events.DLQSubject("acme", "spring") || m.Header.Get(events.HdrOriginalSequence) != "12" || m.Header.Get(events.HdrCommandID) != "01JDBAD" || string(m.Data) != string(orig.Data) {
		b.Fatalf("NewDeadLetterMsg = %q %v %s", m.Subject, m.Header, m.Data)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = events.NewDeadLetterMsg(orig, inv, 12)
	}
}
