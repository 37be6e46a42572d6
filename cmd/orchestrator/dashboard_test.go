package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
	"github.com/campaign-orchestrator/orchestrator/internal/dashboard"
	"github.com/campaign-orchestrator/orchestrator/internal/deadletter"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
)

// e2eDir holds the Playwright script and its package.json (testdata: the go
// tool ignores it, node_modules included).
const e2eDir = "../../internal/dashboard/testdata/e2e"

func TestDashboardCommand(t *testing.T) {
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"dashboard", "--api", "localhost:8000"}, os.Getenv, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--api") {
		t.Fatalf("bad --api: %v", err)
	}
	if err := run(context.Background(), []string{"dashboard", "extra"}, os.Getenv, io.Discard, &stderr); err == nil {
		t.Fatal("a stray argument is accepted")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logged syncBuffer
	go func() {
		done <- run(ctx, []string{"dashboard", "--addr", addr, "--api", "http://127.0.0.1:1"}, os.Getenv, io.Discard, &logged)
	}()
	deadline := time.Now().Add(10 * time.Second)
	var body []byte
	for {
		res, err := http.Get("http://" + addr + "/config.json")
		if err == nil {
			body, _ = io.ReadAll(res.Body)
			res.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dashboard not serving on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(string(body), `"api":"http://127.0.0.1:1"`) {
		t.Fatalf("config %s", body)
	}
	// The log names the page at localhost, the origin the API's default
	// CORS_ALLOWED_ORIGINS lists, not at 127.0.0.1 (refused there).
	_, port, _ := net.SplitHostPort(addr)
	waitUntil(t, 10*time.Second, "the dashboard's start-up line", func() bool { return strings.Contains(logged.String(), "dashboard listening") })
	if want := `"url":"http://localhost:` + port + `"`; !strings.Contains(logged.String(), want) {
		t.Fatalf("start-up log lacks %s:\n%s", want, logged.String())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dashboard after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dashboard did not stop")
	}
	// A port in use stops start-up naming --addr.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if err := run(context.Background(), []string{"dashboard", "--addr", busy.Addr().String()}, os.Getenv, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "--addr") {
		t.Fatalf("port in use: %v", err)
	}
}

func TestDashboardURL(t *testing.T) {
	for _, c := range []struct {
		ip   string
		want string
	}{
		{"127.0.0.1", "http://localhost:3000"},
		{"::1", "http://localhost:3000"},
		{"0.0.0.0", "http://localhost:3000"},
		{"::", "http://localhost:3000"},
		{"192.0.2.7", "http://192.0.2.7:3000"},
		{"2001:db8::1", "http://[2001:db8::1]:3000"},
	} {
		if got := dashboardURL(&net.TCPAddr{IP: net.ParseIP(c.ip), Port: 3000}); got != c.want {
			t.Errorf("listening on %s: %s, want %s", c.ip, got, c.want)
		}
	}
}

// The dashboard's defaults and the service's agree, as make run relies on:
// the page's origin (as the start-up log names it) is in the default
// CORS_ALLOWED_ORIGINS, and --api names the default HTTP_ADDR's port.
func TestDashboardDefaultsMatchServe(t *testing.T) {
	cfg, err := config.Load(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := net.ResolveTCPAddr("tcp", dashboardDefaultAddr)
	if err != nil {
		t.Fatal(err)
	}
	if origin := dashboardURL(addr); !slices.Contains(cfg.CORSAllowedOrigins, origin) {
		t.Errorf("the dashboard's default page %s is not in the default CORS_ALLOWED_ORIGINS %v", origin, cfg.CORSAllowedOrigins)
	}
	api, err := url.Parse(dashboardDefaultAPI)
	if err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(cfg.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	if api.Hostname() != "localhost" || api.Port() != port {
		t.Errorf("--api default %s, want http://localhost:%s (HTTP_ADDR default %s)", dashboardDefaultAPI, port, cfg.HTTPAddr)
	}
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if want := "orchestrator dashboard --addr " + dashboardDefaultAddr + " --api " + dashboardDefaultAPI; !strings.Contains(string(mk), want) {
		t.Errorf("make run does not run %q", want)
	}
}

// gatedSteps is the fake step service of the browser test: every step
// answers after latency, except the step a campaign's params name in
// "hold", which waits until the test's control endpoint releases it, and
// the one they name in "fail_once", whose first call answers 500.
type gatedSteps struct {
	latency time.Duration
	mu      sync.Mutex
	gates   map[string]chan struct{} // by campaign id
	waiting map[string]bool          // a held call is in progress
	failed  map[string]bool          // by campaign id: fail_once has failed
}

func (g *gatedSteps) gate(campaign string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gates[campaign] == nil {
		g.gates[campaign] = make(chan struct{})
	}
	return g.gates[campaign]
}

func (g *gatedSteps) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Campaign string `json:"campaign_id"`
		Step     string `json:"step"`
		Params   struct {
			Hold     string `json:"hold"`
			FailOnce string `json:"fail_once"`
		} `json:"params"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if req.Params.FailOnce != "" && req.Params.FailOnce == req.Step {
		g.mu.Lock()
		first := !g.failed[req.Campaign]
		g.failed[req.Campaign] = true
		g.mu.Unlock()
		if first {
			http.Error(w, "the audience service is down", http.StatusInternalServerError)
			return
		}
	}
	if req.Params.Hold != "" && req.Params.Hold == req.Step {
		g.mu.Lock()
		g.waiting[req.Campaign] = true
		g.mu.Unlock()
		select {
		case <-g.gate(req.Campaign):
		case <-r.Context().Done():
			return
		}
	}
	select {
	case <-time.After(g.latency):
	case <-r.Context().Done():
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"step":%q,"done":true}`, req.Step)
}

// streamCutter is a reverse proxy in front of the API that can drop the
// event streams passing through it (the connection is aborted, as a network
// drop would) and hold new ones until restored.
type streamCutter struct {
	proxy *httputil.ReverseProxy
	mu    sync.Mutex
	live  map[*http.Request]context.CancelFunc
	held  chan struct{} // non-nil: new streams wait for it to close
	cuts  int
	// resumed are the Last-Event-ID headers of the streams opened after a cut.
	resumed []string
}

func newStreamCutter(target string) *streamCutter {
	u, _ := url.Parse(target)
	p := httputil.NewSingleHostReverseProxy(u)
	p.FlushInterval = -1
	return &streamCutter{proxy: p, live: map[*http.Request]context.CancelFunc{}}
}

func (s *streamCutter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
		s.proxy.ServeHTTP(w, r)
		return
	}
	s.mu.Lock()
	held := s.held
	s.mu.Unlock()
	if held != nil {
		select {
		case <-held:
		case <-r.Context().Done():
			return
		}
	}
	ctx, cancel := context.WithCancel(r.Context())
	r = r.WithContext(ctx)
	s.mu.Lock()
	s.live[r] = cancel
	if s.cuts > 0 {
		s.resumed = append(s.resumed, r.URL.Path+" Last-Event-ID="+r.Header.Get("Last-Event-ID"))
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.live, r)
		s.mu.Unlock()
		if ctx.Err() != nil && r.Context().Err() == nil {
			panic(http.ErrAbortHandler) // cut: abort the connection mid-stream
		}
	}()
	s.proxy.ServeHTTP(w, r)
}

// cut drops every stream and holds new ones; restore lets them through.
func (s *streamCutter) cut() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held == nil {
		s.held = make(chan struct{})
	}
	n := len(s.live)
	for _, cancel := range s.live {
		cancel()
	}
	s.cuts += n
	return n
}

func (s *streamCutter) restore() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held != nil {
		close(s.held)
		s.held = nil
	}
}

// TestDashboardBrowser runs the dashboard in headless Chromium, driven by
// Playwright (internal/dashboard/testdata/e2e/dashboard.spec.mjs), against
// the whole service: the orchestrator (embedded NATS, in-process store,
// workers, ingress), a step service whose steps can be held mid-run, and the
// dashboard served on two loopback origins, one of them listed in
// CORS_ALLOWED_ORIGINS. Screenshots of each screen go to
// $DASHBOARD_ARTIFACTS (default: a new temporary directory, kept).
func TestDashboardBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	var missing []string
	if _, err := os.Stat(chromium); err != nil {
		missing = append(missing, fmt.Sprintf("Chromium (%s; apt-get install chromium)", chromium))
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing = append(missing, "node (apt-get install nodejs npm)")
	}
	if len(missing) > 0 {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI=%s and the browser test cannot run: %s missing (.ci/run installs them)", os.Getenv("CI"), strings.Join(missing, ", "))
		}
		t.Skipf("browser test skipped: %s not installed", strings.Join(missing, ", "))
	}
	for _, pkg := range []string{"playwright-core", "axe-core"} {
		if _, err := os.Stat(filepath.Join(e2eDir, "node_modules", pkg, "package.json")); err != nil {
			t.Fatalf("%s is not installed: run `npm ci --prefix internal/dashboard/testdata/e2e` (make test does): %v", pkg, err)
		}
	}
	artifacts := os.Getenv("DASHBOARD_ARTIFACTS")
	if artifacts == "" {
		if artifacts, err = os.MkdirTemp("", "dashboard-screens-"); err != nil {
			t.Fatal(err)
		}
	} else if artifacts, err = filepath.Abs(artifacts); err == nil {
		err = os.MkdirAll(artifacts, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}

	steps := &gatedSteps{latency: 150 * time.Millisecond, gates: map[string]chan struct{}{}, waiting: map[string]bool{}, failed: map[string]bool{}}
	stepSrv := httptest.NewServer(steps)
	t.Cleanup(stepSrv.Close)

	allowedLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	allowedOrigin := "http://" + allowedLn.Addr().String()
	wfFile := filepath.Join(t.TempDir(), "workflows.yaml")
	if err := os.WriteFile(wfFile, []byte("workflows:\n  express:\n    steps:\n      - name: validate\n      - name: dispatch\n        timeout: 5s\n        retry: {max_retries: 2, backoff_base: 200ms, retry_on_status: [503]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, map[string]string{
		"STEPS_BASE_URL": stepSrv.URL, "CORS_ALLOWED_ORIGINS": allowedOrigin, "STEP_TIMEOUT": "3m",
		"WORKFLOWS_FILE": wfFile,
	})
	ctx, cancel := context.WithCancel(context.Background())
	app, err := NewApp(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- app.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-runDone
		_ = app.Close()
	})
	apiURL := "http://" + app.HTTPAddr()
	cutter := newStreamCutter(apiURL)
	proxySrv := httptest.NewServer(cutter)
	t.Cleanup(proxySrv.Close)

	dash, err := dashboard.New(dashboard.Config{API: proxySrv.URL})
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range []net.Listener{allowedLn, refusedLn} {
		srv := &http.Server{Handler: dash, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
	}

	// A second service with bearer tokens (production mode), and the
	// dashboard on a third origin, the one that service allows.
	const acmeToken = "acme-browser-token-0123456789"
	tokenLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tokenOrigin := "http://" + tokenLn.Addr().String()
	tokApp, err := NewApp(ctx, testConfig(t, map[string]string{
		"STEPS_BASE_URL": stepSrv.URL, "CORS_ALLOWED_ORIGINS": tokenOrigin, "API_TOKENS": "acme:" + acmeToken,
	}), slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	tokDone := make(chan error, 1)
	go func() { tokDone <- tokApp.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-tokDone
		_ = tokApp.Close()
	})
	tokDash, err := dashboard.New(dashboard.Config{API: "http://" + tokApp.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	tokSrv := &http.Server{Handler: tokDash, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = tokSrv.Serve(tokenLn) }()
	t.Cleanup(func() { _ = tokSrv.Close() })

	// The test's control endpoint, for the script (not the browser).
	control := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/release":
			close(steps.gate(r.URL.Query().Get("campaign")))
		case "/held":
			steps.mu.Lock()
			held := steps.waiting[r.URL.Query().Get("campaign")]
			steps.mu.Unlock()
			fmt.Fprint(w, held)
			return
		case "/cut":
			fmt.Fprint(w, cutter.cut())
			return
		case "/restore":
			cutter.restore()
		default:
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(control.Close)

	// Dead letters: a command for a campaign that does not exist, for
	// acme and for globex (which acme's page must not show).
	nc, err := nats.Connect(app.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	for _, tenant := range []string{"acme", "globex"} {
		m := events.NewCommandMsg(events.CommandEnvelope{ID: tenant + "-ghost-1", Type: "start", TenantID: tenant, CampaignID: "ghost"}, "")
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	js := app.js
	waitUntil(t, 20*time.Second, "two dead letters", func() bool {
		entries, err := deadletter.List(ctx, js)
		return err == nil && len(entries) == 2
	})

	sctx, scancel := context.WithTimeout(ctx, 4*time.Minute)
	defer scancel()
	cmd := exec.CommandContext(sctx, node, "dashboard.spec.mjs")
	cmd.Dir = e2eDir
	cmd.Env = append(os.Environ(),
		"CHROMIUM="+chromium, "DASHBOARD_URL="+allowedOrigin, "REFUSED_URL=http://"+refusedLn.Addr().String(),
		"API_URL="+apiURL, "CONTROL_URL="+control.URL, "ARTIFACTS="+artifacts,
		"TOKEN_DASHBOARD_URL="+tokenOrigin, "TOKEN="+acmeToken)
	out, err := cmd.CombinedOutput()
	t.Logf("playwright:\n%s", out)
	if err != nil {
		t.Fatalf("the browser script failed: %v", err)
	}
	t.Logf("screenshots in %s", artifacts)

	// What the browser did is what the service holds.
	for id, want := range map[string]fsm.State{
		"spring": fsm.Completed, "autumn": fsm.Completed, "winter": fsm.Completed, "summer": fsm.Completed, "bulk-03": fsm.Cancelled,
	} {
		c, err := app.Store().Load(ctx, store.Key{Tenant: "acme", Campaign: id})
		if err != nil || c.State != want {
			t.Fatalf("campaign %s: %v %v, want %s", id, c.State, err, want)
		}
	}
	if c, err := tokApp.Store().Load(ctx, store.Key{Tenant: "acme", Campaign: "with-token"}); err != nil || c.State != fsm.Completed {
		t.Fatalf("the campaign made with a token: %v %v", c.State, err)
	}
	cutter.mu.Lock()
	cuts, resumed := cutter.cuts, cutter.resumed
	cutter.mu.Unlock()
	if cuts == 0 {
		t.Fatal("no event stream was cut")
	}
	// The page reopened the cut stream with Last-Event-ID, the last event it
	// had (the script checks the page shows that number and no gap or repeat).
	if len(resumed) == 0 || !strings.HasPrefix(resumed[0], "/api/v1/campaigns/autumn/events Last-Event-ID=") ||
		strings.HasSuffix(resumed[0], "=") || strings.HasSuffix(resumed[0], "=0") {
		t.Fatalf("streams after the cut: %q, want autumn's resumed with its Last-Event-ID", resumed)
	}
	// The refused origin's requests reached the API and were refused there.
	res, err := http.Get(apiURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(metrics), `http_requests_total{code="403",method="OPTIONS",route="/api/v1/workflows"}`) {
		t.Fatal("the API saw no refused preflight from the other origin")
	}
	page, err := app.Store().List(ctx, "acme", "", "", store.MaxListLimit)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range page.Campaigns {
		if strings.HasPrefix(c.ID, "refused") {
			t.Fatalf("the refused origin created %s", c.ID)
		}
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		t.Fatal("the service stopped during the test")
	}
}
