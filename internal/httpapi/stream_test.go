package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/httpapi"
)

func TestHistory(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		e := newEnv(t, k.open(t))
		e.publishEvents("acme", "c1", 1, 3)
		e.publishEvents("acme", "c2", 1, 1) // another campaign's events stay out
		r := e.do("GET", "/api/v1/campaigns/c1/events", nil, "X-Tenant-ID", "acme")
		if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
			t.Fatalf("history: %s", r)
		}
		var evs []events.CloudEvent
		if err := json.Unmarshal(r.body, &evs); err != nil {
			t.Fatal(err)
		}
		if len(evs) != 3 {
			t.Fatalf("%d events", len(evs))
		}
		for i, ev := range evs {
			if ev.ID != events.EventID("acme", "c1", uint64(i+1)) || ev.Seq() != uint64(i+1) || ev.SpecVersion != "1.0" {
				t.Fatalf("event %d: %+v", i, ev)
			}
		}
		// A campaign the store knows but without events yet: an empty array.
		seed(t, e.st, "acme", "quiet", fsm.Pending)
		if r := e.do("GET", "/api/v1/campaigns/quiet/events", nil, "X-Tenant-ID", "acme"); r.status != 200 || strings.TrimSpace(string(r.body)) != "[]" {
			t.Fatalf("no events: %s", r)
		}
		wantError(t, e.do("GET", "/api/v1/campaigns/c1/events", nil, "X-Tenant-ID", "other"), 404, "campaign_id")
		wantError(t, e.do("GET", "/api/v1/campaigns/none/events", nil, "X-Tenant-ID", "acme"), 404, "campaign_id")

		// Accepted but not applied yet (its create waits in CAMPAIGN_COMMANDS):
		// no events yet, not 404, and still 404 to another tenant.
		accepted(t, e.create("acme", "fresh"))
		if r := e.do("GET", "/api/v1/campaigns/fresh/events", nil, "X-Tenant-ID", "acme"); r.status != 200 || strings.TrimSpace(string(r.body)) != "[]" {
			t.Fatalf("fresh campaign: %s", r)
		}
		wantError(t, e.do("GET", "/api/v1/campaigns/fresh/events", nil, "X-Tenant-ID", "other"), 404, "campaign_id")
		s := e.openStream("acme", "fresh", "")
		e.publishEvents("acme", "fresh", 1, 1)
		if ev := s.next(false); ev.id != 1 {
			t.Fatalf("fresh stream: got %d", ev.id)
		}
	})
}

// sseEvent is one server-sent event or comment.
type sseEvent struct {
	id      uint64
	data    string
	comment string
}

// sseClient reads an event stream in a goroutine.
type sseClient struct {
	t      testing.TB
	res    *http.Response
	cancel context.CancelFunc
	ch     chan sseEvent
}

func (e *env) openStream(tenant, id, lastEventID string) *sseClient {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.ts.URL+"/api/v1/campaigns/"+id+"/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("X-Tenant-ID", tenant)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	res, err := e.client.Do(req)
	if err != nil {
		cancel()
		e.t.Fatalf("open stream: %v", err)
	}
	c := &sseClient{t: e.t, res: res, cancel: cancel, ch: make(chan sseEvent, 1024)}
	e.t.Cleanup(c.close)
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		return c
	}
	go func() {
		defer close(c.ch)
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev != (sseEvent{}) {
					c.ch <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				ev.comment = strings.TrimSpace(line[1:])
			case strings.HasPrefix(line, "id: "):
				ev.id, _ = strconv.ParseUint(line[4:], 10, 64)
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			}
		}
	}()
	return c
}

func (c *sseClient) close() {
	c.cancel()
	_ = c.res.Body.Close()
}

// next returns the next event (skipping comments unless wantComment).
func (c *sseClient) next(wantComment bool) sseEvent {
	c.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-c.ch:
			if !ok {
				c.t.Fatalf("stream ended")
			}
			if ev.comment != "" && !wantComment {
				continue
			}
			return ev
		case <-timeout:
			c.t.Fatalf("no event within 10s")
		}
	}
}

// ended waits for the stream to end.
func (c *sseClient) ended() {
	c.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-c.ch:
			if !ok {
				return
			}
		case <-timeout:
			c.t.Fatalf("stream did not end within 10s")
		}
	}
}

func TestEventStreamResume(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		e := newEnv(t, k.open(t))
		e.publishEvents("acme", "c1", 1, 3)

		s := e.openStream("acme", "c1", "")
		for want := uint64(1); want <= 3; want++ {
			ev := s.next(false)
			var ce events.CloudEvent
			if err := json.Unmarshal([]byte(ev.data), &ce); err != nil || ev.id != want || ce.Seq() != want || ce.ID != events.EventID("acme", "c1", want) {
				t.Fatalf("event %d: %+v %v", want, ev, err)
			}
		}
		// Live events follow the history.
		e.publishEvents("acme", "c1", 4, 5)
		for want := uint64(4); want <= 5; want++ {
			if ev := s.next(false); ev.id != want {
				t.Fatalf("live event: got %d, want %d", ev.id, want)
			}
		}
		s.close()

		// Resume after event 2: exactly 3, 4, 5 and then 6 live, with no repeat.
		r := e.openStream("acme", "c1", "2")
		for want := uint64(3); want <= 5; want++ {
			if ev := r.next(false); ev.id != want {
				t.Fatalf("resumed: got %d, want %d", ev.id, want)
			}
		}
		e.publishEvents("acme", "c1", 6, 6)
		if ev := r.next(false); ev.id != 6 {
			t.Fatalf("live after resume: got %d", ev.id)
		}
		// A re-published (duplicate) event reaches core subscribers again but is not sent twice.
		m, _ := events.NewEventMsg("acme", "c1", fsm.Event{Seq: 6, Type: fsm.EvStepSucceeded, Time: time.Now(), CommandID: "x"}, "")
		if err := e.nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		e.publishEvents("acme", "c1", 7, 7)
		if ev := r.next(false); ev.id != 7 {
			t.Fatalf("after duplicate: got %d, want 7", ev.id)
		}

		if got := e.openStream("acme", "c1", "x"); got.res.StatusCode != 400 {
			t.Fatalf("bad Last-Event-ID: %d", got.res.StatusCode)
		}
		if got := e.openStream("other", "c1", ""); got.res.StatusCode != 404 {
			t.Fatalf("other tenant: %d", got.res.StatusCode)
		}
	})
}

func TestEventStreamFillsGaps(t *testing.T) {
	e := newEnv(t, storeKinds[0].open(t))
	e.publishEvents("acme", "c1", 1, 1)
	s := e.openStream("acme", "c1", "")
	if ev := s.next(false); ev.id != 1 {
		t.Fatalf("got %d", ev.id)
	}

	// Store event 2 in CAMPAIGN_EVENTS without any core-NATS delivery on its
	// subject (as if core NATS had dropped it on the way to the ingress):
	// it is published to a side stream that CAMPAIGN_EVENTS sources with a
	// subject transform. Then event 3 arrives live: 2 comes from the history.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "SIDE", Subjects: []string{"side.>"}}); err != nil {
		t.Fatal(err)
	}
	evs, err := e.js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	cfg := evs.CachedInfo().Config
	cfg.Sources = []*jetstream.StreamSource{{Name: "SIDE", SubjectTransforms: []jetstream.SubjectTransformConfig{{Source: "side.>", Destination: "campaign.evt.>"}}}}
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	m2, _ := events.NewEventMsg("acme", "c1", fsm.Event{Seq: 2, Type: fsm.EvStarted, Time: time.Now(), CommandID: "x"}, "")
	m2.Subject = "side." + strings.TrimPrefix(m2.Subject, "campaign.evt.")
	if _, err := e.js.PublishMsg(ctx, m2); err != nil {
		t.Fatal(err)
	}
	eventually(t, "event 2 sourced into CAMPAIGN_EVENTS", 10*time.Second, func() bool {
		h, err := events.History(ctx, e.js, "acme", "c1")
		return err == nil && len(h) == 2
	})
	e.publishEvents("acme", "c1", 3, 3)
	for want := uint64(2); want <= 3; want++ {
		if ev := s.next(false); ev.id != want {
			t.Fatalf("got %d, want %d", ev.id, want)
		}
	}
}

func TestEventStreamHeartbeatAndNoLeak(t *testing.T) {
	e := newEnv(t, storeKinds[0].open(t), withConfig(func(c *httpapi.Config) { c.Heartbeat = 20 * time.Millisecond }))
	e.publishEvents("acme", "c1", 1, 1)
	before := runtime.NumGoroutine()
	baseSubs := e.nc.NumSubscriptions()
	for range 5 {
		s := e.openStream("acme", "c1", "")
		if ev := s.next(false); ev.id != 1 {
			t.Fatalf("got %d", ev.id)
		}
		if ev := s.next(true); ev.comment != "heartbeat" {
			t.Fatalf("want a heartbeat, got %+v", ev)
		}
		s.close()
	}
	// Every handler has unsubscribed and returned once its client went.
	eventually(t, "subscriptions released", 10*time.Second, func() bool { return e.nc.NumSubscriptions() == baseSubs })
	e.client.CloseIdleConnections()
	eventually(t, "goroutines back to the baseline", 10*time.Second, func() bool { return runtime.NumGoroutine() <= before })
}

func TestEventStreamDropsSlowClient(t *testing.T) {
	e := newEnv(t, storeKinds[0].open(t), withConfig(func(c *httpapi.Config) {
		c.StreamBuffer = 4
		c.StreamWriteTimeout = 200 * time.Millisecond
	}))
	e.publishEvents("acme", "c1", 1, 1)
	baseSubs := e.nc.NumSubscriptions()

	// A client that opens the stream and then never reads.
	conn, err := net.Dial("tcp", e.ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write([]byte("GET /api/v1/campaigns/c1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nX-Tenant-ID: acme\r\n\r\n"))
	eventually(t, "stream subscribed", 10*time.Second, func() bool { return e.nc.NumSubscriptions() > baseSubs })

	// Publishing never waits for that client: 400 events of 16 KiB (more
	// than the socket buffers hold) are all stored, and the stream is dropped.
	big := strings.Repeat("x", 16<<10)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for seq := uint64(2); seq <= 400; seq++ {
		m, err := events.NewEventMsg("acme", "c1", fsm.Event{Seq: seq, Type: fsm.EvStepSucceeded, Time: time.Now(), CommandID: "x",
			Data: map[string]any{"pad": big}}, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := events.PublishEvents(ctx, e.js, "acme", "c1", []*nats.Msg{m}); err != nil {
			t.Fatalf("publish %d: %v", seq, err)
		}
	}
	eventually(t, "slow client dropped", 20*time.Second, func() bool { return e.nc.NumSubscriptions() == baseSubs })
}

func TestShutdownEndsStreams(t *testing.T) {
	e := newEnv(t, storeKinds[0].open(t))
	e.publishEvents("acme", "c1", 1, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.api.Serve(ln) }()
	e.ts.URL = "http://" + ln.Addr().String() // the streams below go to Serve's listener
	s := e.openStream("acme", "c1", "")
	if ev := s.next(false); ev.id != 1 {
		t.Fatalf("got %d", ev.id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.api.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	s.ended()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Serve did not return")
	}
}
