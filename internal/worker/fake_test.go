package worker_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// call is one request the fake downstream received.
type call struct {
	Tenant, Campaign, Step, Key, Fence string
	Attempt                            int
	Start, End                         time.Time
}

// behaviour is what the fake does for a call; zero: answer 200 at once.
type behaviour struct {
	Status int           // non-2xx status to answer
	Reset  bool          // close the connection without an answer
	Delay  time.Duration // sleep before answering (a timeout for the client)
	Block  chan struct{} // wait until closed
	Body   []byte        // 200 answer body instead of the default
}

// downstream is the fake step service: it records every call, counts
// overlapping calls per campaign, and misbehaves on purpose when told.
type downstream struct {
	t   testing.TB
	srv *httptest.Server

	mu       sync.Mutex
	calls    []call         // ended calls, in the order they ended
	begun    []call         // every call, in the order it began
	inFlight map[string]int // campaign → calls in progress
	overlaps []string
	rules    map[string][]behaviour // "campaign/step" → behaviours for successive calls
	started  map[string]chan struct{}
}

func newDownstream(t testing.TB) *downstream {
	d := &downstream{t: t, inFlight: map[string]int{}, rules: map[string][]behaviour{}, started: map[string]chan struct{}{}}
	d.srv = httptest.NewServer(http.HandlerFunc(d.serve))
	t.Cleanup(d.srv.Close)
	return d
}

func (d *downstream) URL() string { return d.srv.URL }

// on queues behaviours for the next calls of campaign's step.
func (d *downstream) on(campaign, step string, bs ...behaviour) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rules[campaign+"/"+step] = append(d.rules[campaign+"/"+step], bs...)
}

// startedCh is closed when campaign's step is first called.
func (d *downstream) startedCh(campaign, step string) chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := campaign + "/" + step
	if d.started[k] == nil {
		d.started[k] = make(chan struct{})
	}
	return d.started[k]
}

func (d *downstream) serve(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Tenant   string `json:"tenant_id"`
		Campaign string `json:"campaign_id"`
		Step     string `json:"step"`
		Attempt  int    `json:"attempt"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c := call{Tenant: body.Tenant, Campaign: body.Campaign, Step: body.Step, Attempt: body.Attempt,
		Key: r.Header.Get("Idempotency-Key"), Fence: r.Header.Get("Campaign-Fence"), Start: time.Now()}
	k := body.Campaign + "/" + body.Step
	d.mu.Lock()
	d.begun = append(d.begun, c)
	d.inFlight[body.Tenant+"/"+body.Campaign]++
	if n := d.inFlight[body.Tenant+"/"+body.Campaign]; n > 1 {
		d.overlaps = append(d.overlaps, fmt.Sprintf("%s/%s: %d calls at once (step %s)", body.Tenant, body.Campaign, n, body.Step))
	}
	var b behaviour
	if q := d.rules[k]; len(q) > 0 {
		b, d.rules[k] = q[0], q[1:]
	}
	if ch := d.started[k]; ch != nil {
		select {
		case <-ch:
		default:
			close(ch)
		}
	} else {
		ch := make(chan struct{})
		close(ch)
		d.started[k] = ch
	}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.inFlight[body.Tenant+"/"+body.Campaign]--
		c.End = time.Now()
		d.calls = append(d.calls, c)
		d.mu.Unlock()
	}()
	if b.Block != nil {
		select {
		case <-b.Block:
		case <-time.After(30 * time.Second):
			d.t.Errorf("fake downstream: %s blocked for 30 s", k)
		}
	}
	if b.Delay > 0 {
		time.Sleep(b.Delay)
	}
	switch {
	case b.Reset:
		hj, _ := w.(http.Hijacker)
		conn, _, err := hj.Hijack()
		if err == nil {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = conn.Close()
		}
	case b.Status != 0:
		http.Error(w, "fake failure", b.Status)
	case b.Body != nil:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b.Body)
	default:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"step":%q,"ok":true}`, body.Step)
	}
}

func (d *downstream) Calls(campaign string) []call {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []call
	for _, c := range d.calls {
		if c.Campaign == campaign {
			out = append(out, c)
		}
	}
	return out
}

// Begun is every call of campaign, finished or not, in the order it began.
func (d *downstream) Begun(campaign string) []call {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []call
	for _, c := range d.begun {
		if c.Campaign == campaign {
			out = append(out, c)
		}
	}
	return out
}

func (d *downstream) Overlaps() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.overlaps...)
}
