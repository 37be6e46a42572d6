package httpapi_test

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/campaign-orchestrator/orchestrator/internal/httpapi"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
)

func noAccessControl(t *testing.T, r resp) {
	t.Helper()
	for h := range r.header {
		if strings.HasPrefix(strings.ToLower(h), "access-control-") {
			t.Fatalf("header %s: %q on a refused origin", h, r.header.Get(h))
		}
	}
}

func TestCORS(t *testing.T) {
	e := newEnv(t, storeKinds[0].open(t))
	body := []byte(`{"campaign_id":"c1","name":"n"}`)
	const allowed, evil = "http://localhost:3000", "https://evil.example"

	t.Run("allowed simple request", func(t *testing.T) {
		r := e.do("POST", "/api/v1/campaigns", body, "X-Tenant-ID", "acme", "Origin", allowed)
		accepted(t, r)
		if r.header.Get("Access-Control-Allow-Origin") != allowed || !strings.Contains(strings.Join(r.header.Values("Vary"), ","), "Origin") {
			t.Fatalf("headers %v", r.header)
		}
		if !strings.Contains(r.header.Get("Access-Control-Expose-Headers"), "Idempotent-Replayed") {
			t.Fatalf("Expose-Headers %q", r.header.Get("Access-Control-Expose-Headers"))
		}
	})
	t.Run("allowed preflight", func(t *testing.T) {
		r := e.do("OPTIONS", "/api/v1/campaigns", nil, "Origin", allowed, "Access-Control-Request-Method", "POST",
			"Access-Control-Request-Headers", "content-type,x-tenant-id,idempotency-key,authorization,traceparent")
		if r.status != 204 || r.header.Get("Access-Control-Allow-Origin") != allowed {
			t.Fatalf("preflight: %s %v", r, r.header)
		}
		for _, h := range []string{"Content-Type", "Authorization", "Idempotency-Key", "X-Tenant-ID", "traceparent"} {
			if !strings.Contains(r.header.Get("Access-Control-Allow-Headers"), h) {
				t.Fatalf("Allow-Headers %q lacks %s", r.header.Get("Access-Control-Allow-Headers"), h)
			}
		}
		if m := r.header.Get("Access-Control-Allow-Methods"); !strings.Contains(m, "POST") || !strings.Contains(m, "GET") {
			t.Fatalf("Allow-Methods %q", m)
		}
		if !strings.Contains(strings.Join(r.header.Values("Vary"), ","), "Origin") {
			t.Fatalf("Vary %v", r.header.Values("Vary"))
		}
		// A preflight for a route with a path parameter too.
		if r := e.do("OPTIONS", "/api/v1/campaigns/c1/start", nil, "Origin", allowed, "Access-Control-Request-Method", "POST"); r.status != 204 {
			t.Fatalf("preflight verb: %s", r)
		}
	})
	t.Run("refused preflight", func(t *testing.T) {
		for _, origin := range []string{evil, "http://LOCALHOST:3000", "http://localhost:3000/", "http://localhost:3001", "null"} {
			r := e.do("OPTIONS", "/api/v1/campaigns", nil, "Origin", origin, "Access-Control-Request-Method", "POST",
				"Access-Control-Request-Headers", "content-type")
			wantError(t, r, 403, "Origin")
			noAccessControl(t, r)
		}
	})
	t.Run("refused simple request is not executed", func(t *testing.T) {
		before := len(e.commands())
		r := e.do("POST", "/api/v1/campaigns", []byte(`{"campaign_id":"evil","name":"n"}`), "X-Tenant-ID", "acme", "Origin", evil)
		wantError(t, r, 403, "Origin")
		noAccessControl(t, r)
		r = e.do("POST", "/api/v1/campaigns", []byte(`{"campaign_id":"evil2","name":"n"}`), "X-Tenant-ID", "acme", "Origin", evil, "Content-Type", "text/plain")
		wantError(t, r, 403, "Origin")
		if after := len(e.commands()); after != before {
			t.Fatalf("%d commands published by refused origins", after-before)
		}
		wantError(t, e.do("GET", "/api/v1/campaigns", nil, "X-Tenant-ID", "acme", "Origin", evil), 403, "Origin")
	})
	t.Run("no Origin", func(t *testing.T) {
		r := e.do("GET", "/api/v1/campaigns", nil, "X-Tenant-ID", "acme")
		if r.status != 200 {
			t.Fatalf("%s", r)
		}
		noAccessControl(t, r)
	})
}

func TestCORSConfig(t *testing.T) {
	e := newEnv(t, storeKinds[0].open(t))
	deps := httpapi.Deps{JS: e.js, NC: e.nc, Store: store.NewMemory(store.Options{}), Workflows: workflows,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, origins := range [][]string{{"*"}, {"http://localhost:3000", "*"}, {"https://*.example.com"}, {"localhost:3000"},
		{"http://localhost:3000/app"}, {"ftp://x"}, {"http://x/"}} {
		_, err := httpapi.New(httpapi.Config{AllowedOrigins: origins}, deps)
		if err == nil || !strings.Contains(err.Error(), "CORS_ALLOWED_ORIGINS") {
			t.Fatalf("origins %q: want an error naming CORS_ALLOWED_ORIGINS, got %v", origins, err)
		}
	}
	if _, err := httpapi.New(httpapi.Config{AllowedOrigins: []string{"http://localhost:3000", "https://Dash.Example.com:8443"}}, deps); err != nil {
		t.Fatalf("valid origins: %v", err)
	}
}
