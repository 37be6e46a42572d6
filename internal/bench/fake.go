package bench

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Fake is the in-process step service of a bench run: every POST /<step>
// answers 200 {} after Latency, on 127.0.0.1. For the bench's campaigns (ids
// c<n>) it records, per step, when the first request arrived and when the
// last answer was written, on the process's clock, for the per-step
// orchestration overhead; it keeps 24 bytes per step and campaign, so that
// its memory barely shows in the process's RSS.
type Fake struct {
	latency time.Duration
	ln      net.Listener
	srv     *http.Server

	mu      sync.Mutex
	tenants map[string]*fakeTenant
	calls   int
}

// fakeTenant is what the fake saw of one tenant's campaigns.
type fakeTenant struct {
	steps map[string]int // step name → index, in the order first seen
	camps [][]fakeRec    // by campaign number, then step index
}

type fakeRec struct {
	received int64 // first request of the step, Unix ns
	answered int64 // last answer written, Unix ns
	calls    int32
}

// maxFakeCampaign bounds the campaign numbers the fake records.
const maxFakeCampaign = 1 << 22

// NewFake starts the fake step service on a free loopback port.
func NewFake(latency time.Duration) (*Fake, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &Fake{latency: latency, ln: ln, tenants: map[string]*fakeTenant{}}
	f.srv = &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second}
	// HTTP/1.1, and HTTP/2 without TLS for an orchestrator with STEP_PROTOCOL=h2c.
	f.srv.Protocols = new(http.Protocols)
	f.srv.Protocols.SetHTTP1(true)
	f.srv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = f.srv.Serve(ln) }()
	return f, nil
}

// URL is the base URL of the steps (STEPS_BASE_URL): a step is URL/<name>.
func (f *Fake) URL() string { return "http://" + f.ln.Addr().String() }

// Latency is the time each answer waits.
func (f *Fake) Latency() time.Duration { return f.latency }

// Close stops the service.
func (f *Fake) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := f.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = f.srv.Close()
	}
	return err
}

// Calls is the number of step requests served.
func (f *Fake) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// ServeHTTP answers a step call (CONTRACT section 6).
func (f *Fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	received := time.Now().UnixNano()
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var req struct {
		Tenant   string `json:"tenant_id"`
		Campaign string `json:"campaign_id"`
		Step     string `json:"step"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.calls++
	rec := f.slot(req.Tenant, req.Campaign, req.Step)
	if rec != nil {
		if rec.calls == 0 {
			rec.received = received
		}
		rec.calls++
	}
	f.mu.Unlock()
	if f.latency > 0 {
		t := time.NewTimer(f.latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	answered := time.Now().UnixNano()
	if rec != nil {
		f.mu.Lock()
		f.slot(req.Tenant, req.Campaign, req.Step).answered = answered // looked up again: camps may have grown
		f.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(`{}`))
}

// slot returns the record of a step of a bench campaign, making it; nil for
// another campaign id or past 64 step names. The caller holds f.mu; the
// pointer is valid until it lets go.
func (f *Fake) slot(tenant, campaign, step string) *fakeRec {
	n, ok := campaignNumber(campaign)
	if !ok || n >= maxFakeCampaign {
		return nil
	}
	ft := f.tenants[tenant]
	if ft == nil {
		ft = &fakeTenant{steps: map[string]int{}}
		f.tenants[tenant] = ft
	}
	si, ok := ft.steps[step]
	if !ok {
		if len(ft.steps) >= 64 {
			return nil
		}
		si = len(ft.steps)
		ft.steps[step] = si
	}
	for len(ft.camps) <= n {
		ft.camps = append(ft.camps, nil)
	}
	if len(ft.camps[n]) <= si {
		grown := make([]fakeRec, max(len(ft.steps), si+1, 8))
		copy(grown, ft.camps[n])
		ft.camps[n] = grown
	}
	return &ft.camps[n][si]
}

// record returns what the fake saw of one step of campaign number n.
func (f *Fake) record(tenant string, n int, step string) (fakeRec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ft := f.tenants[tenant]
	if ft == nil || n < 0 || n >= len(ft.camps) {
		return fakeRec{}, false
	}
	si, ok := ft.steps[step]
	if !ok || si >= len(ft.camps[n]) || ft.camps[n][si].calls == 0 {
		return fakeRec{}, false
	}
	return ft.camps[n][si], true
}
