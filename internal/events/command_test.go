package events_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

func hdr(kv ...string) nats.Header {
	h := nats.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func TestDecodeCommand(t *testing.T) {
	const subj = "campaign.cmd.acme.spring.start"
	idHdr := hdr("Nats-Msg-Id", "01HDR")
	tests := []struct {
		name    string
		subject string
		header  nats.Header
		body    string
		want    fsm.Command // checked when wantErr == ""
		check   func(t *testing.T, c fsm.Command)
		wantErr string // substring of InvalidCommand.Reason
		wantInv events.InvalidCommand
	}{
		{
			name: "create with header id", subject: "campaign.cmd.acme.spring.create", header: idHdr,
			body: `{"id":"01BODY","type":"create","tenant_id":"acme","campaign_id":"spring","issued_at":"2026-11-27T10:00:00Z","payload":{"name":"Spring","workflow":"short","params":{"a":1},"start":true}}`,
			check: func(t *testing.T, c fsm.Command) {
				if c.ID != "01HDR" || c.Verb != fsm.Create || c.Tenant != "acme" || c.Campaign != "spring" {
					t.Errorf("command = %+v", c)
				}
				if c.Create == nil || c.Create.Name != "Spring" || c.Create.Workflow != "short" || !c.Create.Start || string(c.Create.Params) != `{"a":1}` {
					t.Errorf("create payload = %+v", c.Create)
				}
				if c.Workflow == nil || c.Workflow.Name != "short" || len(c.Workflow.Steps) != 1 {
					t.Errorf("workflow = %+v", c.Workflow)
				}
			},
		},
		{
			name: "create default workflow, body id", subject: "campaign.cmd.acme.spring.create",
			body: `{"id":"01BODY","type":"create","tenant_id":"acme","campaign_id":"spring","payload":{"name":"Spring"}}`,
			check: func(t *testing.T, c fsm.Command) {
				if c.ID != "01BODY" {
					t.Errorf("id = %q, want the body's", c.ID)
				}
				if c.Create == nil || c.Create.Workflow != "standard" || c.Workflow == nil || c.Workflow.Name != "standard" {
					t.Errorf("create = %+v, workflow = %+v", c.Create, c.Workflow)
				}
			},
		},
		{
			name: "start without payload", subject: subj, header: idHdr,
			body: `{"id":"01HDR","type":"start","tenant_id":"acme","campaign_id":"spring"}`,
			want: fsm.Command{ID: "01HDR", Verb: fsm.Start, Tenant: "acme", Campaign: "spring"},
		},
		{
			name: "start with empty payload", subject: subj, header: idHdr,
			body: `{"id":"","type":"start","tenant_id":"acme","campaign_id":"spring","payload":{}}`,
			want: fsm.Command{ID: "01HDR", Verb: fsm.Start, Tenant: "acme", Campaign: "spring"},
		},
		{
			name: "cancel with a free-form payload", subject: "campaign.cmd.acme.spring.cancel", header: idHdr,
			body: `{"type":"cancel","tenant_id":"acme","campaign_id":"spring","payload":{"reason":"budget cut"}}`,
			want: fsm.Command{ID: "01HDR", Verb: fsm.Cancel, Tenant: "acme", Campaign: "spring"},
		},
		{
			name: "cancel with null payload", subject: "campaign.cmd.acme.spring.cancel", header: idHdr,
			body: `{"type":"cancel","tenant_id":"acme","campaign_id":"spring","payload":null}`,
			want: fsm.Command{ID: "01HDR", Verb: fsm.Cancel, Tenant: "acme", Campaign: "spring"},
		},
		{
			name: "advance", subject: "campaign.cmd.acme.spring.advance", header: hdr("Nats-Msg-Id", "acme.spring.advance.4"),
			body: `{"id":"acme.spring.advance.4","type":"advance","tenant_id":"acme","campaign_id":"spring","payload":{"step":1,"run":2,"version":4}}`,
			want: fsm.Command{ID: "acme.spring.advance.4", Verb: fsm.Advance, Tenant: "acme", Campaign: "spring", Advance: &fsm.AdvancePayload{Step: 1, Run: 2, Version: 4}},
		},

		{name: "bad JSON", subject: subj, header: idHdr, body: `{"id":`, wantErr: "bad JSON",
			wantInv: events.InvalidCommand{ID: "01HDR", Tenant: "acme", Campaign: "spring", Verb: "start"}},
		{name: "empty body", subject: subj, header: idHdr, body: ``, wantErr: "bad JSON"},
		{name: "null body", subject: subj, header: idHdr, body: `null`, wantErr: "bad JSON"},
		{name: "array body", subject: subj, header: idHdr, body: `[]`, wantErr: "bad JSON"},
		{name: "trailing data", subject: subj, header: idHdr, body: `{"type":"start","tenant_id":"acme","campaign_id":"spring"} {}`, wantErr: "trailing data"},
		{name: "bad issued_at", subject: subj, header: idHdr, body: `{"type":"start","tenant_id":"acme","campaign_id":"spring","issued_at":"yesterday"}`, wantErr: "bad JSON"},
		{name: "missing id", subject: subj, body: `{"type":"start","tenant_id":"acme","campaign_id":"spring"}`, wantErr: "missing command id",
			wantInv: events.InvalidCommand{Tenant: "acme", Campaign: "spring", Verb: "start"}},
		{name: "id too long", subject: subj, header: hdr("Nats-Msg-Id", strings.Repeat("i", 300)), body: `{"type":"start","tenant_id":"acme","campaign_id":"spring"}`, wantErr: "longer than"},
		{name: "tenant mismatch", subject: subj, header: idHdr, body: `{"type":"start","tenant_id":"other","campaign_id":"spring"}`, wantErr: `tenant_id "other" does not match the subject's tenant "acme"`},
		{name: "tenant missing", subject: subj, header: idHdr, body: `{"type":"start","campaign_id":"spring"}`, wantErr: `tenant_id "" does not match`},
		{name: "campaign mismatch", subject: subj, header: idHdr, body: `{"type":"start","tenant_id":"acme","campaign_id":"autumn"}`, wantErr: `campaign_id "autumn" does not match the subject's campaign "spring"`},
		{name: "type mismatch", subject: subj, header: idHdr, body: `{"type":"cancel","tenant_id":"acme","campaign_id":"spring"}`, wantErr: `type "cancel" does not match the subject's verb "start"`},
		{name: "unknown verb", subject: "campaign.cmd.acme.spring.explode", header: idHdr, body: `{"type":"explode","tenant_id":"acme","campaign_id":"spring"}`, wantErr: `unknown verb "explode"`,
			wantInv: events.InvalidCommand{ID: "01HDR", Tenant: "acme", Campaign: "spring", Verb: "explode"}},
		{name: "unknown workflow", subject: "campaign.cmd.acme.spring.create", header: idHdr, body: `{"type":"create","tenant_id":"acme","campaign_id":"spring","payload":{"name":"n","workflow":"nope"}}`, wantErr: `unknown workflow "nope"`},
		{name: "unknown field", subject: subj, header: idHdr, body: `{"type":"start","tenant_id":"acme","campaign_id":"spring","priority":1}`, wantErr: `unknown field "priority"`},
		{name: "unknown field in create payload", subject: "campaign.cmd.acme.spring.create", header: idHdr, body: `{"type":"create","tenant_id":"acme","campaign_id":"spring","payload":{"name":"n","colour":"red"}}`, wantErr: `unknown field "colour" in payload`},
		{name: "start payload not an object", subject: subj, header: idHdr, body: `{"type":"start","tenant_id":"acme","campaign_id":"spring","payload":3}`, wantErr: "payload must be a JSON object"},
		{name: "create without payload", subject: "campaign.cmd.acme.spring.create", header: idHdr, body: `{"type":"create","tenant_id":"acme","campaign_id":"spring"}`, wantErr: "missing payload"},
		{name: "create without name", subject: "campaign.cmd.acme.spring.create", header: idHdr, body: `{"type":"create","tenant_id":"acme","campaign_id":"spring","payload":{"workflow":"short"}}`, wantErr: "name is required"},
		{name: "create params not object", subject: "campaign.cmd.acme.spring.create", header: idHdr, body: `{"type":"create","tenant_id":"acme","campaign_id":"spring","payload":{"name":"n","params":[1]}}`, wantErr: "params must be a JSON object"},
		{name: "advance without payload", subject: "campaign.cmd.acme.spring.advance", header: idHdr, body: `{"type":"advance","tenant_id":"acme","campaign_id":"spring"}`, wantErr: "advance: missing payload"},
		{name: "advance version 0", subject: "campaign.cmd.acme.spring.advance", header: idHdr, body: `{"type":"advance","tenant_id":"acme","campaign_id":"spring","payload":{"step":0,"run":1}}`, wantErr: "version > 0"},
		{name: "bad campaign token", subject: "campaign.cmd.acme.a*.start", header: idHdr, body: `{"type":"start","tenant_id":"acme","campaign_id":"a*"}`, wantErr: `invalid campaign token "a*"`,
			wantInv: events.InvalidCommand{ID: "01HDR", Tenant: "acme", Campaign: "", Verb: "start"}},
		{name: "bad tenant token", subject: "campaign.cmd." + strings.Repeat("t", 65) + ".spring.start", header: idHdr, body: `{}`, wantErr: "invalid tenant token",
			wantInv: events.InvalidCommand{ID: "01HDR", Tenant: "", Campaign: "spring", Verb: "start"}},
		{name: "unicode tenant", subject: "campaign.cmd.café.spring.start", header: idHdr, body: `{}`, wantErr: "invalid tenant token"},
		{name: "too many tokens", subject: "campaign.cmd.acme.spring.x.start", header: idHdr, body: `{}`, wantErr: "not a command subject"},
		{name: "too few tokens", subject: "campaign.cmd.acme.start", header: idHdr, body: `{}`, wantErr: "not a command subject"},
		{name: "not a command subject", subject: "campaign.evt.acme.spring.start", header: idHdr, body: `{}`, wantErr: "not a command subject"},
		{name: "empty token", subject: "campaign.cmd.acme..start", header: idHdr, body: `{}`, wantErr: `invalid campaign token ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := events.DecodeCommand(tt.subject, tt.header, []byte(tt.body), testWorkflows)
			if tt.wantErr != "" {
				var inv *events.InvalidCommand
				if !errors.As(err, &inv) {
					t.Fatalf("err = %v (%T), want *InvalidCommand", err, err)
				}
				if !strings.Contains(inv.Reason, tt.wantErr) {
					t.Errorf("Reason = %q, want it to contain %q", inv.Reason, tt.wantErr)
				}
				if tt.wantInv != (events.InvalidCommand{}) {
					inv2 := *inv
					inv2.Reason = ""
					if inv2 != tt.wantInv {
						t.Errorf("InvalidCommand = %+v, want %+v", inv2, tt.wantInv)
					}
				}
				if !strings.Contains(err.Error(), inv.Reason) {
					t.Errorf("Error() = %q does not hold the reason", err.Error())
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeCommand: %v", err)
			}
			if tt.check != nil {
				tt.check(t, got)
				return
			}
			gotJSON, _ := json.Marshal(got)
			wantJSON, _ := json.Marshal(tt.want)
			if string(gotJSON) != string(wantJSON) {
				t.Errorf("command = %s, want %s", gotJSON, wantJSON)
			}
		})
	}
}

func TestNewCommandMsgRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	env := events.CommandEnvelope{ID: "01X", Type: "create", TenantID: "acme", CampaignID: "c1", IssuedAt: &at,
		Payload: json.RawMessage(`{"name":"n","start":true}`)}
	msg := events.NewCommandMsg(env, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	if msg.Subject != "campaign.cmd.acme.c1.create" {
		t.Errorf("subject = %q", msg.Subject)
	}
	if got := msg.Header.Get("Nats-Msg-Id"); got != "01X" {
		t.Errorf("Nats-Msg-Id = %q", got)
	}
	if got := msg.Header.Get("traceparent"); got == "" {
		t.Errorf("no traceparent header")
	}
	cmd, err := events.DecodeCommand(msg.Subject, msg.Header, msg.Data, testWorkflows)
	if err != nil {
		t.Fatalf("DecodeCommand(NewCommandMsg): %v", err)
	}
	if cmd.ID != "01X" || cmd.Create == nil || !cmd.Create.Start || cmd.Workflow == nil {
		t.Errorf("command = %+v", cmd)
	}

	if m := events.NewCommandMsg(events.CommandEnvelope{ID: "01Y", Type: "pause", TenantID: "acme", CampaignID: "c1"}, ""); m.Header.Get("traceparent") != "" {
		t.Errorf("traceparent set without one")
	}

	// An invalid payload is not silently changed: the command is rejected as bad JSON.
	bad := events.NewCommandMsg(events.CommandEnvelope{ID: "01Z", Type: "start", TenantID: "acme", CampaignID: "c1", Payload: json.RawMessage(`{oops`)}, "")
	_, err = events.DecodeCommand(bad.Subject, bad.Header, bad.Data, testWorkflows)
	var inv *events.InvalidCommand
	if !errors.As(err, &inv) || !strings.Contains(inv.Reason, "bad JSON") || inv.ID != "01Z" {
		t.Errorf("invalid payload: err = %v, want bad JSON with id 01Z", err)
	}
}

func TestAdvanceMsg(t *testing.T) {
	c := fsm.Campaign{Tenant: "acme", ID: "c1", State: fsm.Running, Step: 1, AdvanceVersion: 9,
		Workflow: fsm.Workflow{Name: "standard", Steps: []fsm.Step{{Name: "validate"}, {Name: "segment"}}},
		Runs:     map[string]int{"validate": 1, "segment": 3}}
	msg := events.AdvanceMsg(c, "tp")
	if id := msg.Header.Get("Nats-Msg-Id"); msg.Subject != "campaign.cmd.acme.c1.advance" || !strings.HasPrefix(id, "acme.c1.advance.9.") || len(id) != len("acme.c1.advance.9.")+16 || msg.Header.Get("traceparent") != "tp" {
		t.Fatalf("advance msg = %q %v", msg.Subject, msg.Header)
	}
	cmd, err := events.DecodeCommand(msg.Subject, msg.Header, msg.Data, testWorkflows)
	if err != nil {
		t.Fatalf("DecodeCommand(AdvanceMsg): %v", err)
	}
	if want := (fsm.AdvancePayload{Step: 1, Run: 3, Version: 9}); cmd.Advance == nil || *cmd.Advance != want {
		t.Errorf("advance = %+v, want %+v", cmd.Advance, want)
	}
	// A step that never ran has run 1; two schedules of one version get
	// ids nobody can guess in advance.
	c.Runs = nil
	a, b := events.AdvanceMsg(c, ""), events.AdvanceMsg(c, "")
	if a.Header.Get("Nats-Msg-Id") == b.Header.Get("Nats-Msg-Id") {
		t.Errorf("AdvanceMsg ids repeat: %s", a.Header.Get("Nats-Msg-Id"))
	}
	cmd, err = events.DecodeCommand(a.Subject, a.Header, a.Data, testWorkflows)
	if err != nil || cmd.Advance.Run != 1 {
		t.Errorf("advance of a never-run step: %+v, %v", cmd.Advance, err)
	}
	// Advance's command is what decoding its message gives.
	own, m := events.Advance(c, "tp")
	dec, err := events.DecodeCommand(m.Subject, m.Header, m.Data, testWorkflows)
	if err != nil || !reflect.DeepEqual(own, dec) {
		t.Errorf("Advance = %+v; its message decodes as %+v, %v", own, dec, err)
	}
}
