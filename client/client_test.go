package client_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/client"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/events/natstest"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/streams"
)

// What the service would dead-letter is refused before anything is sent,
// with the service's reason.
func TestNewMessageRefusesWhatTheServiceRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, tenant, campaign string
		cmd                    client.Command
		opts                   []client.PublishOption
		want                   string
	}{
		{"tenant with a dot", "ac.me", "c", client.Start{}, nil, `tenant "ac.me" must match`},
		{"campaign wildcard", "acme", "*", client.Start{}, nil, `campaign "*" must match`},
		{"campaign too long", "acme", strings.Repeat("c", 65), client.Start{}, nil, "must match"},
		{"no name", "acme", "c", client.Create{}, nil, "create: payload name is required"},
		{"long name", "acme", "c", client.Create{Name: strings.Repeat("n", 257)}, nil, "at most 256"},
		{"params not an object", "acme", "c", client.Create{Name: "n", Params: []int{1}}, nil, "params must be a JSON object"},
		{"empty id", "acme", "c", client.Start{}, []client.PublishOption{client.WithID("")}, "command id is empty"},
		{"id not ascii", "acme", "c", client.Start{}, []client.PublishOption{client.WithID("é")}, "printable ASCII"},
		{"id too long", "acme", "c", client.Start{}, []client.PublishOption{client.WithID(strings.Repeat("i", 257))}, "longer than 256 bytes"},
		{"idempotency key over NATS", "acme", "c", client.Start{}, []client.PublishOption{client.WithIdempotencyKey("k")}, "WithIdempotencyKey is for HTTP"},
		{"no command", "acme", "c", nil, nil, "no command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.NewMessage(tc.tenant, tc.campaign, tc.cmd, tc.opts...)
			var inv *client.InvalidError
			if !errors.As(err, &inv) || !errors.Is(err, client.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an *InvalidError saying %q", err, tc.want)
			}
		})
	}
	// And what it builds, the service decodes as built.
	msg, err := client.NewMessage("acme", "c", client.Create{Name: "n", Workflow: "standard", Params: map[string]int{"a": 1}, Start: true}, client.WithID("id-1"), client.WithTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := events.DecodeCommand(msg.Subject, msg.Header, msg.Data, anyWorkflow{})
	if err != nil {
		t.Fatal(err)
	}
	if cmd.ID != "id-1" || cmd.Create == nil || cmd.Create.Name != "n" || !cmd.Create.Start || string(cmd.Create.Params) != `{"a":1}` || msg.Header.Get("traceparent") == "" {
		t.Fatalf("decoded %+v %+v, headers %v", cmd, cmd.Create, msg.Header)
	}
}

// A duplicate id is reported; one held by another command is ErrIDInUse.
// On a server of its own with no worker, so that the first copy stays in
// the stream.
func TestPublishDuplicateAndIDInUse(t *testing.T) {
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
	c := client.New(js)
	first, err := c.Publish(ctx, "acme", "a", client.Start{}, client.WithID("shared-1"))
	if err != nil || first.Duplicate || first.Sequence == 0 || first.CommandID != "shared-1" {
		t.Fatalf("first publish: %+v %v", first, err)
	}
	again, err := c.Publish(ctx, "acme", "a", client.Start{}, client.WithID("shared-1"))
	if err != nil || !again.Duplicate || again.Sequence != first.Sequence {
		t.Fatalf("same command again: %+v %v", again, err)
	}
	_, err = c.Publish(ctx, "acme", "b", client.Start{}, client.WithID("shared-1"))
	if !errors.Is(err, client.ErrIDInUse) {
		t.Fatalf("another campaign's command under the same id: %v, want ErrIDInUse", err)
	}
	_, err = c.Publish(ctx, "acme", "a", client.Pause{}, client.WithID("shared-1"))
	if !errors.Is(err, client.ErrIDInUse) {
		t.Fatalf("another verb under the same id: %v, want ErrIDInUse", err)
	}
}

// Watch replays the history then follows live events, and resumes from any
// sequence with nothing lost or repeated; Wait takes the campaign's current
// state, not one it passed through.
func TestWatchResumeAndWait(t *testing.T) {
	_, js := connect(t)
	c := client.New(js)
	ctx := ctxT(t, 30*time.Second)
	const camp = "watch-resume"
	if _, err := c.Publish(ctx, "acme", camp, client.Create{Name: "w", Start: true, Params: map[string]any{"hold": []string{"render"}}}); err != nil {
		t.Fatal(err)
	}
	running, err := c.Wait(ctx, "acme", camp, client.Running)
	if err != nil || running.Type() != client.TypeStarted || running.Seq != 2 {
		t.Fatalf("wait running: %v %v", running.Type(), err)
	}
	var seen []uint64
	for ev, err := range c.Watch(ctx, "acme", camp, 0) {
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, ev.Seq)
		if ev.Type() == client.TypeStepStarted && ev.Seq == 7 { // render started: held
			sys.steps.release(camp, "render")
		}
		if ev.Type() == client.TypeCompleted {
			break
		}
	}
	if len(seen) != 13 || seen[0] != 1 || seen[12] != 13 {
		t.Fatalf("watched %v", seen)
	}
	var resumed []uint64
	for ev, err := range c.Watch(ctx, "acme", camp, 9) {
		if err != nil {
			t.Fatal(err)
		}
		resumed = append(resumed, ev.Seq)
		if ev.Seq == 13 {
			break
		}
	}
	if len(resumed) != 5 || resumed[0] != 9 {
		t.Fatalf("resumed from 9: %v", resumed)
	}
	// It was running once; it is completed now.
	ev, err := c.Wait(ctx, "acme", camp, client.Running, client.Completed)
	if err != nil || ev.Seq != 13 || ev.Type() != client.TypeCompleted {
		t.Fatalf("wait on a completed campaign: %d %s %v", ev.Seq, ev.Type(), err)
	}
	if _, err := c.Wait(ctx, "acme", camp); !errors.Is(err, client.ErrNoState) {
		t.Fatalf("wait for nothing: %v", err)
	}
	for _, err := range c.Watch(ctx, "acme", "bad.token", 0) {
		if !errors.Is(err, client.ErrInvalid) {
			t.Fatalf("watch a bad token: %v", err)
		}
	}
}

// The HTTP client: create, verbs, get, list and events, and the API's
// errors as *APIError.
func TestHTTPClient(t *testing.T) {
	h, err := client.NewHTTP(baseURL+"/", "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 30*time.Second)
	_, js := connect(t)
	c := client.New(js)

	r, err := h.Publish(ctx, "acme", "", client.Create{Name: "generated id", Params: map[string]any{"fail": "segment"}})
	if err != nil || r.CampaignID == "" || r.CommandID == "" || r.Replayed {
		t.Fatalf("create: %+v %v", r, err)
	}
	camp := r.CampaignID
	if _, err := c.Wait(ctx, "acme", camp, client.Pending); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Publish(ctx, "acme", camp, client.Start{}); err != nil {
		t.Fatal(err)
	}
	if ev, err := c.Wait(ctx, "acme", camp, client.Failed); err != nil || ev.Type() != client.TypeFailed {
		t.Fatalf("wait failed: %v", err)
	}
	got, err := h.Get(ctx, "acme", camp)
	if err != nil || got.State != client.Failed || got.CurrentStep != "segment" || len(got.Steps) != 5 || got.Steps[1].Status != "failed" || got.Error == "" {
		t.Fatalf("get: %+v %v", got, err)
	}
	if _, err := h.Publish(ctx, "acme", camp, client.Retry{}, client.WithIdempotencyKey("retry-"+camp)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wait(ctx, "acme", camp, client.Completed); err != nil {
		t.Fatal(err)
	}
	evs, err := h.Events(ctx, "acme", camp)
	if err != nil || len(evs) == 0 || evs[len(evs)-1].Type() != client.TypeCompleted || evs[0].Seq != 1 {
		t.Fatalf("events: %d %v", len(evs), err)
	}
	page, err := h.List(ctx, "acme", client.ListOptions{State: client.Completed, Limit: 500})
	found := false
	for _, s := range page.Campaigns {
		found = found || s.CampaignID == camp
	}
	if err != nil || !found {
		t.Fatalf("list: %+v %v", page, err)
	}

	var apiErr *client.APIError
	_, err = h.List(ctx, "acme", client.ListOptions{State: "sleeping"})
	if !errors.As(err, &apiErr) || apiErr.Status != 400 || apiErr.Code != client.CodeInvalidRequest || apiErr.Field != "state" {
		t.Fatalf("list a bad state: %v", err)
	}
	_, err = h.Get(ctx, "other-tenant", camp)
	if !errors.As(err, &apiErr) || apiErr.Code != client.CodeNotFound || apiErr.Code.Status() != 404 {
		t.Fatalf("another tenant's campaign: %v", err)
	}
	_, err = h.Publish(ctx, "acme", camp, client.Create{Name: "again"})
	if !errors.As(err, &apiErr) || apiErr.Code != client.CodeConflict {
		t.Fatalf("create an existing campaign: %v", err)
	}
	if _, err := h.Publish(ctx, "acme", camp, client.Start{}, client.WithID("x")); !errors.Is(err, client.ErrInvalid) {
		t.Fatalf("WithID over HTTP: %v", err)
	}
	if _, err := client.NewHTTP("localhost:8000", ""); err == nil {
		t.Fatal("a base URL without scheme was taken")
	}
}

type anyWorkflow struct{}

func (anyWorkflow) Get(name string) (fsm.Workflow, bool) { return fsm.Workflow{Name: name}, true }
