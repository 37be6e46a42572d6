package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/events/natstest"
	"github.com/campaign-orchestrator/orchestrator/internal/httpapi"
	"github.com/campaign-orchestrator/orchestrator/internal/stepclient"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/worker"
	"github.com/campaign-orchestrator/orchestrator/internal/workflow"
	"github.com/campaign-orchestrator/orchestrator/streams"
)

// The whole service, started once for the package's tests and examples: an
// embedded NATS server with the streams, the in-process store, a worker, the
// HTTP ingress on a free loopback port, and a fake step service. Examples
// reach it through natsURL and baseURL, as a program reaches `make run`.
var (
	natsURL string // the NATS server's URL
	baseURL string // the ingress's URL
	sys     *system
)

func TestMain(m *testing.M) {
	store.RouteRedisLogs(slog.New(slog.DiscardHandler))
	s, err := startSystem()
	if err != nil {
		fmt.Fprintln(os.Stderr, "client tests: start the service:", err)
		os.Exit(1)
	}
	sys, natsURL, baseURL = s, s.srv.ClientURL(), s.baseURL
	code := m.Run()
	s.stop()
	os.Exit(code)
}

type system struct {
	srv     *server.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	baseURL string
	steps   *fakeSteps
	stops   []func()
}

func (s *system) stop() {
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
}

func startSystem() (s *system, err error) {
	dir, err := os.MkdirTemp("", "client-test-")
	if err != nil {
		return nil, err
	}
	s = &system{}
	s.stops = append(s.stops, func() { _ = os.RemoveAll(dir) })
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	if s.srv, err = natstest.Run(dir); err != nil {
		return s, err
	}
	s.stops = append(s.stops, s.srv.Shutdown)
	if s.nc, err = nats.Connect(s.srv.ClientURL()); err != nil {
		return s, err
	}
	s.stops = append(s.stops, s.nc.Close)
	if s.js, err = jetstream.New(s.nc); err != nil {
		return s, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	specs, err := events.LoadSpecs(streams.FS)
	if err != nil {
		return s, err
	}
	// Short ack wait and no back-off: a test never waits half an hour.
	specs.Consumer.AckWait = 1500 * time.Millisecond
	specs.Consumer.BackOff = nil
	specs.Consumer.MaxDeliver = 5
	if err := specs.Apply(ctx, s.js, events.Overrides{}); err != nil {
		return s, err
	}
	st := store.NewMemory(store.Options{})
	s.stops = append(s.stops, func() { _ = st.Close() })

	s.steps = newFakeSteps()
	s.stops = append(s.stops, s.steps.close)
	// The built-in standard workflow, and "tuned", whose steps set a
	// timeout and a retry policy.
	wfFile := filepath.Join(dir, "workflows.yaml")
	if err := os.WriteFile(wfFile, []byte(tunedWorkflow), 0o600); err != nil {
		return s, err
	}
	wf, err := workflow.Load(wfFile, s.steps.srv.URL, 0)
	if err != nil {
		return s, err
	}
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	steps := stepclient.New(stepclient.Config{MaxRetries: 2, BackoffBase: 20 * time.Millisecond, Timeout: 10 * time.Second})
	w, err := worker.New(ctx, worker.Config{Workers: 4, LockTTL: 500 * time.Millisecond, Grace: 2 * time.Second,
		HealthEvery: 100 * time.Millisecond, FetchWait: 200 * time.Millisecond},
		worker.Deps{JS: s.js, Store: st, Steps: steps, Workflows: wf, Logger: log})
	if err != nil {
		return s, err
	}
	runCtx, stopWorker := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(runCtx); err != nil {
			fmt.Fprintln(os.Stderr, "client tests: worker:", err)
		}
	}()
	s.stops = append(s.stops, func() { stopWorker(); <-done })

	api, err := httpapi.NewContext(ctx, httpapi.Config{}, httpapi.Deps{JS: s.js, NC: s.nc, Store: st, Workflows: wf, Logger: log})
	if err != nil {
		return s, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return s, err
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = api.Serve(ln)
	}()
	s.stops = append(s.stops, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = api.Shutdown(sctx)
		<-served
	})
	s.baseURL = "http://" + ln.Addr().String()
	return s, nil
}

// tunedWorkflow is the workflows file of the system beside the built-in
// standard workflow.
const tunedWorkflow = `workflows:
  tuned:
    steps:
      - name: validate
        timeout: 5s
        retry: {max_retries: 2, backoff_base: 20ms, retry_on_status: [503]}
      - name: dispatch
        timeout: 1500ms
`

// fakeSteps is the downstream step service of the standard workflow. Every
// step answers 200 {"step": <name>, "attempt": n} unless the campaign's
// params say otherwise:
//
//	{"fail": "<step>"}   500 on that step's first run (a retry succeeds)
//	{"unavailable": "<step>"} 503 on that step's first attempt
//	{"reset": "<step>"}  the connection is closed on that step's first
//	                     attempt (a network error: the step is retried)
//	{"hold": ["<step>", …]} the call waits until release(campaign, step)
type fakeSteps struct {
	srv *httptest.Server

	mu    sync.Mutex
	holds map[string]chan struct{}
}

type stepBody struct {
	Campaign string `json:"campaign_id"`
	Step     string `json:"step"`
	Attempt  int    `json:"attempt"`
	Params   struct {
		Fail        string   `json:"fail"`
		Unavailable string   `json:"unavailable"`
		Reset       string   `json:"reset"`
		Hold        []string `json:"hold"`
	} `json:"params"`
}

func newFakeSteps() *fakeSteps {
	f := &fakeSteps{holds: map[string]chan struct{}{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	return f
}

func (f *fakeSteps) close() {
	f.mu.Lock()
	for k, ch := range f.holds {
		select {
		case <-ch:
		default:
			close(ch)
		}
		delete(f.holds, k)
	}
	f.mu.Unlock()
	f.srv.Close()
}

func (f *fakeSteps) hold(campaign, step string) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := campaign + "/" + step
	ch, ok := f.holds[k]
	if !ok {
		ch = make(chan struct{})
		f.holds[k] = ch
	}
	return ch
}

// release lets the held step of the campaign answer.
func (f *fakeSteps) release(campaign, step string) {
	ch := f.hold(campaign, step)
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func (f *fakeSteps) serve(w http.ResponseWriter, r *http.Request) {
	var b stepBody
	data, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(data, &b); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	key := r.Header.Get("Idempotency-Key") // <tenant>.<campaign>.<step>.<run>
	firstRun := strings.HasSuffix(key, ".1")
	switch {
	case b.Params.Reset == b.Step && b.Attempt == 1:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	case b.Params.Unavailable == b.Step && b.Attempt == 1:
		http.Error(w, `{"error":"the fake step is unavailable once"}`, http.StatusServiceUnavailable)
		return
	case b.Params.Fail == b.Step && firstRun:
		http.Error(w, `{"error":"the fake step fails its first run"}`, http.StatusInternalServerError)
		return
	case slices.Contains(b.Params.Hold, b.Step):
		select {
		case <-f.hold(b.Campaign, b.Step):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprintf(w, `{"step":%q,"attempt":%d}`, b.Step, b.Attempt)
}

// connect returns a NATS connection to the system, closed when the test ends.
func connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// ctxT is a context bounded to d that ends with the test.
func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
