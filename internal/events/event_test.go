package events_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

func TestNewEventMsg(t *testing.T) {
	zone := time.FixedZone("CET", 3600)
	ev := fsm.Event{Seq: 7, Type: fsm.EvStepSucceeded, CommandID: "01CMD", Fence: 12,
		Time: time.Date(2026, 11, 27, 11, 0, 1, 120_000_000, zone),
		Data: map[string]any{"step": "segment", "attempt": 1, "duration_ms": 42, "output": json.RawMessage(`{}`)}}
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	msg, err := events.NewEventMsg("acme", "spring-sale", ev, tp)
	if err != nil {
		t.Fatalf("NewEventMsg: %v", err)
	}
	if want := "campaign.evt.acme.spring-sale.step.succeeded"; msg.Subject != want {
		t.Errorf("subject = %q, want %q", msg.Subject, want)
	}
	for h, want := range map[string]string{
		"Nats-Msg-Id": "acme.spring-sale.7", "Campaign-Id": "spring-sale", "Tenant-Id": "acme",
		"Command-Id": "01CMD", "traceparent": tp,
	} {
		if got := msg.Header.Get(h); got != want {
			t.Errorf("header %s = %q, want %q", h, got, want)
		}
	}

	var body map[string]any
	if err := json.Unmarshal(msg.Data, &body); err != nil {
		t.Fatalf("body: %v", err)
	}
	for k, want := range map[string]any{
		"specversion": "1.0", "id": "acme.spring-sale.7", "source": "campaign-orchestrator",
		"type": "campaign.step.succeeded", "subject": "acme/spring-sale",
		"time": "2026-11-27T10:00:01.120Z", "datacontenttype": "application/json",
		"tenantid": "acme", "campaignid": "spring-sale", "sequence": "00000000000000000007",
		"commandid": "01CMD", "fence": "12", "traceparent": tp,
	} {
		if body[k] != want {
			t.Errorf("body %s = %v, want %v", k, body[k], want)
		}
	}
	data, _ := body["data"].(map[string]any)
	if data["step"] != "segment" || data["duration_ms"] != float64(42) {
		t.Errorf("data = %v", body["data"])
	}

	ce, err := events.ParseEvent(msg.Data)
	if err != nil {
		t.Fatalf("ParseEvent: %v", err)
	}
	if ce.Seq() != 7 || ce.Type != fsm.EvStepSucceeded || !ce.Time.Equal(ev.Time) || ce.CommandID != "01CMD" || ce.FenceToken() != 12 {
		t.Errorf("parsed = %+v", ce)
	}

	// Whole seconds still carry milliseconds; no traceparent: no header, no field.
	msg, err = events.NewEventMsg("acme", "c1", fsm.Event{Seq: 1, Type: fsm.EvCreated, CommandID: "x", Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}, "")
	if err != nil {
		t.Fatalf("NewEventMsg: %v", err)
	}
	body = nil
	_ = json.Unmarshal(msg.Data, &body)
	if body["time"] != "2026-01-02T03:04:05.000Z" {
		t.Errorf("time = %v", body["time"])
	}
	if _, ok := body["traceparent"]; ok || msg.Header.Get("traceparent") != "" {
		t.Errorf("traceparent present without one")
	}
	if _, ok := body["fence"]; ok {
		t.Errorf("fence present without one: %v", body["fence"])
	}
	if msg.Subject != "campaign.evt.acme.c1.created" {
		t.Errorf("subject = %q", msg.Subject)
	}
}

func TestNewEventMsgInvalid(t *testing.T) {
	ok := fsm.Event{Seq: 1, Type: fsm.EvCreated, Time: time.Now()}
	tests := []struct {
		name             string
		tenant, campaign string
		ev               fsm.Event
	}{
		{"bad tenant", "a.b", "c", ok},
		{"bad campaign", "t", "*", ok},
		{"sequence 0", "t", "c", fsm.Event{Type: fsm.EvCreated}},
		{"type without prefix", "t", "c", fsm.Event{Seq: 1, Type: "created"}},
		{"type with wildcard", "t", "c", fsm.Event{Seq: 1, Type: "campaign.step.>"}},
		{"type with empty token", "t", "c", fsm.Event{Seq: 1, Type: "campaign.step..x"}},
		{"bare prefix", "t", "c", fsm.Event{Seq: 1, Type: "campaign."}},
	}
	for _, tt := range tests {
		if _, err := events.NewEventMsg(tt.tenant, tt.campaign, tt.ev, ""); !errors.Is(err, events.ErrInvalidEvent) {
			t.Errorf("%s: err = %v, want ErrInvalidEvent", tt.name, err)
		}
	}
}

func TestParseEventInvalid(t *testing.T) {
	for _, body := range []string{`nope`, `{"specversion":"0.3","sequence":"1"}`, `{"specversion":"1.0","sequence":"x"}`, `{"specversion":"1.0"}`} {
		if _, err := events.ParseEvent([]byte(body)); !errors.Is(err, events.ErrInvalidEvent) {
			t.Errorf("ParseEvent(%s): err = %v, want ErrInvalidEvent", body, err)
		}
	}
}
