package main

import (
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
)

// maxRemembered bounds the answers kept for Idempotency-Key replays; the
// oldest are forgotten first.
const maxRemembered = 100_000

// maxBody bounds a request body.
const maxBody = 1 << 20

var stepPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Options configures the simulated step services.
type Options struct {
	// Latency is the mean time an answer takes; each waits Latency ±50 %.
	Latency time.Duration
	// FailRate is the share of calls answered 500 (0..1).
	FailRate float64
	// ResetRate is the share of calls whose connection is reset unanswered
	// (0..1).
	ResetRate float64
	// Logger receives one line per call; default slog.Default().
	Logger *slog.Logger
	// Rand returns a number in [0, 1); default math/rand/v2.Float64.
	Rand func() float64
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// stepRequest is the body of a step call (CONTRACT section 6).
type stepRequest struct {
	Tenant   string          `json:"tenant_id"`
	Campaign string          `json:"campaign_id"`
	Step     string          `json:"step"`
	Attempt  int             `json:"attempt"`
	Params   json.RawMessage `json:"params"`
	Outputs  json.RawMessage `json:"outputs"`
}

// handler serves POST /<step>.
type handler struct {
	opts Options

	mu      sync.Mutex
	answers map[string][]byte // by Idempotency-Key
	order   []string          // keys, oldest first
}

// NewHandler returns the HTTP handler of the simulated step services:
// POST /<step> answers 200 with JSON output, GET /healthz answers 200.
func NewHandler(opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &handler{opts: opts, answers: map[string][]byte{}}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.opts.Now()
	if r.URL.Path == "/healthz" && r.Method == http.MethodGet {
		writeJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
		return
	}
	step := strings.TrimPrefix(r.URL.Path, "/")
	if !stepPattern.MatchString(step) {
		writeJSON(w, http.StatusNotFound, errorBody("no such step: want POST /<step>"))
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, errorBody("use POST"))
		return
	}
	key, fence := r.Header.Get("Idempotency-Key"), r.Header.Get("Campaign-Fence")
	log := h.opts.Logger.With("step", step, "key", key, "fence", fence)
	if tp := r.Header.Get("traceparent"); tp != "" {
		log = log.With("traceparent", tp)
	}
	var req stepRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&req); err != nil {
		log.Warn("bad step request", "status", http.StatusBadRequest, "err", err)
		writeJSON(w, http.StatusBadRequest, errorBody("body is not a step request: "+err.Error()))
		return
	}
	log = log.With("tenant", req.Tenant, "campaign", req.Campaign, "attempt", req.Attempt)

	if !h.wait(r) {
		log.Info("step call abandoned by the client")
		return
	}
	if h.opts.Rand() < h.opts.ResetRate {
		log.Info("step call", "result", "simulated connection reset")
		reset(w)
		return
	}
	if h.opts.Rand() < h.opts.FailRate {
		log.Info("step call", "status", http.StatusInternalServerError, "result", "simulated failure")
		writeJSON(w, http.StatusInternalServerError, errorBody("simulated failure"))
		return
	}
	out, replayed := h.answer(key, step, req)
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, http.StatusOK, out)
	log.Info("step call", "status", http.StatusOK, "replayed", replayed,
		"took", h.opts.Now().Sub(start).Round(time.Millisecond), "output", string(out))
}

// wait sleeps Latency ±50 %; false if the client went away first.
func (h *handler) wait(r *http.Request) bool {
	if h.opts.Latency <= 0 {
		return true
	}
	d := time.Duration(float64(h.opts.Latency) * (0.5 + h.opts.Rand()))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// answer returns the output remembered for key, or makes and remembers one.
// Without a key every call gets a fresh output.
func (h *handler) answer(key, step string, req stepRequest) (out []byte, replayed bool) {
	if key == "" {
		return h.output(step, req), false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if out, ok := h.answers[key]; ok {
		return out, true
	}
	out = h.output(step, req)
	h.answers[key] = out
	h.order = append(h.order, key)
	if len(h.order) > maxRemembered {
		delete(h.answers, h.order[0])
		h.order = h.order[1:]
	}
	return out, false
}

// output makes a plausible output for step.
func (h *handler) output(step string, req stepRequest) []byte {
	var v any
	switch step {
	case "validate":
		v = map[string]any{"valid": true}
	case "segment":
		v = map[string]any{"audience_size": 1000 + rand.IntN(99_000)}
	case "render":
		v = map[string]any{"variants": 1 + rand.IntN(4)}
	case "schedule":
		at := h.opts.Now().Add(time.Hour).UTC().Truncate(time.Minute)
		v = map[string]any{"send_at": at.Format(time.RFC3339)}
	case "dispatch":
		v = map[string]any{"sent": audience(req.Outputs)}
	default:
		v = map[string]any{"ok": true}
	}
	out, _ := json.Marshal(v) // maps of plain values always encode
	return out
}

// audience is the segment step's audience_size found in outputs (a map of
// step name to output), or a random size.
func audience(outputs json.RawMessage) int {
	var o struct {
		Segment struct {
			AudienceSize *int `json:"audience_size"`
		} `json:"segment"`
	}
	if json.Unmarshal(outputs, &o) == nil && o.Segment.AudienceSize != nil {
		return *o.Segment.AudienceSize
	}
	return 1000 + rand.IntN(99_000)
}

// reset closes the connection abruptly, without an answer.
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // not hijackable (HTTP/2): abort the stream instead
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

func errorBody(msg string) []byte {
	b, _ := json.Marshal(map[string]any{"error": msg})
	return b
}

func writeJSON(w http.ResponseWriter, code int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body) // body may be shared (a remembered answer): do not append to it
	_, _ = w.Write([]byte("\n"))
}
