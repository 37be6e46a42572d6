//go:build chaos

package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Call is one request the downstream fake received.
type Call struct {
	N        int    // 1, 2, … in order of arrival; the answer's "call" is "k<N>"
	Tenant   string // from the body
	Campaign string
	Step     string // from the path
	BodyStep string // from the body
	Attempt  int
	Key      string // Idempotency-Key
	FenceRaw string // Campaign-Fence as sent
	Fence    uint64 // 0 when FenceRaw is not a number
	Remote   string // the client's address
	Instance string // the orchestrator instance that made it (Cluster.Owner), "" if unknown
	Start    time.Time
	End      time.Time // zero while in flight
	Status   int       // the status answered; 0 when the client went away first
	Aborted  bool      // the client went away before the answer
}

// ID is what the answer's "call" field holds, and so the step's output.
func (c Call) ID() string { return "k" + strconv.Itoa(c.N) }

// Behavior is how the fake answers one call.
type Behavior struct {
	Delay  time.Duration   // wait before answering
	Until  <-chan struct{} // if set: wait for it instead of Delay (or until the client goes)
	Status int             // 0: 200 with {"call": …}
}

// Rule chooses a call's Behavior; ok=false leaves the default.
type Rule func(c Call) (b Behavior, ok bool)

// Downstream is the recording fake of the step services, an httptest server
// on 127.0.0.1 in the test process. It answers POST /<step> with
// {"call":"k<N>","step":…} after a latency (mean Latency, ±50 %), fails the
// first call of a share of Idempotency-Keys with 500 (chosen from the seed,
// so a replay fails the same keys), records every call and can be told to
// hold chosen calls (SetRule).
//
// cmd/stepsim has similar logic but is package main and cannot be imported;
// it also replays the first answer for a repeated Idempotency-Key, which
// would hide which call's answer the orchestrator kept: this fake answers
// every call with its own id instead, so the checker can tell.
type Downstream struct {
	srv      *httptest.Server
	latency  time.Duration
	failRate float64
	seed     uint64
	closing  chan struct{}

	mu    sync.Mutex
	calls []*Call
	keys  map[string]int // calls per Idempotency-Key
	rule  Rule
	owner func(remote string) string
}

// NewDownstream starts the fake; Close it after the orchestrators are gone.
func NewDownstream(seed uint64, latency time.Duration, failRate float64) *Downstream {
	d := &Downstream{latency: latency, failRate: failRate, seed: seed, closing: make(chan struct{}), keys: map[string]int{}}
	d.srv = httptest.NewServer(http.HandlerFunc(d.serve))
	return d
}

// URL is the base URL (STEPS_BASE_URL).
func (d *Downstream) URL() string { return d.srv.URL }

// Port is the listening port.
func (d *Downstream) Port() int { return d.srv.Listener.Addr().(*net.TCPAddr).Port }

// Close releases held calls and stops the server.
func (d *Downstream) Close() {
	close(d.closing)
	d.srv.CloseClientConnections()
	d.srv.Close()
}

// SetRule installs r (nil: none).
func (d *Downstream) SetRule(r Rule) {
	d.mu.Lock()
	d.rule = r
	d.mu.Unlock()
}

// SetOwner installs the function that names a call's instance from the
// client's address.
func (d *Downstream) SetOwner(f func(remote string) string) {
	d.mu.Lock()
	d.owner = f
	d.mu.Unlock()
}

// Calls returns a copy of every call so far, in order of arrival.
func (d *Downstream) Calls() []Call {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Call, len(d.calls))
	for i, c := range d.calls {
		out[i] = *c
	}
	return out
}

// InFlight is the number of calls not answered yet.
func (d *Downstream) InFlight() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.calls {
		if c.End.IsZero() {
			n++
		}
	}
	return n
}

// WaitCall waits until a call for which pred holds has arrived, polling.
func (d *Downstream) WaitCall(ctx context.Context, pred func(Call) bool) (Call, error) {
	var found Call
	err := waitFor(ctx, 10*time.Millisecond, func() bool {
		for _, c := range d.Calls() {
			if pred(c) {
				found = c
				return true
			}
		}
		return false
	})
	return found, err
}

// frac is a number in [0, 1) fixed by the seed and s.
func (d *Downstream) frac(s string) float64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d|%s", d.seed, s)
	return float64(h.Sum64()>>11) / (1 << 53)
}

type stepBody struct {
	Tenant   string `json:"tenant_id"`
	Campaign string `json:"campaign_id"`
	Step     string `json:"step"`
	Attempt  int    `json:"attempt"`
}

func (d *Downstream) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var body stepBody
	_ = json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body)
	c := &Call{
		Tenant: body.Tenant, Campaign: body.Campaign, Step: strings.TrimPrefix(r.URL.Path, "/"), BodyStep: body.Step,
		Attempt: body.Attempt, Key: r.Header.Get("Idempotency-Key"), FenceRaw: r.Header.Get("Campaign-Fence"),
		Remote: r.RemoteAddr, Start: time.Now(),
	}
	c.Fence, _ = strconv.ParseUint(c.FenceRaw, 10, 64)
	d.mu.Lock()
	owner, rule := d.owner, d.rule
	d.mu.Unlock()
	if owner != nil {
		c.Instance = owner(r.RemoteAddr) // while the connection is certainly open
	}
	d.mu.Lock()
	d.calls = append(d.calls, c)
	c.N = len(d.calls)
	d.keys[c.Key]++
	first := d.keys[c.Key] == 1
	snapshot := *c
	d.mu.Unlock()

	b := Behavior{Delay: time.Duration(float64(d.latency) * (0.5 + rand.Float64()))}
	if first && d.failRate > 0 && d.frac(c.Key) < d.failRate {
		b.Status = http.StatusInternalServerError
	}
	if rule != nil {
		if rb, ok := rule(snapshot); ok {
			b = rb
		}
	}
	var timer <-chan time.Time // nil (blocks) when the call waits for Until
	if b.Until == nil {
		t := time.NewTimer(b.Delay)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-b.Until:
	case <-timer:
	case <-r.Context().Done():
	case <-d.closing:
	}
	if r.Context().Err() != nil {
		d.finish(c, 0, true)
		return
	}
	status := http.StatusOK
	out := map[string]any{"call": c.ID(), "step": c.Step}
	if b.Status != 0 {
		status = b.Status
		out = map[string]any{"error": "injected failure", "call": c.ID()}
	}
	raw, _ := json.Marshal(out)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err := w.Write(raw)
	d.finish(c, status, err != nil)
}

func (d *Downstream) finish(c *Call, status int, aborted bool) {
	d.mu.Lock()
	c.End, c.Status, c.Aborted = time.Now(), status, aborted
	d.mu.Unlock()
}

// inject records a call that never happened (the checker's self-test).
func (d *Downstream) inject(c Call) Call {
	d.mu.Lock()
	defer d.mu.Unlock()
	cp := c
	d.calls = append(d.calls, &cp)
	cp.N = len(d.calls)
	d.keys[cp.Key]++
	return cp
}
