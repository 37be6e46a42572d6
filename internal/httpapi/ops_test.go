package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/campaign-orchestrator/orchestrator/docs"
	"github.com/campaign-orchestrator/orchestrator/internal/events/natstest"
	"github.com/campaign-orchestrator/orchestrator/internal/httpapi"
)

func TestHealthReadyMetrics(t *testing.T) {
	workersReady := errors.New("workers: not started")
	e := newEnv(t, storeKinds[0].open(t), func(_ *httpapi.Config, d *httpapi.Deps) {
		d.Ready = func(context.Context) error { return workersReady }
	})
	if r := e.do("GET", "/healthz", nil); r.status != 200 {
		t.Fatalf("healthz: %s", r)
	}
	r := e.do("GET", "/readyz", nil)
	if r.status != 503 || !strings.Contains(string(r.body), "workers: not started") || !strings.Contains(string(r.body), `"store":"ok"`) {
		t.Fatalf("readyz with workers not ready: %s", r)
	}
	workersReady = nil
	if r := e.do("GET", "/readyz", nil); r.status != 200 || !strings.Contains(string(r.body), `"jetstream":"ok"`) {
		t.Fatalf("readyz: %s", r)
	}

	accepted(t, e.create("acme", "m1"))
	wantError(t, e.do("GET", "/api/v1/campaigns/secret-id-123", nil, "X-Tenant-ID", "acme"), 404, "")
	wantError(t, e.do("GET", "/no/such/route", nil), 404, "")
	wantError(t, e.do("DELETE", "/api/v1/campaigns/x", nil), 405, "")
	m := e.do("GET", "/metrics", nil)
	if m.status != 200 {
		t.Fatalf("metrics: %s", m)
	}
	text := string(m.body)
	for _, want := range []string{
		`http_requests_total{code="202",method="POST",route="/api/v1/campaigns"} 1`,
		`http_requests_total{code="404",method="GET",route="/api/v1/campaigns/:id"} 1`,
		`http_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`http_requests_total{code="405",method="DELETE",route="/api/v1/campaigns/:id"} 1`,
		`http_request_duration_seconds_bucket{method="POST",route="/api/v1/campaigns",le="+Inf"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Fatalf("metrics lack %s:\n%s", want, grepLines(text, "http_"))
		}
	}
	if strings.Contains(text, "secret-id-123") || strings.Contains(text, "/no/such/route") {
		t.Fatal("a raw path became a label value")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestOpenAPIRoutes checks that every route Echo serves is in
// docs/openapi.yaml and every operation there is a route.
func TestOpenAPIRoutes(t *testing.T) {
	e := newEnv(t, storeKinds[0].open(t))
	var doc struct {
		OpenAPI string                    `yaml:"openapi"`
		Paths   map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(docs.OpenAPI, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Fatalf("openapi %q, want 3.1", doc.OpenAPI)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			switch method {
			case "get", "post", "put", "patch", "delete", "head", "options", "trace":
				documented[strings.ToUpper(method)+" "+path] = true
			}
		}
	}
	served := map[string]bool{}
	for _, r := range e.api.Routes() {
		served[r.Method+" "+r.Path] = true
		if !documented[r.Method+" "+r.Path] {
			t.Errorf("route %s %s is not in docs/openapi.yaml", r.Method, r.Path)
		}
	}
	for op := range documented {
		if !served[op] {
			t.Errorf("docs/openapi.yaml documents %s, which is not a route", op)
		}
	}
	if len(served) < 9 {
		t.Fatalf("only %d routes: %v", len(served), served)
	}
	r := e.do("GET", "/api/v1/openapi.yaml", nil)
	if r.status != 200 || string(r.body) != string(docs.OpenAPI) || !strings.Contains(r.header.Get("Content-Type"), "yaml") {
		t.Fatalf("GET /api/v1/openapi.yaml: %d %q", r.status, r.header.Get("Content-Type"))
	}
}

func TestNATSDown503(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		ns := natstest.StartRestartable(t)
		e := newEnvOn(t, ns.Server(), k.open(t), withConfig(func(c *httpapi.Config) { c.PublishTimeout = 300 * time.Millisecond }))
		accepted(t, e.create("acme", "before"))

		ns.Stop()
		body := []byte(`{"campaign_id":"during","name":"n","tenant_id":"acme"}`)
		r := e.do("POST", "/api/v1/campaigns", body, "Idempotency-Key", "k1")
		wantError(t, r, 503, "")
		if code, _, _ := r.errorCode(); code != "unavailable" {
			t.Fatalf("code %q", code)
		}
		if r := e.do("GET", "/readyz", nil); r.status != 503 || !strings.Contains(string(r.body), "nats") {
			t.Fatalf("readyz with NATS down: %s", r)
		}
		if r := e.do("GET", "/healthz", nil); r.status != 200 {
			t.Fatalf("healthz: %s", r)
		}

		ns.Start()
		eventually(t, "ready again", 20*time.Second, func() bool { return e.do("GET", "/readyz", nil).status == 200 })
		// The 503 was not kept: the same key now succeeds, and it is not a replay.
		r = e.do("POST", "/api/v1/campaigns", body, "Idempotency-Key", "k1")
		if _, cmdID := accepted(t, r); r.header.Get("Idempotent-Replayed") != "" || cmdID == "" {
			t.Fatalf("after recovery: %s %v", r, r.header)
		}
		// Nothing half-done: exactly the two accepted commands are stored.
		msgs := e.commands()
		if len(msgs) != 2 || commandEnvelope(t, msgs[0]).CampaignID != "before" || commandEnvelope(t, msgs[1]).CampaignID != "during" {
			t.Fatalf("stored %d commands", len(msgs))
		}
	})
}

func TestStreamMissing503(t *testing.T) {
	// JetStream up but without CAMPAIGN_COMMANDS: nothing can store the
	// command, so 503 (not 202 from a core-NATS publish nobody stored).
	var logs bytes.Buffer
	var mu sync.Mutex
	e := newEnv(t, storeKinds[0].open(t), func(_ *httpapi.Config, d *httpapi.Deps) {
		d.Logger = slog.New(slog.NewJSONHandler(&lockedWriter{w: &logs, mu: &mu}, nil))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.js.DeleteStream(ctx, "CAMPAIGN_COMMANDS"); err != nil {
		t.Fatal(err)
	}
	wantError(t, e.create("acme", "c1"), 503, "")
	wantError(t, e.create("acme", "a.b"), 400, "campaign_id")
	applyStreams(t, e.js)
	accepted(t, e.create("acme", "c1"))

	// The 503 is logged with the tenant and campaign; client errors are not.
	mu.Lock()
	defer mu.Unlock()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err == nil && m["level"] != "INFO" {
			lines = append(lines, m)
		}
	}
	var failed []map[string]any
	for _, m := range lines {
		if strings.HasPrefix(fmt.Sprint(m["msg"]), "request failed") {
			failed = append(failed, m)
		}
	}
	if len(failed) != 1 || failed[0]["tenant_id"] != "acme" || failed[0]["campaign_id"] != "c1" || failed[0]["level"] != "WARN" {
		t.Fatalf("logged %v", failed)
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
