package client_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.yaml.in/yaml/v3"

	"github.com/campaign-orchestrator/orchestrator/client"
	"github.com/campaign-orchestrator/orchestrator/docs"
	"github.com/campaign-orchestrator/orchestrator/internal/deadletter"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/events/natstest"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/streams"
)

// schemaFile is one docs/schemas file as data.
type schemaFile struct {
	Title    string            `json:"title"`
	Examples []json.RawMessage `json:"examples"`
}

func readSchemaFile(t *testing.T, name string) schemaFile {
	t.Helper()
	b, err := fs.ReadFile(docs.Schemas, name)
	if err != nil {
		t.Fatal(err)
	}
	var f schemaFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return f
}

// TestSchemaExamplesDecode feeds every schema's examples to the service's
// decoders (events.DecodeCommand, events.ParseEvent, the dead-letter
// reader) and to this package's, after checking that each validates
// against its own schema.
func TestSchemaExamplesDecode(t *testing.T) {
	names, err := fs.Glob(docs.Schemas, "*.json")
	if err != nil {
		t.Fatal(err)
	}
	decoded := 0
	for _, name := range names {
		if name == "common.json" {
			continue // definitions only
		}
		f := readSchemaFile(t, name)
		if len(f.Examples) == 0 {
			t.Errorf("%s has no examples", name)
		}
		if name == "dead-letter.json" {
			var d struct {
				Defs struct {
					Entry schemaFile `json:"entry"`
				} `json:"$defs"`
			}
			b, _ := fs.ReadFile(docs.Schemas, name)
			if err := json.Unmarshal(b, &d); err != nil || len(d.Defs.Entry.Examples) == 0 {
				t.Errorf("dead-letter.json: no #/$defs/entry examples (%v)", err)
			}
			for _, ex := range d.Defs.Entry.Examples {
				if err := validate(t, "dead-letter.json#/$defs/entry", []byte(ex)); err != nil {
					t.Errorf("dead-letter.json#/$defs/entry example: %v", err)
				}
			}
		}
		for i, ex := range f.Examples {
			t.Run(fmt.Sprintf("%s/%d", strings.TrimSuffix(name, ".json"), i), func(t *testing.T) {
				if err := validate(t, name, []byte(ex)); err != nil {
					t.Fatalf("the example does not validate against its schema: %v\n%s", err, ex)
				}
				decodeExample(t, name, f.Title, ex)
				decoded++
			})
		}
	}
	if decoded < 25 {
		t.Fatalf("only %d examples decoded", decoded)
	}
}

// decodeExample feeds one example of the schema file name to its decoder.
func decodeExample(t *testing.T, name, title string, ex json.RawMessage) {
	t.Helper()
	switch {
	case name == "command.json":
		var env events.CommandEnvelope
		if err := json.Unmarshal(ex, &env); err != nil {
			t.Fatal(err)
		}
		decodeCommand(t, env.TenantID, env.CampaignID, fsm.Verb(env.Type), nil, ex)
	case name == "command-headers.json":
		h := nats.Header{}
		var m map[string]string
		if err := json.Unmarshal(ex, &m); err != nil {
			t.Fatal(err)
		}
		for k, v := range m {
			h.Set(k, v)
		}
		cmd := decodeCommand(t, "acme", "c", fsm.Start, h, []byte(`{"type":"start","tenant_id":"acme","campaign_id":"c"}`))
		if cmd.ID != m["Nats-Msg-Id"] {
			t.Fatalf("command id %q, want the header's %q", cmd.ID, m["Nats-Msg-Id"])
		}
	case strings.HasPrefix(name, "payload-"):
		verbs := []fsm.Verb{fsm.Start, fsm.Pause, fsm.Resume, fsm.Cancel, fsm.Retry}
		switch name {
		case "payload-create.json":
			verbs = []fsm.Verb{fsm.Create}
		case "payload-advance.json":
			verbs = []fsm.Verb{fsm.Advance}
		}
		for _, v := range verbs {
			body := fmt.Sprintf(`{"id":"x-1","type":%q,"tenant_id":"acme","campaign_id":"c","payload":%s}`, v, ex)
			decodeCommand(t, "acme", "c", v, nil, []byte(body))
		}
	case name == "cloud-event.json":
		decodeEvent(t, ex)
	case strings.HasPrefix(name, "data-"):
		typ := strings.TrimSuffix(title, " data")
		if !slices.Contains(client.EventTypes, typ) {
			t.Fatalf("%s: title %q does not name an event type", name, title)
		}
		ce := fmt.Sprintf(`{"specversion":"1.0","id":"acme.c.1","source":"campaign-orchestrator","type":%q,"subject":"acme/c","time":"2026-11-27T10:00:00.000Z","datacontenttype":"application/json","tenantid":"acme","campaignid":"c","sequence":"00000000000000000001","commandid":"x-1","data":%s}`, typ, ex)
		if err := validate(t, "cloud-event.json", []byte(ce)); err != nil {
			t.Fatalf("the example in an event does not validate: %v", err)
		}
		decodeEvent(t, []byte(ce))
	case name == "event-headers.json":
		var m map[string]string
		if err := json.Unmarshal(ex, &m); err != nil {
			t.Fatal(err)
		}
		n, err := strconv.ParseUint(m["Nats-Msg-Id"][strings.LastIndexByte(m["Nats-Msg-Id"], '.')+1:], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		if id, err := client.EventID(m["Tenant-Id"], m["Campaign-Id"], n); err != nil || id != m["Nats-Msg-Id"] {
			t.Fatalf("Nats-Msg-Id %q is not the event id of %s/%s: %q %v", m["Nats-Msg-Id"], m["Tenant-Id"], m["Campaign-Id"], id, err)
		}
	case name == "dead-letter.json":
		decodeDeadLetter(t, ex)
	default:
		t.Fatalf("no decoder for %s", name)
	}
}

func decodeCommand(t *testing.T, tenant, campaign string, verb fsm.Verb, h nats.Header, body []byte) fsm.Command {
	t.Helper()
	if h == nil {
		h = nats.Header{}
	}
	cmd, err := events.DecodeCommand(events.CommandSubject(tenant, campaign, verb), h, body, anyWorkflow{})
	if err != nil {
		t.Fatalf("the service does not decode %s: %v", body, err)
	}
	return cmd
}

// decodeEvent decodes a CloudEvent with the service's decoder and this
// package's, its data strictly into its type, which encodes back to the
// same JSON.
func decodeEvent(t *testing.T, b []byte) {
	t.Helper()
	if _, err := events.ParseEvent(b); err != nil {
		t.Fatalf("the service does not decode %s: %v", b, err)
	}
	ev, err := client.ParseEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ev.Payload()
	if err != nil {
		t.Fatal(err)
	}
	again, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var want, got any
	_ = json.Unmarshal(ev.Data(), &want)
	_ = json.Unmarshal(again, &got)
	if !jsonEqual(want, got) {
		t.Fatalf("data %s decoded to %T, which encodes to %s", ev.Data(), d, again)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// decodeDeadLetter stores a dead letter with the example's headers in a
// CAMPAIGN_DLQ of its own and reads it back with the service's reader.
func decodeDeadLetter(t *testing.T, ex json.RawMessage) {
	t.Helper()
	var m map[string]string
	if err := json.Unmarshal(ex, &m); err != nil {
		t.Fatal(err)
	}
	srv := natstest.Start(t)
	_, js := natstest.Connect(t, srv)
	ctx := ctxT(t, 20*time.Second)
	specs, err := events.LoadSpecs(streams.FS)
	if err != nil {
		t.Fatal(err)
	}
	if err := specs.Apply(ctx, js, events.Overrides{}); err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg("campaign.dlq.acme.ghost")
	for k, v := range m {
		msg.Header.Set(k, v)
	}
	msg.Data = []byte(`{"id":"ghost-1","type":"start","tenant_id":"acme","campaign_id":"ghost"}`)
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	list, err := deadletter.List(ctx, js)
	if err != nil || len(list) != 1 {
		t.Fatalf("dead letters: %v %v", list, err)
	}
	e := list[0]
	if e.Reason != m["Reason"] || e.OriginalSubject != m["Original-Subject"] || fmt.Sprint(e.OriginalSeq) != cmpOr(m["Original-Sequence"], "0") {
		t.Fatalf("read back %+v from %v", e, m)
	}
	if id := m["Command-Id"]; id != "" && e.CommandID != id {
		t.Fatalf("command id %q, want %q", e.CommandID, id)
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// asyncAPIDoc is what the tests read of docs/asyncapi.yaml.
type asyncAPIDoc struct {
	Channels map[string]struct {
		Address  string                       `yaml:"address"`
		Messages map[string]map[string]string `yaml:"messages"`
	} `yaml:"channels"`
	Components struct {
		Messages map[string]struct {
			Name    string            `yaml:"name"`
			Headers map[string]string `yaml:"headers"`
			Payload struct {
				Ref   string `yaml:"$ref"`
				AllOf []struct {
					Ref        string                       `yaml:"$ref"`
					Properties map[string]map[string]string `yaml:"properties"`
				} `yaml:"allOf"`
			} `yaml:"payload"`
			Examples []struct {
				Headers map[string]string `yaml:"headers"`
				Payload any               `yaml:"payload"`
			} `yaml:"examples"`
		} `yaml:"messages"`
	} `yaml:"components"`
}

// TestAsyncAPIMatchesTheCode checks docs/asyncapi.yaml against the code:
// one message per verb and per event type, each event's data schema the
// one of its type, the channels' addresses the service's subjects, and
// every message example valid against its schemas and decoded by the
// service. (The official parser checks the document itself: test/asyncapi.)
func TestAsyncAPIMatchesTheCode(t *testing.T) {
	var doc asyncAPIDoc
	if err := yaml.Unmarshal(docs.AsyncAPI, &doc); err != nil {
		t.Fatal(err)
	}
	wantAddr := map[string]string{
		"commands":    "campaign.cmd.{tenant}.{campaign}.{verb}",
		"events":      "campaign.evt.{tenant}.{campaign}.{type}",
		"deadLetters": "campaign.dlq.{tenant}.{campaign}",
	}
	for id, addr := range wantAddr {
		if got := doc.Channels[id].Address; got != addr {
			t.Errorf("channel %s: address %q, want %q", id, got, addr)
		}
	}
	// The subjects the helpers build fit the addresses.
	subj, _ := client.CommandSubject("acme", "c", client.VerbStart)
	esubj, _ := client.EventSubject("acme", "c", client.TypeStepSucceeded)
	dsubj, _ := client.DLQSubject("acme", "c")
	if subj != "campaign.cmd.acme.c.start" || esubj != "campaign.evt.acme.c.step.succeeded" || dsubj != "campaign.dlq.acme.c" {
		t.Errorf("subjects %s %s %s", subj, esubj, dsubj)
	}
	var cmdMsgs, evNames []string
	for k := range doc.Channels["commands"].Messages {
		cmdMsgs = append(cmdMsgs, k)
	}
	for _, v := range append(client.Verbs, "advance") {
		if !slices.Contains(cmdMsgs, string(v)) {
			t.Errorf("no message for command %s", v)
		}
	}
	if len(cmdMsgs) != len(client.Verbs)+1 {
		t.Errorf("command messages %v", cmdMsgs)
	}
	for id, m := range doc.Components.Messages {
		payloadRef := m.Payload.Ref
		if len(m.Payload.AllOf) > 0 {
			payloadRef = m.Payload.AllOf[0].Ref
		}
		headerRef := strings.TrimPrefix(m.Headers["$ref"], "schemas/")
		if len(m.Examples) == 0 {
			t.Errorf("message %s has no example", id)
		}
		switch payloadRef {
		case "schemas/command.json":
			if c := m.Payload.AllOf[1].Properties["type"]["const"]; c != m.Name || c != id {
				t.Errorf("message %s: type %q", id, c)
			}
		case "schemas/cloud-event.json":
			evNames = append(evNames, m.Name)
			props := m.Payload.AllOf[1].Properties
			if props["type"]["const"] != m.Name {
				t.Errorf("message %s: type %q, name %q", id, props["type"]["const"], m.Name)
			}
			data := strings.TrimPrefix(props["data"]["$ref"], "schemas/")
			if f := readSchemaFile(t, data); f.Title != m.Name+" data" {
				t.Errorf("message %s: data %s is %q", id, data, f.Title)
			}
		case "":
			if id != "deadLetter" {
				t.Errorf("message %s has no payload schema", id)
			}
		default:
			t.Errorf("message %s: payload %s", id, payloadRef)
		}
		for i, ex := range m.Examples {
			if err := validate(t, headerRef, ex.Headers); err != nil {
				t.Errorf("message %s example %d: headers: %v", id, i, err)
			}
			body, err := json.Marshal(ex.Payload)
			if err != nil {
				t.Fatal(err)
			}
			switch payloadRef {
			case "schemas/command.json":
				if err := validate(t, "command.json", body); err != nil {
					t.Errorf("message %s example %d: %v", id, i, err)
				}
				h := nats.Header{}
				for k, v := range ex.Headers {
					h.Set(k, v)
				}
				decodeCommand(t, "acme", "spring-sale", fsm.Verb(id), h, body)
			case "schemas/cloud-event.json":
				if err := validate(t, "cloud-event.json", body); err != nil {
					t.Errorf("message %s example %d: %v", id, i, err)
				}
				decodeEvent(t, body)
			}
		}
	}
	slices.Sort(evNames)
	want := slices.Clone(client.EventTypes)
	slices.Sort(want)
	if !slices.Equal(evNames, want) {
		t.Errorf("event messages %v, want %v", evNames, want)
	}
}
