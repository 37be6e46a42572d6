package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/events/natstest"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/httpapi"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/store/redistest"
	"github.com/campaign-orchestrator/orchestrator/streams"
)

// testWorkflows is the workflow registry of the tests: standard and quick.
type testWorkflows map[string]fsm.Workflow

func (w testWorkflows) Get(name string) (fsm.Workflow, bool) { wf, ok := w[name]; return wf, ok }

func (w testWorkflows) Names() []string { return slices.Sorted(maps.Keys(w)) }

var workflows = testWorkflows{
	"standard": {Name: "standard", Steps: []fsm.Step{
		{Name: "validate", URL: "http://127.0.0.1:1/validate"}, {Name: "segment", URL: "http://127.0.0.1:1/segment"},
		{Name: "render", URL: "http://127.0.0.1:1/render"}, {Name: "schedule", URL: "http://127.0.0.1:1/schedule"},
		{Name: "dispatch", URL: "http://127.0.0.1:1/dispatch"},
	}},
	"quick": {Name: "quick", Steps: []fsm.Step{{Name: "only", URL: "http://127.0.0.1:1/only"}}},
}

// storeKind names a store implementation; every store-backed test runs
// against both.
type storeKind struct {
	name string
	open func(t testing.TB) store.Store
}

var storeKinds = []storeKind{
	{"memory", func(t testing.TB) store.Store {
		st := store.NewMemory(store.Options{})
		t.Cleanup(func() { _ = st.Close() })
		return st
	}},
	{"redis", func(t testing.TB) store.Store {
		url, _ := redistest.Start(t)
		st, err := store.NewRedis(context.Background(), url, store.Options{Prefix: redistest.Prefix(t)})
		if err != nil {
			t.Fatalf("redis store: %v", err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}},
}

// eachStore runs f as a subtest per store implementation.
func eachStore(t *testing.T, f func(t *testing.T, kind storeKind)) {
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) { f(t, k) })
	}
}

// env is one ingress under test: a real embedded NATS server with the
// streams applied, a store, and the API served by httptest.
type env struct {
	t      testing.TB
	ns     *server.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	st     store.Store
	api    *httpapi.Server
	ts     *httptest.Server
	client *http.Client
}

type envOption func(*httpapi.Config, *httpapi.Deps)

func withConfig(f func(*httpapi.Config)) envOption {
	return func(c *httpapi.Config, _ *httpapi.Deps) { f(c) }
}

// newEnv starts NATS, applies streams/*.json, and serves a new ingress.
func newEnv(t testing.TB, st store.Store, opts ...envOption) *env {
	t.Helper()
	ns := natstest.Start(t)
	return newEnvOn(t, ns, st, opts...)
}

func newEnvOn(t testing.TB, ns *server.Server, st store.Store, opts ...envOption) *env {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL(), nats.ReconnectWait(20*time.Millisecond), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	applyStreams(t, js)
	cfg := httpapi.Config{AllowedOrigins: []string{"http://localhost:3000"}, PublishTimeout: 2 * time.Second}
	deps := httpapi.Deps{JS: js, NC: nc, Store: st, Workflows: workflows,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, o := range opts {
		o(&cfg, &deps)
	}
	api, err := httpapi.New(cfg, deps)
	if err != nil {
		t.Fatalf("httpapi.New: %v", err)
	}
	ts := httptest.NewServer(api.Handler())
	t.Cleanup(ts.Close)
	return &env{t: t, ns: ns, nc: nc, js: js, st: st, api: api, ts: ts, client: ts.Client()}
}

func applyStreams(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	specs, err := events.LoadSpecs(streams.FS)
	if err != nil {
		t.Fatalf("load stream specs: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := specs.Apply(ctx, js, events.Overrides{}); err != nil {
		t.Fatalf("apply streams: %v", err)
	}
}

// resp is an answer read in full.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) String() string { return http.StatusText(r.status) + " " + string(r.body) }

// errorCode returns the error body's code and field ("" when not an error body).
func (r resp) errorCode() (code, field, message string) {
	var v struct {
		Error struct{ Code, Field, Message string } `json:"error"`
	}
	_ = json.Unmarshal(r.body, &v)
	return v.Error.Code, v.Error.Field, v.Error.Message
}

// do sends a request; hdr holds name, value pairs. A non-nil body gets
// Content-Type: application/json unless hdr sets one ("" removes it).
func (e *env) do(method, path string, body []byte, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.ts.URL+path, rd)
	if err != nil {
		e.t.Fatalf("request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return e.send(req)
}

func (e *env) send(req *http.Request) resp {
	e.t.Helper()
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read body: %v", req.Method, req.URL.Path, err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// create posts a create command as tenant (X-Tenant-ID).
func (e *env) create(tenant, id string, hdr ...string) resp {
	e.t.Helper()
	b, _ := json.Marshal(map[string]any{"campaign_id": id, "name": "test " + id})
	return e.do("POST", "/api/v1/campaigns", b, append([]string{"X-Tenant-ID", tenant}, hdr...)...)
}

// accepted decodes a 202 answer or fails the test.
func accepted(t testing.TB, r resp) (campaignID, commandID string) {
	t.Helper()
	if r.status != http.StatusAccepted {
		t.Fatalf("want 202, got %s", r)
	}
	var v struct{ CampaignID, CommandID, Status string }
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("202 body %q: %v", r.body, err)
	}
	var raw map[string]any
	_ = json.Unmarshal(r.body, &raw)
	if raw["campaign_id"] == nil || raw["command_id"] == nil || raw["status"] != "accepted" {
		t.Fatalf(`want {"campaign_id","command_id","status":"accepted"}, got %s`, r.body)
	}
	return raw["campaign_id"].(string), raw["command_id"].(string)
}

// wantError checks an error answer's status, code and, when field is not
// "", the field it names (in field and in the message).
func wantError(t testing.TB, r resp, status int, field string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("want %d, got %s", status, r)
	}
	code, f, msg := r.errorCode()
	if code == "" || msg == "" {
		t.Fatalf(`want {"error":{"code","message"}}, got %s`, r.body)
	}
	if field != "" && (f != field || !strings.Contains(msg, field)) {
		t.Fatalf("want an error naming %q, got field %q message %q", field, f, msg)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error Content-Type %q", ct)
	}
}

// commands returns the messages in CAMPAIGN_COMMANDS (the tests run no
// worker, so nothing consumes them).
func (e *env) commands() []*jetstream.RawStreamMsg {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, events.StreamCommands)
	if err != nil {
		e.t.Fatalf("stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.t.Fatalf("stream info: %v", err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			e.t.Fatalf("get %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}

// commandEnvelope decodes a stored command.
func commandEnvelope(t testing.TB, m *jetstream.RawStreamMsg) events.CommandEnvelope {
	t.Helper()
	var env events.CommandEnvelope
	if err := json.Unmarshal(m.Data, &env); err != nil {
		t.Fatalf("command %q: %v", m.Data, err)
	}
	return env
}

// seed stores a campaign in state st directly in the store, as a worker
// would after applying its create (and further commands); applied are
// command ids to record in its ledger.
func seed(t testing.TB, s store.Store, tenant, id string, state fsm.State, applied ...string) fsm.Campaign {
	t.Helper()
	ctx := context.Background()
	k := store.Key{Tenant: tenant, Campaign: id}
	wf, _ := workflows.Get("standard")
	res, err := fsm.Apply(nil, fsm.Command{ID: "seed-" + id, Verb: fsm.Create, Tenant: tenant, Campaign: id,
		Create: &fsm.CreatePayload{Name: "seeded " + id, Workflow: "standard"}, Workflow: &wf}, time.Now())
	if err != nil {
		t.Fatalf("fsm create: %v", err)
	}
	c := res.Campaign
	if state != fsm.Pending {
		c.State = state
		c.Version++
		if state == fsm.Running {
			c.Step, c.InFlight, c.Attempt = 1, true, 1
			c.Runs = map[string]int{"validate": 1, "segment": 1}
			c.Outputs = map[string]json.RawMessage{"validate": json.RawMessage(`{"ok":true}`)}
		}
	}
	enq, err := s.Enqueue(ctx, k, store.Item{ID: "seed-" + id, Seq: 1, Data: []byte("{}")}, store.Claim{Token: store.NewToken(), TTL: time.Minute})
	if err != nil || enq.Lease == nil {
		t.Fatalf("seed %s: enqueue: %+v %v", k, enq, err)
	}
	cc := c
	cc.Version = 1
	if err := s.Commit(ctx, store.Write{Lease: *enq.Lease, Campaign: &cc, Applied: append([]string{"seed-" + id}, applied...), Dequeue: []string{"seed-" + id}}); err != nil {
		t.Fatalf("seed %s: commit: %v", k, err)
	}
	if c.Version > 1 {
		if err := s.Commit(ctx, store.Write{Lease: *enq.Lease, Campaign: &c}); err != nil {
			t.Fatalf("seed %s: commit: %v", k, err)
		}
	}
	if _, err := s.Release(ctx, *enq.Lease, nil); err != nil {
		t.Fatalf("seed %s: release: %v", k, err)
	}
	return c
}

// publishEvents stores events seq from..to of a campaign in CAMPAIGN_EVENTS,
// as the worker does.
func (e *env) publishEvents(tenant, id string, from, to uint64) {
	e.t.Helper()
	var msgs []*nats.Msg
	for seq := from; seq <= to; seq++ {
		typ := fsm.EvStepSucceeded
		if seq == 1 {
			typ = fsm.EvCreated
		}
		m, err := events.NewEventMsg(tenant, id, fsm.Event{Seq: seq, Type: typ, Time: time.Now(), CommandID: "cmd-test",
			Data: map[string]any{"n": seq}}, "")
		if err != nil {
			e.t.Fatalf("event %d: %v", seq, err)
		}
		msgs = append(msgs, m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := events.PublishEvents(ctx, e.js, tenant, id, msgs); err != nil {
		e.t.Fatalf("publish events: %v", err)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
