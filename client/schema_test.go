package client_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/campaign-orchestrator/orchestrator/client"
	"github.com/campaign-orchestrator/orchestrator/docs"
	"github.com/campaign-orchestrator/orchestrator/internal/deadletter"
)

// schemaBase is where the schemas are loaded from: docs.Schemas, under a
// base URL of their own (their $refs are relative).
const schemaBase = "file:///docs/schemas/"

var (
	schemasMu  sync.Mutex
	compiler   *jsonschema.Compiler
	schemaSet  = map[string]*jsonschema.Schema{}
	schemaList []string
)

// schemas compiles every docs/schemas/*.json with a JSON Schema 2020-12
// validator that asserts formats, and returns their names.
func schemas(t testing.TB) []string {
	t.Helper()
	schemasMu.Lock()
	defer schemasMu.Unlock()
	if compiler != nil {
		return schemaList
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	names, err := fs.Glob(docs.Schemas, "*.json")
	if err != nil || len(names) == 0 {
		t.Fatalf("no schemas: %v", err)
	}
	for _, n := range names {
		b, err := fs.ReadFile(docs.Schemas, n)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if err := c.AddResource(schemaBase+n, doc); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
	for _, n := range names {
		sch, err := c.Compile(schemaBase + n)
		if err != nil {
			t.Fatalf("compile %s: %v", n, err)
		}
		schemaSet[n] = sch
	}
	compiler, schemaList = c, names
	return names
}

// validate checks v (JSON bytes, or a value to encode) against the schema
// name: a file of docs/schemas, or a part of one ("dead-letter.json#/$defs/entry").
func validate(t testing.TB, name string, v any) error {
	t.Helper()
	schemas(t)
	schemasMu.Lock()
	sch, ok := schemaSet[name]
	if !ok {
		var err error
		if sch, err = compiler.Compile(schemaBase + name); err != nil {
			schemasMu.Unlock()
			t.Fatalf("no schema %s: %v", name, err)
		}
		schemaSet[name] = sch
	}
	schemasMu.Unlock()
	b, ok := v.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	return sch.Validate(inst)
}

// headerObject is a message's headers as the schemas see them: each key's
// first value.
func headerObject(h nats.Header) map[string]string {
	out := map[string]string{}
	for k, vs := range h {
		if len(vs) > 0 {
			out[k] = vs[0]
		}
	}
	return out
}

// recorder keeps every message on campaign.> as a core NATS subscriber sees
// it: the commands as published (the service's advances included), the
// events and the dead letters.
type recorder struct {
	sub  *nats.Subscription
	msgs chan *nats.Msg
}

func record(t *testing.T, nc *nats.Conn) *recorder {
	t.Helper()
	r := &recorder{msgs: make(chan *nats.Msg, 1<<14)}
	sub, err := nc.ChanSubscribe("campaign.>", r.msgs)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	r.sub = sub
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return r
}

// kind names a message's kind: command:<verb>, event:<type>, deadletter.
func kind(m *nats.Msg) string {
	switch {
	case strings.HasPrefix(m.Subject, "campaign.cmd."):
		return "command:" + m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	case strings.HasPrefix(m.Subject, "campaign.evt."):
		var ev struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(m.Data, &ev)
		return "event:" + ev.Type
	case strings.HasPrefix(m.Subject, "campaign.dlq."):
		return "deadletter"
	}
	return "other:" + m.Subject
}

// invalidPrefix marks the commands the test publishes invalid on purpose:
// they must not validate, and their dead letters must.
const invalidPrefix = "invalid-"

// TestRealTrafficMatchesSchemas runs campaigns through the whole service —
// over NATS and HTTP, a step that resets its connection once, one that
// fails, pause, resume, cancel, retry, a command in the wrong state, an
// invalid one and one for a campaign that does not exist — records every
// message on campaign.>, validates each against its schema, and checks that
// every kind of message was seen.
func TestRealTrafficMatchesSchemas(t *testing.T) {
	nc, js := connect(t)
	rec := record(t, nc)
	c := client.New(js)
	h, err := client.NewHTTP(baseURL, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 60*time.Second)
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	must := func(_ client.Receipt, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	wait := func(camp string, s client.State) {
		t.Helper()
		if _, err := c.Wait(ctx, "acme", camp, s); err != nil {
			t.Fatalf("%s: wait %s: %v", camp, s, err)
		}
	}
	// waitEvent waits for the campaign's event of that type and step.
	waitEvent := func(camp, typ, step string) {
		t.Helper()
		for ev, err := range c.Watch(ctx, "acme", camp, 0) {
			if err != nil {
				t.Fatalf("%s: watch for %s %s: %v", camp, typ, step, err)
			}
			var d struct {
				Step string `json:"step"`
			}
			_ = ev.DataAs(&d)
			if ev.Type() == typ && d.Step == step {
				return
			}
		}
	}

	// Over NATS with a traceparent; segment's first attempt loses its
	// connection (step.retrying).
	must(c.Publish(ctx, "acme", "schema-ok", client.Create{Name: "ok", Start: true, Params: map[string]any{"reset": "segment"}}, client.WithTraceparent(tp)))
	wait("schema-ok", client.Completed)

	// A workflow whose steps set a timeout and a retry policy (recorded in
	// campaign.created's step_definitions); validate answers 503 once, a
	// status that step retries.
	must(c.Publish(ctx, "acme", "schema-tuned", client.Create{Name: "tuned", Workflow: "tuned", Start: true, Params: map[string]any{"unavailable": "validate"}}))
	wait("schema-tuned", client.Completed)

	// Over HTTP: a pause while pending is rejected; render fails, retry.
	must(h.Publish(ctx, "acme", "schema-fail", client.Create{Name: "fail", Params: map[string]any{"fail": "render"}}))
	wait("schema-fail", client.Pending)
	must(h.Publish(ctx, "acme", "schema-fail", client.Pause{}))
	must(h.Publish(ctx, "acme", "schema-fail", client.Start{}))
	wait("schema-fail", client.Failed)
	must(h.Publish(ctx, "acme", "schema-fail", client.Retry{}))
	wait("schema-fail", client.Completed)

	// Pause while validate runs, resume, cancel while segment runs.
	must(c.Publish(ctx, "acme", "schema-pause", client.Create{Name: "pause", Start: true, Params: map[string]any{"hold": []string{"validate", "segment"}}}))
	waitEvent("schema-pause", client.TypeStepStarted, "validate")
	must(c.Publish(ctx, "acme", "schema-pause", client.Pause{}))
	sys.steps.release("schema-pause", "validate")
	wait("schema-pause", client.Paused)
	must(c.Publish(ctx, "acme", "schema-pause", client.Resume{}))
	waitEvent("schema-pause", client.TypeStepStarted, "segment")
	must(c.Publish(ctx, "acme", "schema-pause", client.Cancel{}))
	sys.steps.release("schema-pause", "segment")
	wait("schema-pause", client.Cancelled)

	// Invalid on purpose (dead-lettered, and rejected on the existing
	// campaign), and a valid command for a campaign that does not exist
	// (dead-lettered only).
	bad := nats.NewMsg("campaign.cmd.acme.schema-ok.pause")
	bad.Header.Set("Nats-Msg-Id", invalidPrefix+"1")
	bad.Data = []byte(`{"id":"x","type":"pause","tenant_id":"acme","campaign_id":"schema-ok","extra":1}`)
	if _, err := js.PublishMsg(ctx, bad); err != nil {
		t.Fatal(err)
	}
	must(c.Publish(ctx, "acme", "schema-ghost", client.Start{}))
	for ev, err := range c.Watch(ctx, "acme", "schema-ok", 14) {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type() == client.TypeCommandRejected {
			break
		}
	}

	// Read what was recorded until both dead letters are in.
	var msgs []*nats.Msg
	deadline := time.After(30 * time.Second)
	readUntil := func(what string, done func(m *nats.Msg) bool) {
		t.Helper()
		for {
			select {
			case m := <-rec.msgs:
				msgs = append(msgs, m)
				if done(m) {
					return
				}
			case <-deadline:
				t.Fatalf("%s: not seen after 30 s", what)
			}
		}
	}
	dead := 0
	readUntil("2 dead letters", func(m *nats.Msg) bool {
		if kind(m) == "deadletter" && strings.Contains(m.Header.Get(client.HeaderOriginalSubject), ".schema-") {
			dead++
		}
		return dead == 2
	})

	// The operator replays the ghost's dead letter (orchestrator dlq
	// replay): the command again, under its id, with Replayed-From.
	entries, err := deadletter.List(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	replayed := false
	for _, e := range entries {
		if e.OriginalSubject != "campaign.cmd.acme.schema-ghost.start" {
			continue
		}
		rp, err := deadletter.NewReplayer(ctx, js)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rp.ReplayEntry(ctx, e, deadletter.ReplayOptions{}); err != nil {
			t.Fatalf("replay the ghost's dead letter: %v", err)
		}
		replayed = true
		break
	}
	if !replayed {
		t.Fatalf("no dead letter of campaign.cmd.acme.schema-ghost.start in %d entries", len(entries))
	}
	readUntil("the replayed command", func(m *nats.Msg) bool {
		return strings.HasPrefix(kind(m), "command:") && m.Header.Get(client.HeaderReplayedFrom) != ""
	})
	for len(rec.msgs) > 0 {
		msgs = append(msgs, <-rec.msgs)
	}

	seen := map[string]int{}
	created := map[string]bool{}
	for _, m := range msgs {
		k := kind(m)
		seen[k]++
		invalid := strings.HasPrefix(m.Header.Get("Nats-Msg-Id"), invalidPrefix)
		var errs []string
		check := func(schema string, v any) {
			if err := validate(t, schema, v); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", schema, err))
			}
		}
		switch {
		case strings.HasPrefix(k, "command:"):
			if m.Header.Get(client.HeaderReplayedFrom) != "" {
				seen["command:replayed"]++
			}
			check("command-headers.json", headerObject(m.Header))
			if invalid {
				if validate(t, "command.json", m.Data) == nil {
					t.Errorf("the invalid command %s validates against command.json: %s", m.Subject, m.Data)
				}
				continue
			}
			check("command.json", m.Data)
		case strings.HasPrefix(k, "event:"):
			check("event-headers.json", headerObject(m.Header))
			check("cloud-event.json", m.Data)
			if err := clientReads(m.Data); err != nil {
				errs = append(errs, "the client package: "+err.Error())
			}
			if m.Header.Get(client.HeaderCampaignID) == "schema-ok" && strings.Contains(k, "step.") && !strings.Contains(string(m.Data), tp) {
				errs = append(errs, "the command's traceparent is not in its event")
			}
			if k == "event:"+client.TypeCreated {
				if err := createdAsCreated(m); err != nil {
					errs = append(errs, err.Error())
				}
				created[m.Header.Get(client.HeaderCampaignID)] = true
			}
		case k == "deadletter":
			check("dead-letter.json", headerObject(m.Header))
			if id := m.Header.Get(client.HeaderCommandID); id != "" && !strings.HasPrefix(id, invalidPrefix) {
				// A dead letter of a valid command holds it as published.
				check("command.json", m.Data)
			}
		default:
			errs = append(errs, "a message of no known kind")
		}
		if len(errs) > 0 {
			t.Errorf("%s on %s does not match its schema:\n  %s\n  headers %v\n  body %s", k, m.Subject, strings.Join(errs, "\n  "), m.Header, m.Data)
		}
	}

	// The same dead letters as the ingress lists them.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/api/v1/dlq?limit=100", nil)
	req.Header.Set("X-Tenant-ID", "acme")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var page struct {
		DeadLetters []json.RawMessage `json:"dead_letters"`
	}
	err = json.NewDecoder(res.Body).Decode(&page)
	res.Body.Close()
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("GET /api/v1/dlq: %d %v", res.StatusCode, err)
	}
	listed := 0
	for _, e := range page.DeadLetters {
		if !strings.Contains(string(e), ".schema-") {
			continue
		}
		listed++
		if err := validate(t, "dead-letter.json#/$defs/entry", []byte(e)); err != nil {
			t.Errorf("GET /api/v1/dlq entry does not match dead-letter.json#/$defs/entry: %v\n%s", err, e)
		}
	}
	if listed < 2 {
		t.Errorf("GET /api/v1/dlq lists %d of this test's dead letters, want 2", listed)
	}

	for _, camp := range []string{"schema-ok", "schema-tuned", "schema-fail", "schema-pause"} {
		if !created[camp] {
			t.Errorf("no campaign.created of %s recorded", camp)
		}
	}
	if seen["command:replayed"] != 1 {
		t.Errorf("%d replayed commands recorded, want 1", seen["command:replayed"])
	}

	var want []string
	// advance is internal: the worker that holds a campaign may run its
	// next step without publishing one, so it is validated when seen but
	// not required.
	for _, v := range client.Verbs {
		want = append(want, "command:"+string(v))
	}
	for _, typ := range client.EventTypes {
		want = append(want, "event:"+typ)
	}
	want = append(want, "deadletter")
	var missing []string
	for _, k := range want {
		if seen[k] == 0 {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("never seen: %v (seen %v)", missing, seen)
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	t.Logf("%d messages validated: %v", len(msgs), seen)
}

// clientReads checks that this package reads an event body as the service
// wrote it: ParseEvent takes it, the fence (on every event the service now
// writes) and the other extensions are decoded, the data decodes strictly
// into its type (no field the type lacks) and encodes back to the same JSON,
// and the sdk-go event encodes back to the same attributes.
func clientReads(body []byte) error {
	ev, err := client.ParseEvent(body)
	if err != nil {
		return err
	}
	var raw map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		return err
	}
	fence, _ := raw["fence"].(string)
	if fence == "" || ev.Fence == 0 || strconv.FormatUint(ev.Fence, 10) != fence {
		return fmt.Errorf("fence %q read as %d", fence, ev.Fence)
	}
	for attr, got := range map[string]string{
		"tenantid": ev.TenantID, "campaignid": ev.CampaignID, "commandid": ev.CommandID,
		"traceparent": ev.Traceparent, "sequence": fmt.Sprintf("%020d", ev.Seq),
	} {
		if want, _ := raw[attr].(string); got != want {
			return fmt.Errorf("%s %q read as %q", attr, want, got)
		}
	}
	d, err := ev.Payload()
	if err != nil {
		return err
	}
	again, err := json.Marshal(d)
	if err != nil {
		return err
	}
	var want, got any
	_ = json.Unmarshal(ev.Data(), &want)
	_ = json.Unmarshal(again, &got)
	if !jsonEqual(want, got) {
		return fmt.Errorf("data %s decoded to %T, which encodes to %s", ev.Data(), d, again)
	}
	out, err := json.Marshal(ev.Event)
	if err != nil {
		return err
	}
	var back map[string]any
	if err := json.Unmarshal(out, &back); err != nil {
		return err
	}
	for k, v := range raw {
		if k == "time" {
			t1, _ := time.Parse(time.RFC3339Nano, v.(string))
			t2, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(back[k]))
			if !t1.Equal(t2) {
				return fmt.Errorf("time %v encoded back as %v", v, back[k])
			}
			continue
		}
		if !jsonEqual(v, back[k]) {
			return fmt.Errorf("%s %v encoded back by sdk-go as %v", k, v, back[k])
		}
	}
	if len(back) != len(raw) {
		return fmt.Errorf("sdk-go encodes %d attributes, the service wrote %d", len(back), len(raw))
	}
	return nil
}

// createdAsCreated checks a campaign.created of the test's campaigns: its
// data holds the create's params and the workflow's step definitions as the
// system's workflows define them.
func createdAsCreated(m *nats.Msg) error {
	ev, err := client.ParseEvent(m.Data)
	if err != nil {
		return err
	}
	p, err := ev.Payload()
	if err != nil {
		return err
	}
	d := p.(*client.CreatedData)
	base := sys.steps.srv.URL + "/"
	var want []client.StepDefinition
	var params string
	switch ev.CampaignID {
	case "schema-tuned":
		want = []client.StepDefinition{
			{Name: "validate", URL: base + "validate", Timeout: "5s", Retry: &client.RetryDefinition{MaxRetries: 2, BackoffBase: "20ms", RetryOnStatus: []int{503}}},
			{Name: "dispatch", URL: base + "dispatch", Timeout: "1.5s"},
		}
		params = `{"unavailable":"validate"}`
	case "schema-ok", "schema-fail", "schema-pause":
		for _, n := range []string{"validate", "segment", "render", "schedule", "dispatch"} {
			want = append(want, client.StepDefinition{Name: n, URL: base + n})
		}
		params = map[string]string{
			"schema-ok": `{"reset":"segment"}`, "schema-fail": `{"fail":"render"}`, "schema-pause": `{"hold":["validate","segment"]}`,
		}[ev.CampaignID]
	default:
		return nil
	}
	if !jsonEqual(d.StepDefinitions, want) || len(d.Steps) != len(want) {
		return fmt.Errorf("step_definitions %s, want %s", mustJSON(d.StepDefinitions), mustJSON(want))
	}
	var gotParams, wantParams any
	_ = json.Unmarshal(d.Params, &gotParams)
	_ = json.Unmarshal([]byte(params), &wantParams)
	if gotParams == nil || !jsonEqual(gotParams, wantParams) {
		return fmt.Errorf("params %s, want %s", d.Params, params)
	}
	return nil
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
