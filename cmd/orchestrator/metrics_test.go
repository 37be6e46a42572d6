package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"github.com/campaign-orchestrator/orchestrator/internal/config"
	"github.com/campaign-orchestrator/orchestrator/internal/deadletter"
	"github.com/campaign-orchestrator/orchestrator/internal/metrics"
	"github.com/campaign-orchestrator/orchestrator/internal/metrics/metricstest"
	"github.com/campaign-orchestrator/orchestrator/internal/store/redistest"
)

// dashboardFile is the Grafana dashboard built on the metrics.
const dashboardFile = "../../deploy/grafana/campaign-orchestrator.json"

// metricsApp runs NewApp with args (flags of serve) and env on loopback ports
// until the test ends, and returns it.
func metricsApp(t *testing.T, args []string, env map[string]string) *App {
	t.Helper()
	base := map[string]string{"HTTP_ADDR": "127.0.0.1:0", "EMBEDDED_NATS_ADDR": "127.0.0.1:0", "LOG_LEVEL": "error"}
	for k, v := range env {
		base[k] = v
	}
	cfg, err := config.Load(args, func(k string) string { return base[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	app, err := NewApp(ctx, cfg, slog.New(slog.DiscardHandler), Options{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("Run did not return")
		}
		if err := app.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return app
}

// metricsRequest sends a request as tenant acme and returns the status.
func metricsRequest(t *testing.T, method, url, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("X-Tenant-ID", "acme")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// metricsEventually polls cond every 20 ms until it holds or 20 s pass.
func metricsEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMetricsEndpoint runs two campaigns through the whole process (HTTP in,
// embedded NATS, in-process store, a downstream that fails one step) and
// checks the values GET /metrics serves.
func TestMetricsEndpoint(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Campaign string `json:"campaign_id"`
			Step     string `json:"step"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		if body.Campaign == "bad" && body.Step == "segment" {
			http.Error(w, "segment service broken", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(down.Close)
	app := metricsApp(t, nil, map[string]string{"STEPS_BASE_URL": down.URL})
	base := "http://" + app.HTTPAddr()

	for _, id := range []string{"spring", "bad"} {
		if code := metricsRequest(t, http.MethodPost, base+"/api/v1/campaigns", `{"campaign_id":"`+id+`","name":"x","start":true}`); code != http.StatusAccepted {
			t.Fatalf("create %s: %d", id, code)
		}
	}
	var s *metricstest.Scrape
	metricsEventually(t, "both campaigns ended, as /metrics says", func() bool {
		s = metricstest.Get(t, base+"/metrics")
		return s.Sum("orchestrator_campaigns", "state", "completed") == 1 && s.Sum("orchestrator_campaigns", "state", "failed") == 1
	})
	for _, c := range []struct {
		name string
		kv   []string
		want float64
	}{
		{"orchestrator_commands_received_total", []string{"verb", "create"}, 2},
		{"orchestrator_commands_applied_total", []string{"verb", "create"}, 2},
		{"orchestrator_commands_applied_total", []string{"verb", "advance"}, 6 + 2},
		{"orchestrator_step_duration_seconds_count", []string{"outcome", "succeeded"}, 5 + 1},
		{"orchestrator_step_duration_seconds_count", []string{"step", "segment", "outcome", "failed"}, 1},
		{"orchestrator_steps_total", []string{"step", "segment", "outcome", "failed"}, 1},
		{"orchestrator_steps_total", []string{"step", "render", "outcome", "succeeded"}, 1},
		{"orchestrator_campaigns", []string{"state", "running"}, 0},
		{"orchestrator_commands_dead_lettered_total", nil, 0},
		{"http_requests_total", []string{"route", "/api/v1/campaigns", "method", "POST", "code", "202"}, 2},
		{"http_request_duration_seconds_count", []string{"route", "/api/v1/campaigns", "method", "POST"}, 2},
		{"orchestrator_collector_errors_total", nil, 0},
	} {
		if !s.Has(c.name, c.kv...) {
			t.Errorf("%s%v not exposed", c.name, c.kv)
		} else if got := s.Sum(c.name, c.kv...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.kv, got, c.want)
		}
	}
	for _, name := range []string{"orchestrator_consumer_pending_messages", "orchestrator_consumer_ack_pending_messages",
		"orchestrator_consumer_redelivered_messages", "orchestrator_consumer_waiting_pulls", "go_goroutines", "process_cpu_seconds_total"} {
		if !s.Has(name) {
			t.Errorf("%s not exposed", name)
		}
	}
	// The HTTP metrics' labels: route patterns, never raw paths or ids.
	for _, route := range s.LabelValues("http_requests_total", "route") {
		if strings.Contains(route, "spring") || strings.Contains(route, "bad") {
			t.Errorf("route label %q holds a campaign id", route)
		}
	}
}

// TestWorkerRoleServesMetrics: a process without the ingress still serves
// /metrics (and health) on HTTP_ADDR, and nothing else.
func TestWorkerRoleServesMetrics(t *testing.T) {
	url, _ := redistest.Start(t)
	app := metricsApp(t, []string{"--role", "worker"}, map[string]string{"REDIS_URL": url})
	base := "http://" + app.HTTPAddr()
	s := metricstest.Get(t, base+"/metrics")
	for _, name := range []string{"orchestrator_campaigns", "orchestrator_consumer_pending_messages", "orchestrator_commands_received_total", "go_goroutines"} {
		if !s.Has(name) {
			t.Errorf("%s not exposed by role worker", name)
		}
	}
	if s.Has("http_requests_total") {
		t.Error("role worker exposes the ingress's HTTP metrics")
	}
	if code := metricsRequest(t, http.MethodGet, base+"/healthz", ""); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
	metricsEventually(t, "/readyz 200 once the workers pull", func() bool { return metricsRequest(t, http.MethodGet, base+"/readyz", "") == http.StatusOK })
	if code := metricsRequest(t, http.MethodGet, base+"/api/v1/campaigns", ""); code != http.StatusNotFound {
		t.Errorf("role worker answers the API: %d", code)
	}
}

// TestMaxDeliveriesCounted: the poison-message handler's stored copies are
// counted once each, by verb, and the Observe hook already set still runs.
func TestMaxDeliveriesCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	var seen []deadletter.Result
	cfg := countMaxDeliveries(deadletter.Config{Observe: func(o deadletter.Outcome) { seen = append(seen, o.Result) }}, m)
	cfg.Observe(deadletter.Outcome{Result: deadletter.Stored, Subject: "campaign.cmd.acme.spring.start"})
	cfg.Observe(deadletter.Outcome{Result: deadletter.AlreadyStored, Subject: "campaign.cmd.acme.spring.start"})
	cfg.Observe(deadletter.Outcome{Result: deadletter.Stored, Subject: "campaign.cmd.acme.spring.bogus"})
	s := metricstest.Gather(t, reg)
	if got := s.Sum("orchestrator_commands_dead_lettered_total", "verb", "start", "reason", "max_deliveries"); got != 1 {
		t.Errorf("dead_lettered{start,max_deliveries} = %v, want 1", got)
	}
	if got := s.Sum("orchestrator_commands_dead_lettered_total", "verb", "invalid", "reason", "max_deliveries"); got != 1 {
		t.Errorf("dead_lettered{invalid,max_deliveries} = %v, want 1", got)
	}
	if len(seen) != 3 {
		t.Errorf("the original Observe saw %v", seen)
	}
	countMaxDeliveries(deadletter.Config{}, nil).Observe(deadletter.Outcome{Result: deadletter.Stored}) // no metrics, no hook: no panic
}

// grafanaDashboard is the part of a Grafana dashboard the test reads.
type grafanaDashboard struct {
	SchemaVersion int `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name, Type string
			Query      any `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ X, Y, W, H int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // collapsed rows
}

// metricName matches the metric names of a PromQL expression: ours all
// start with one of these prefixes; label names, functions and keywords do
// not.
var httpLatencySelector = regexp.MustCompile(`http_request_duration_seconds_\w+\{[^}]*\}`)

var metricName = regexp.MustCompile(`\b(?:orchestrator|http|go|process)_[a-zA-Z0-9_]+\b`)

// TestDashboardUsesExposedMetrics: every metric name a panel of the Grafana
// dashboard queries is one the process actually exposes (so renaming a
// metric without the dashboard fails here), every orchestrator_ family is
// on the dashboard, and the dashboard is well-formed.
func TestDashboardUsesExposedMetrics(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d", d.SchemaVersion)
	}
	hasDS := false
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus" {
			hasDS = true
		}
	}
	if !hasDS {
		t.Error("no Prometheus datasource variable named datasource")
	}

	// What a process running everything exposes, with one HTTP request
	// answered so that the HTTP series exist.
	app := metricsApp(t, nil, nil)
	base := "http://" + app.HTTPAddr()
	if code := metricsRequest(t, http.MethodGet, base+"/healthz", ""); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	s := metricstest.Get(t, base+"/metrics")
	exposed := s.Names()

	used := map[string]bool{}
	ids := map[int]bool{}
	var walk func(ps []grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d used twice", p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.X < 0 || p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H <= 0 {
				t.Errorf("panel %q: gridPos %+v", p.Title, p.GridPos)
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q does not use the datasource variable", p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				// HTTP latency panels leave out the SSE route, whose
				// requests last as long as the client listens.
				for _, sel := range httpLatencySelector.FindAllString(tg.Expr, -1) {
					if !strings.Contains(sel, `route!~".*/events"`) {
						t.Errorf("panel %q, query %s: %s includes the SSE route", p.Title, tg.RefID, sel)
					}
				}
				names := metricName.FindAllString(tg.Expr, -1)
				if len(names) == 0 {
					t.Errorf("panel %q, query %s: no metric in %q", p.Title, tg.RefID, tg.Expr)
				}
				for _, n := range names {
					used[n] = true
					if !slices.Contains(exposed, n) {
						t.Errorf("panel %q queries %s, which /metrics does not expose", p.Title, n)
					}
				}
			}
		}
	}
	walk(d.Panels)
	if len(used) == 0 {
		t.Fatal("the dashboard queries no metric")
	}
	// Every family of ours is on the dashboard (histograms by any series).
	for family, typ := range s.Types {
		if !strings.HasPrefix(family, "orchestrator_") {
			continue
		}
		found := used[family]
		if typ == "histogram" {
			found = used[family+"_bucket"] || used[family+"_sum"] || used[family+"_count"]
		}
		if !found {
			t.Errorf("%s (%s) is on no panel of the dashboard", family, typ)
		}
	}
}

// /metrics answers OpenMetrics when asked, and the step and command apply
// latency histograms carry the trace id of a sampled command as exemplar.
func TestOpenMetricsExemplars(t *testing.T) {
	down, _ := newDownstream(t)
	app := metricsApp(t, nil, map[string]string{"STEPS_BASE_URL": down.URL})
	base := "http://" + app.HTTPAddr()
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/campaigns", strings.NewReader(`{"campaign_id":"traced","name":"x","start":true}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Tenant-ID", "acme")
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("create: %d", res.StatusCode)
	}
	metricsEventually(t, "the campaign completed", func() bool {
		return metricstest.Get(t, base+"/metrics").Sum("orchestrator_campaigns", "state", "completed") == 1
	})
	req, _ = http.NewRequest(http.MethodGet, base+"/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") || !strings.HasSuffix(strings.TrimSpace(string(body)), "# EOF") {
		t.Fatalf("Content-Type %q, not OpenMetrics:\n%.500s", ct, body)
	}
	for _, family := range []string{"orchestrator_step_duration_seconds_bucket", "orchestrator_command_apply_duration_seconds_bucket"} {
		re := regexp.MustCompile(`(?m)^` + family + `\{[^}]*\} \S+ # \{trace_id="` + traceID + `"\} `)
		if !re.Match(body) {
			t.Errorf("no %s bucket with exemplar trace_id=%s:\n%s", family, traceID, grepLines(string(body), family))
		}
	}
	// The classic text format still answers a plain scrape.
	if s := metricstest.Get(t, base+"/metrics"); !s.Has("orchestrator_command_apply_duration_seconds_count", "verb", "create") {
		t.Error("orchestrator_command_apply_duration_seconds_count{verb=create} not exposed")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// alertRules is the part of a Prometheus rules file the test reads.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// Every alert rule of deploy/prometheus/alerts.yaml parses with the PromQL
// parser, and every metric it selects is exposed by /metrics (histogram
// series by their family), with each label value it selects.
func TestAlertRules(t *testing.T) {
	raw, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f alertRules
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatal(err)
	}
	app := metricsApp(t, nil, nil)
	base := "http://" + app.HTTPAddr()
	if code := metricsRequest(t, http.MethodGet, base+"/healthz", ""); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	scrape := metricstest.Get(t, base+"/metrics")
	exposed := scrape.Names()
	p := parser.NewParser(parser.Options{})
	want := map[string]bool{"OrchestratorDLQGrowing": true, "OrchestratorConsumerLag": true, "OrchestratorLocksLost": true,
		"OrchestratorStepFailureRatio": true, "OrchestratorNoWorkerReady": true}
	n := 0
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			n++
			delete(want, r.Alert)
			if r.Alert == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %+v: needs alert, labels.severity and annotations.summary", r)
			}
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
				}
			}
			expr, err := p.ParseExpr(r.Expr)
			if err != nil {
				t.Errorf("%s: %q does not parse: %v", r.Alert, r.Expr, err)
				continue
			}
			if expr.Type() != parser.ValueTypeVector {
				t.Errorf("%s: %q is a %s, want an instant vector", r.Alert, r.Expr, expr.Type())
			}
			var names []string
			parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
				vs, ok := node.(*parser.VectorSelector)
				if !ok {
					return nil
				}
				names = append(names, vs.Name)
				// Each label value it selects is one the metric takes
				// (outcome="failed", outcome=~"succeeded|failed").
				for _, m := range vs.LabelMatchers {
					if m.Name == model.MetricNameLabel || (m.Type != labels.MatchEqual && m.Type != labels.MatchRegexp) {
						continue
					}
					values := scrape.LabelValues(vs.Name, m.Name)
					for _, want := range strings.Split(m.Value, "|") {
						if !slices.Contains(values, want) {
							t.Errorf("%s selects %s{%s=%q}, but /metrics shows %s only with %v", r.Alert, vs.Name, m.Name, want, m.Name, values)
						}
					}
				}
				return nil
			})
			if len(names) == 0 {
				t.Errorf("%s: selects no metric", r.Alert)
			}
			for _, name := range names {
				if !slices.Contains(exposed, name) {
					t.Errorf("%s uses %s, which /metrics does not expose", r.Alert, name)
				}
			}
		}
	}
	if len(want) > 0 || n == 0 {
		t.Errorf("alerts missing: %v", want)
	}
}

// TestPprofEndpoints: PPROF_ADDR serves the Go profiles on its own
// loopback listener (a CPU profile taken for a second is a real profile),
// never on the ingress's address; unset, no process serves them.
func TestPprofEndpoints(t *testing.T) {
	app := metricsApp(t, nil, map[string]string{"PPROF_ADDR": "127.0.0.1:0"})
	base := "http://" + app.PprofAddr()
	if code := metricsRequest(t, http.MethodGet, base+"/debug/pprof/", ""); code != http.StatusOK {
		t.Errorf("/debug/pprof/: %d", code)
	}
	resp, err := http.Get(base + "/debug/pprof/profile?seconds=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// A profile is gzipped protocol buffers (what go tool pprof reads).
	zr, err := gzip.NewReader(resp.Body)
	var raw []byte
	if err == nil {
		raw, err = io.ReadAll(zr)
	}
	if resp.StatusCode != http.StatusOK || err != nil || len(raw) == 0 {
		t.Errorf("CPU profile: %d, %d bytes once unzipped, %v", resp.StatusCode, len(raw), err)
	}
	if code := metricsRequest(t, http.MethodGet, "http://"+app.HTTPAddr()+"/debug/pprof/", ""); code != http.StatusNotFound {
		t.Errorf("the ingress serves /debug/pprof/: %d", code)
	}
	if off := metricsApp(t, nil, nil); off.PprofAddr() != "" {
		t.Errorf("PPROF_ADDR unset: profiles served on %s", off.PprofAddr())
	}
}

// TestReadinessFollowsNATS: /readyz of a worker and of an ingress, each on
// its own connection to a NATS server (NATS_URL), answers 503 while the
// server is down and 200 again once it is back, the processes having
// reconnected rather than exited; the ingress limits commands as
// COMMAND_RATE and COMMAND_BURST say, 429 with Retry-After.
func TestReadinessFollowsNATS(t *testing.T) {
	opts := server.Options{Host: "127.0.0.1", Port: redistest.FreePort(t), JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
	var ns *server.Server
	startNATS := func() {
		t.Helper()
		o := opts
		srv, err := server.NewServer(&o)
		if err != nil {
			t.Fatal(err)
		}
		go srv.Start()
		if !srv.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats-server not ready")
		}
		ns = srv
	}
	startNATS()
	t.Cleanup(func() { ns.Shutdown() }) // after the processes stop (Cleanup is last-in first-out)
	rurl, _ := redistest.Start(t)
	env := map[string]string{"NATS_URL": ns.ClientURL(), "REDIS_URL": rurl, "COMMAND_RATE": "0.01", "COMMAND_BURST": "1"}
	worker := metricsApp(t, []string{"--role", "worker"}, env)
	ingress := metricsApp(t, []string{"--role", "ingress"}, env)
	readyIs := func(code int) func() bool {
		return func() bool {
			for _, a := range []*App{worker, ingress} {
				if metricsRequest(t, http.MethodGet, "http://"+a.HTTPAddr()+"/readyz", "") != code {
					return false
				}
			}
			return true
		}
	}
	metricsEventually(t, "both ready", readyIs(http.StatusOK))

	create := "http://" + ingress.HTTPAddr() + "/api/v1/campaigns"
	if code := metricsRequest(t, http.MethodPost, create, `{"campaign_id":"r1","name":"r1"}`); code != http.StatusAccepted {
		t.Fatalf("first command: %d", code)
	}
	req, _ := http.NewRequest(http.MethodPost, create, strings.NewReader(`{"campaign_id":"r2","name":"r2"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Tenant-ID", "acme")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if secs, err := strconv.Atoi(res.Header.Get("Retry-After")); res.StatusCode != http.StatusTooManyRequests || err != nil || secs < 1 || secs > 100 {
		t.Fatalf("second command over COMMAND_BURST 1: %d, Retry-After %q", res.StatusCode, res.Header.Get("Retry-After"))
	}

	ns.Shutdown()
	ns.WaitForShutdown()
	metricsEventually(t, "both unready while NATS is down", readyIs(http.StatusServiceUnavailable))
	startNATS()
	metricsEventually(t, "both ready again once NATS is back", readyIs(http.StatusOK))
}
