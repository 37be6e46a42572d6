package dashboard_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/dashboard"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

func get(t *testing.T, h http.Handler, method, path string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Result()
}

func TestServesThePageAndItsConfig(t *testing.T) {
	h, err := dashboard.New(dashboard.Config{API: "http://API.example:8000/"})
	if err != nil {
		t.Fatal(err)
	}
	res := get(t, h, "GET", "/")
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), `<script type="module" src="/app.js">`) {
		t.Fatalf("GET /: %d %q\n%s", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	csp := res.Header.Get("Content-Security-Policy")
	for _, want := range []string{"script-src 'self'", "connect-src 'self' http://api.example:8000;", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Fatalf("CSP %q lacks %q", csp, want)
		}
	}
	if res.Header.Get("X-Content-Type-Options") != "nosniff" || res.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("headers %v", res.Header)
	}
	for path, ct := range map[string]string{"/app.js": "text/javascript", "/api.js": "text/javascript", "/sse.js": "text/javascript", "/style.css": "text/css"} {
		if res := get(t, h, "GET", path); res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), ct) {
			t.Fatalf("GET %s: %d %q", path, res.StatusCode, res.Header.Get("Content-Type"))
		}
	}
	for _, path := range []string{"/nope", "/api/v1/campaigns", "/../dashboard.go", "/web/app.js"} {
		if res := get(t, h, "GET", path); res.StatusCode != 404 {
			t.Fatalf("GET %s: %d, want 404 (the dashboard serves its files only)", path, res.StatusCode)
		}
	}
	if res := get(t, h, "POST", "/"); res.StatusCode != 405 || res.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST /: %d", res.StatusCode)
	}

	res = get(t, h, "GET", "/config.json")
	var cfg struct {
		API         string                 `json:"api"`
		Transitions map[string][]fsm.State `json:"transitions"`
		States      []fsm.State            `json:"states"`
	}
	if err := json.NewDecoder(res.Body).Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.API != "http://api.example:8000" || len(cfg.States) != 6 {
		t.Fatalf("config %+v", cfg)
	}
	want := map[string][]fsm.State{
		"start": {fsm.Pending}, "pause": {fsm.Running}, "resume": {fsm.Paused},
		"cancel": {fsm.Pending, fsm.Running, fsm.Paused}, "retry": {fsm.Failed},
	}
	if len(cfg.Transitions) != len(want) {
		t.Fatalf("transitions %v, want %v", cfg.Transitions, want)
	}
	for v, states := range want {
		if !slices.Equal(cfg.Transitions[v], states) {
			t.Fatalf("transitions[%s] = %v, want %v (CONTRACT section 5)", v, cfg.Transitions[v], states)
		}
	}
}

// Transitions agrees with fsm.Apply on every (state, verb) pair.
func TestTransitionsAreTheFSMs(t *testing.T) {
	tr := dashboard.Transitions()
	for _, v := range []fsm.Verb{fsm.Start, fsm.Pause, fsm.Resume, fsm.Cancel, fsm.Retry} {
		for _, st := range fsm.States {
			c := fsm.Campaign{Tenant: "a", ID: "b", State: st, Version: 3, Step: 0,
				Workflow: fsm.Workflow{Name: "w", Steps: []fsm.Step{{Name: "x"}, {Name: "y"}}}}
			_, err := fsm.Apply(&c, fsm.Command{ID: "id", Verb: v, Tenant: "a", Campaign: "b"}, time.Now())
			var rej *fsm.RejectedError
			if err != nil && !errors.As(err, &rej) {
				t.Fatalf("%s in %s: %v", v, st, err)
			}
			if got := slices.Contains(tr[v], st); got != (err == nil) {
				t.Errorf("%s in %s: dashboard allows=%v, fsm applies=%v", v, st, got, err == nil)
			}
		}
	}
}

func TestBadAPIURL(t *testing.T) {
	for _, bad := range []string{"", "localhost:8000", "ftp://x", "http://", "http://u:p@h:1", "http://h:1/?q=1", "http://h:1/#f"} {
		if _, err := dashboard.New(dashboard.Config{API: bad}); err == nil || !strings.Contains(err.Error(), "--api") {
			t.Errorf("--api %q: error %v, want one naming --api", bad, err)
		}
	}
	h, err := dashboard.New(dashboard.Config{API: "https://gw.example/orchestrator/"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(get(t, h, "GET", "/config.json").Body)
	if !strings.Contains(string(b), `"api":"https://gw.example/orchestrator"`) {
		t.Fatalf("config %s", b)
	}
}
