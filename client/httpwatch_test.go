package client_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/client"
)

// Over HTTP, Watch yields the same events as over NATS, history then live,
// and resumes from any sequence; Wait takes the campaign's current state.
func TestHTTPWatchAndWait(t *testing.T) {
	h, err := client.NewHTTP(baseURL, "")
	if err != nil {
		t.Fatal(err)
	}
	_, js := connect(t)
	c := client.New(js)
	ctx := ctxT(t, 30*time.Second)
	const camp = "http-watch"
	if _, err := h.Publish(ctx, "acme", camp, client.Create{Name: "w", Start: true, Params: map[string]any{"hold": []string{"render"}}}); err != nil {
		t.Fatal(err)
	}
	running, err := h.Wait(ctx, "acme", camp, client.Running)
	if err != nil || running.Type() != client.TypeStarted || running.Seq != 2 {
		t.Fatalf("wait running: %d %s %v", running.Seq, running.Type(), err)
	}
	var overHTTP []client.Event
	for ev, err := range h.Watch(ctx, "acme", camp, 0) {
		if err != nil {
			t.Fatal(err)
		}
		overHTTP = append(overHTTP, ev)
		if ev.Type() == client.TypeStepStarted && ev.Seq == 7 { // render started: held
			sys.steps.release(camp, "render")
		}
		if ev.Type() == client.TypeCompleted {
			break
		}
	}
	var overNATS []client.Event
	for ev, err := range c.Watch(ctx, "acme", camp, 0) {
		if err != nil {
			t.Fatal(err)
		}
		overNATS = append(overNATS, ev)
		if ev.Type() == client.TypeCompleted {
			break
		}
	}
	if len(overHTTP) != 13 || len(overNATS) != 13 {
		t.Fatalf("%d events over HTTP, %d over NATS, want 13", len(overHTTP), len(overNATS))
	}
	for i := range overHTTP {
		a, b := overHTTP[i], overNATS[i]
		if a.Seq != uint64(i+1) || a.ID() != b.ID() || a.Type() != b.Type() || !bytes.Equal(a.Data(), b.Data()) || a.Fence != b.Fence || a.CommandID != b.CommandID {
			t.Fatalf("event %d over HTTP %v, over NATS %v", i+1, a, b)
		}
	}
	var resumed []uint64
	for ev, err := range h.Watch(ctx, "acme", camp, 9) {
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
	ev, err := h.Wait(ctx, "acme", camp, client.Running, client.Completed)
	if err != nil || ev.Seq != 13 || ev.Type() != client.TypeCompleted {
		t.Fatalf("wait on a completed campaign: %d %s %v", ev.Seq, ev.Type(), err)
	}
	if _, err := h.Wait(ctx, "acme", camp); !errors.Is(err, client.ErrNoState) {
		t.Fatalf("wait for nothing: %v", err)
	}
	var apiErr *client.APIError
	if _, err := h.Wait(ctx, "acme", "no-such-campaign", client.Completed); !errors.As(err, &apiErr) || apiErr.Code != client.CodeNotFound {
		t.Fatalf("wait on an unknown campaign: %v", err)
	}
	if _, err := h.Wait(ctx, "other-tenant", camp, client.Completed); !errors.As(err, &apiErr) || apiErr.Code != client.CodeNotFound {
		t.Fatalf("wait on another tenant's campaign: %v", err)
	}
	for _, err := range h.Watch(ctx, "acme", "bad.token", 0) {
		if !errors.Is(err, client.ErrInvalid) {
			t.Fatalf("watch a bad token: %v", err)
		}
	}
}

// When the event stream breaks (here in the middle of the fourth event),
// Watch connects again with Last-Event-ID and yields every event once.
func TestHTTPWatchReconnects(t *testing.T) {
	cut := &cutStream{next: http.DefaultTransport, afterEvents: 3}
	h, err := client.NewHTTP(baseURL, "", client.WithHTTPClient(&http.Client{Transport: cut, Timeout: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 30*time.Second)
	const camp = "http-reconnect"
	if _, err := h.Publish(ctx, "acme", camp, client.Create{Name: "r", Start: true}); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for ev, err := range h.Watch(ctx, "acme", camp, 0) {
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, ev.Seq)
		if ev.Type() == client.TypeCompleted {
			break
		}
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("events %v: want 1 to 13, each once", seqs)
		}
	}
	if len(seqs) != 13 {
		t.Fatalf("events %v", seqs)
	}
	lastIDs := cut.lastEventIDs()
	if len(lastIDs) < 2 || lastIDs[0] != "" || lastIDs[1] != "3" {
		t.Fatalf("Last-Event-ID of the streams: %q, want \"\" then \"3\"", lastIDs)
	}
}

// cutStream is a transport that breaks the first event stream it carries
// in the middle of event afterEvents+1, and records each stream request's
// Last-Event-ID.
type cutStream struct {
	next        http.RoundTripper
	afterEvents int

	mu   sync.Mutex
	cut  bool
	last []string
}

func (c *cutStream) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := c.next.RoundTrip(req)
	if err != nil || req.Header.Get("Accept") != "text/event-stream" {
		return res, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = append(c.last, req.Header.Get("Last-Event-ID"))
	if !c.cut {
		c.cut = true
		res.Body = &cutBody{rc: res.Body, events: c.afterEvents + 1}
	}
	return res, nil
}

func (c *cutStream) lastEventIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.last...)
}

// cutBody passes the stream on up to 10 bytes into its events-th "data:"
// line, then fails as a broken connection does.
type cutBody struct {
	rc     io.ReadCloser
	events int
	seen   []byte
	cutAt  int // position in seen where the stream ends (0: not found yet)
	passed int
}

func (b *cutBody) Read(p []byte) (int, error) {
	if b.cutAt == 0 {
		n, err := b.rc.Read(p[:min(len(p), 512)])
		b.seen = append(b.seen, p[:n]...)
		if i := nthIndex(b.seen, []byte("\ndata: "), b.events); i >= 0 && i+10 <= len(b.seen) {
			b.cutAt = i + 10
		} else {
			b.passed += n
			return n, err
		}
		// Hand on what is before the cut, held back in seen.
		n = copy(p, b.seen[b.passed:b.cutAt])
		b.passed += n
		return n, nil
	}
	if b.passed < b.cutAt {
		n := copy(p, b.seen[b.passed:b.cutAt])
		b.passed += n
		return n, nil
	}
	return 0, io.ErrUnexpectedEOF
}

func (b *cutBody) Close() error { return b.rc.Close() }

// nthIndex is the index of the n-th (from 1) occurrence of sep in s, or -1.
func nthIndex(s, sep []byte, n int) int {
	off := 0
	for i := 1; ; i++ {
		j := bytes.Index(s[off:], sep)
		if j < 0 {
			return -1
		}
		if i == n {
			return off + j
		}
		off += j + len(sep)
	}
}
