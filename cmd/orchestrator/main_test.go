package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/workflow"
)

// newDownstream answers every step with 200 and counts calls.
func newDownstream(t *testing.T) (*httptest.Server, *int64) {
	var n int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		atomic.AddInt64(&n, 1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func testConfig(t *testing.T, env map[string]string) config.Config {
	t.Helper()
	base := map[string]string{"HTTP_ADDR": "127.0.0.1:0", "EMBEDDED_NATS_ADDR": "127.0.0.1:0", "LOG_LEVEL": "error"}
	for k, v := range env {
		base[k] = v
	}
	cfg, err := config.Load(nil, func(k string) string { return base[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// The whole process, as `orchestrator serve` runs it on the embedded
// defaults: HTTP in, NATS and the in-process store inside, steps out; then a
// graceful stop that removes the private JetStream directory.
func TestServeEndToEnd(t *testing.T) {
	down, _ := newDownstream(t)
	cfg := testConfig(t, map[string]string{"STEPS_BASE_URL": down.URL})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	app, err := NewApp(ctx, cfg, log, Options{})
	if err != nil {
		t.Fatal(err)
	}
	storeDir := app.tmpDir
	if storeDir == "" {
		t.Fatal("no private JetStream directory")
	}
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	base := "http://" + app.HTTPAddr()

	body := `{"campaign_id":"spring","name":"Spring","start":true}`
	req, _ := http.NewRequest("POST", base+"/api/v1/campaigns", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Tenant-ID", "acme")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("create: %d", res.StatusCode)
	}
	var state struct {
		State    string `json:"state"`
		Sequence int    `json:"sequence"`
	}
	deadline := time.Now().Add(20 * time.Second)
	for state.State != "completed" {
		if time.Now().After(deadline) {
			t.Fatalf("campaign not completed: %+v", state)
		}
		time.Sleep(50 * time.Millisecond)
		req, _ := http.NewRequest("GET", base+"/api/v1/campaigns/spring", nil)
		req.Header.Set("X-Tenant-ID", "acme")
		if res, err := http.DefaultClient.Do(req); err == nil {
			_ = json.NewDecoder(res.Body).Decode(&state)
			res.Body.Close()
		}
	}
	req, _ = http.NewRequest("GET", base+"/api/v1/campaigns/spring/events", nil)
	req.Header.Set("X-Tenant-ID", "acme")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var evs []struct {
		ID       string `json:"id"`
		Sequence string `json:"sequence"`
	}
	if err := json.NewDecoder(res.Body).Decode(&evs); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if len(evs) != state.Sequence || len(evs) != 13 {
		t.Fatalf("%d events, state says %d", len(evs), state.Sequence)
	}
	for i, e := range evs {
		if e.ID != fmt.Sprintf("acme.spring.%d", i+1) {
			t.Fatalf("event %d id %s", i, e.ID)
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		res, err := http.Get(base + path)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("%s: %v %v", path, res, err)
		}
		res.Body.Close()
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after the signal")
	}
	if err := app.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(storeDir); !os.IsNotExist(err) {
		t.Fatalf("private JetStream dir %s still there: %v", storeDir, err)
	}
}

// A bad setting stops start-up with an error naming it, before anything runs.
func TestBadSettingStopsStartup(t *testing.T) {
	for env, val := range map[string]string{
		"CORS_ALLOWED_ORIGINS": "*",
		"LOCK_TTL":             "-5s",
		"STEPS_BASE_URL":       "localhost:8081",
		"WORKFLOWS_FILE":       "/nonexistent/workflows.yaml",
	} {
		var stderr bytes.Buffer
		err := run(context.Background(), []string{"serve"}, func(k string) string {
			if k == env {
				return val
			}
			return ""
		}, io.Discard, &stderr)
		if err == nil || !strings.Contains(err.Error(), env) {
			t.Errorf("%s=%q: error %v, want one naming %s", env, val, err, env)
		}
	}
}

// LOCK_TTL must stay below the consumer's ack wait, or a dead holder's
// message could come back while its lock still holds.
func TestLockTTLAboveAckWaitRefused(t *testing.T) {
	cfg := testConfig(t, map[string]string{"LOCK_TTL": "10m"})
	_, err := NewApp(context.Background(), cfg, slog.New(slog.DiscardHandler), Options{})
	if err == nil || !strings.Contains(err.Error(), "LOCK_TTL") {
		t.Fatalf("error %v, want one naming LOCK_TTL", err)
	}
}

// Start-up without API tokens warns once.
func TestNoTokensWarningOnce(t *testing.T) {
	var buf bytes.Buffer
	app, err := NewApp(context.Background(), testConfig(t, nil), newLogger(&buf, slog.LevelInfo), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if n := strings.Count(buf.String(), "no API tokens"); n != 1 {
		t.Fatalf("%d warnings about API tokens, want 1:\n%s", n, buf.String())
	}
}

// A clean shutdown (Ctrl-C on make run) logs no warning: the connection's
// own Drain is not "NATS disconnected" (it was, with "err":null).
func TestCleanShutdownWarnsNothing(t *testing.T) {
	logs := &syncBuffer{}
	app, err := NewApp(context.Background(), testConfig(t, map[string]string{"API_TOKENS": "acme:a-token-long-enough-0123456789"}), newLogger(logs, slog.LevelInfo), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	if !strings.Contains(logs.String(), "HTTP ingress listening") {
		t.Fatalf("not listening:\n%s", logs.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := app.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
			t.Errorf("clean shutdown logged: %s", line)
		}
	}
}

// examples/workflows.yaml loads as WORKFLOWS_FILE, with its per-step URLs,
// timeouts and retry policies, and a campaign of each of its workflows runs
// to completion against the step service it names (here a test server).
func TestExampleWorkflows(t *testing.T) {
	const file = "../../examples/workflows.yaml"
	wf, err := workflow.Load(file, "http://127.0.0.1:8081", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(wf.Names(), ","); got != "reminder,standard" {
		t.Fatalf("workflows %s, want reminder,standard", got)
	}
	std, _ := wf.Get("standard")
	seg := std.Steps[1]
	if len(std.Steps) != 5 || seg.Name != "segment" || seg.URL != "http://127.0.0.1:8081/segment" || seg.Timeout != 30*time.Second ||
		seg.Retry == nil || seg.Retry.MaxRetries != 3 || seg.Retry.BackoffBase != time.Second || fmt.Sprint(seg.Retry.RetryOnStatus) != "[429 503]" {
		t.Fatalf("standard: %+v, segment %+v", std, seg)
	}

	// The same file with its URLs pointed at a test server, as a user
	// would edit it for their services.
	down, calls := newDownstream(t)
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	edited := filepath.Join(t.TempDir(), "workflows.yaml")
	if err := os.WriteFile(edited, []byte(strings.ReplaceAll(string(raw), "http://127.0.0.1:8081", down.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, map[string]string{"WORKFLOWS_FILE": edited})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	app, err := NewApp(ctx, cfg, slog.New(slog.DiscardHandler), Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	defer func() { cancel(); <-done; _ = app.Close() }()
	base := "http://" + app.HTTPAddr()
	for id, workflow := range map[string]string{"spring": "standard", "nudge": "reminder"} {
		body := fmt.Sprintf(`{"campaign_id":%q,"name":"x","workflow":%q,"start":true}`, id, workflow)
		req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/campaigns", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Tenant-ID", "acme")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusAccepted {
			t.Fatalf("create %s: %d", id, res.StatusCode)
		}
	}
	for _, id := range []string{"spring", "nudge"} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			c, err := app.Store().Load(ctx, store.Key{Tenant: "acme", Campaign: id})
			if err == nil && c.State == fsm.Completed {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("campaign %s: %s (%v), not completed", id, c.State, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if n := atomic.LoadInt64(calls); n != 5+2 {
		t.Errorf("%d step calls to the services the file names, want 7", n)
	}
}
