package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/httpapi"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
)

func TestCreateStoresCommandBefore202(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		e := newEnv(t, k.open(t))
		const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
		body := `{"campaign_id":"spring-sale","name":"Spring sale","workflow":"quick","params":{"segment":"vip"},"start":true}`
		r := e.do("POST", "/api/v1/campaigns", []byte(body), "X-Tenant-ID", "acme", "traceparent", tp)
		id, cmdID := accepted(t, r)
		if id != "spring-sale" {
			t.Fatalf("campaign_id %q", id)
		}
		if loc := r.header.Get("Location"); loc != "/api/v1/campaigns/spring-sale" {
			t.Fatalf("Location %q", loc)
		}
		msgs := e.commands()
		if len(msgs) != 1 {
			t.Fatalf("want 1 command stored, got %d", len(msgs))
		}
		m := msgs[0]
		if want := "campaign.cmd.acme.spring-sale.create"; m.Subject != want {
			t.Fatalf("subject %q, want %q", m.Subject, want)
		}
		if got := m.Header.Get(nats.MsgIdHdr); got != cmdID {
			t.Fatalf("Nats-Msg-Id %q, want command_id %q", got, cmdID)
		}
		if got := m.Header.Get("traceparent"); got != tp {
			t.Fatalf("traceparent %q", got)
		}
		env := commandEnvelope(t, m)
		if env.ID != cmdID || env.Type != "create" || env.TenantID != "acme" || env.CampaignID != "spring-sale" || env.IssuedAt == nil {
			t.Fatalf("envelope %+v", env)
		}
		var p fsm.CreatePayload
		if err := json.Unmarshal(env.Payload, &p); err != nil {
			t.Fatal(err)
		}
		if p.Name != "Spring sale" || p.Workflow != "quick" || !p.Start || string(p.Params) != `{"segment":"vip"}` {
			t.Fatalf("payload %+v", p)
		}
		// The worker accepts what the ingress publishes.
		cmd, err := events.DecodeCommand(m.Subject, m.Header, m.Data, workflows)
		if err != nil || cmd.ID != cmdID || cmd.Verb != fsm.Create || cmd.Workflow.Name != "quick" {
			t.Fatalf("DecodeCommand: %+v %v", cmd, err)
		}
	})
}

func TestCreateGeneratesCampaignID(t *testing.T) {
	e := newEnv(t, storeKinds[0].open(t))
	id1, _ := accepted(t, e.do("POST", "/api/v1/campaigns", []byte(`{"name":"a","tenant_id":"acme"}`)))
	id2, _ := accepted(t, e.do("POST", "/api/v1/campaigns", []byte(`{"name":"a","tenant_id":"acme"}`)))
	if !events.ValidToken(id1) || id1 == id2 || strings.ToLower(id1) != id1 {
		t.Fatalf("generated ids %q %q", id1, id2)
	}
	msgs := e.commands()
	if len(msgs) != 2 || commandEnvelope(t, msgs[0]).Payload == nil {
		t.Fatalf("want 2 commands, got %d", len(msgs))
	}
	if p := commandEnvelope(t, msgs[0]); p.CampaignID != id1 || p.TenantID != "acme" {
		t.Fatalf("envelope %+v", p)
	}
}

func TestCreateValidation(t *testing.T) {
	e := newEnv(t, storeKinds[0].open(t))
	seed(t, e.st, "acme", "exists", fsm.Pending)
	long := strings.Repeat("x", 65)
	huge := strings.Repeat("\xff", 400_000) // JSON escapes: 400,000 U+FFFD once decoded
	cases := []struct {
		name   string
		body   string
		hdr    []string
		status int
		field  string
	}{
		{"invalid JSON", `{"name": `, nil, 400, "body"},
		{"not an object", `["a"]`, nil, 400, "body"},
		{"trailing data", `{"name":"a"} {}`, nil, 400, "body"},
		{"empty body", ``, nil, 400, "body"},
		{"subject injection", `{"campaign_id":"a.>","name":"a"}`, nil, 400, "campaign_id"},
		{"wildcard", `{"campaign_id":"*","name":"a"}`, nil, 400, "campaign_id"},
		{"empty campaign_id", `{"campaign_id":"","name":"a"}`, nil, 400, "campaign_id"},
		{"campaign_id too long", `{"campaign_id":"` + long + `","name":"a"}`, nil, 400, "campaign_id"},
		{"campaign_id not a string", `{"campaign_id":7,"name":"a"}`, nil, 400, "campaign_id"},
		{"name missing", `{"campaign_id":"c1"}`, nil, 400, "name"},
		{"name blank", `{"campaign_id":"c1","name":"  "}`, nil, 400, "name"},
		{"name not a string", `{"campaign_id":"c1","name":3}`, nil, 400, "name"},
		{"name too long", `{"campaign_id":"c1","name":"` + strings.Repeat("n", 257) + `"}`, nil, 400, "name"},
		{"unknown workflow", `{"campaign_id":"c1","name":"a","workflow":"nope"}`, nil, 400, "workflow"},
		{"params not an object", `{"campaign_id":"c1","name":"a","params":[1]}`, nil, 400, "params"},
		{"start not a boolean", `{"campaign_id":"c1","name":"a","start":"yes"}`, nil, 400, "start"},
		{"unknown field", `{"campaign_id":"c1","name":"a","colour":"red"}`, nil, 400, "colour"},
		{"bad tenant_id", `{"campaign_id":"c1","name":"a","tenant_id":"a.b"}`, []string{"X-Tenant-ID", ""}, 400, "tenant_id"},
		{"no tenant", `{"campaign_id":"c1","name":"a"}`, []string{"X-Tenant-ID", ""}, 400, "tenant_id"},
		{"bad X-Tenant-ID", `{"campaign_id":"c1","name":"a"}`, []string{"X-Tenant-ID", "a>"}, 400, "X-Tenant-ID"},
		{"tenant header and body differ", `{"campaign_id":"c1","name":"a","tenant_id":"other"}`, nil, 400, "tenant_id"},
		{"Idempotency-Key too long", `{"campaign_id":"c1","name":"a"}`, []string{"Idempotency-Key", strings.Repeat("k", 256)}, 400, "Idempotency-Key"},
		{"campaign exists", `{"campaign_id":"exists","name":"a"}`, nil, 409, "campaign_id"},
		{"text/plain", `{"campaign_id":"c1","name":"a"}`, []string{"Content-Type", "text/plain"}, 415, "Content-Type"},
		{"no Content-Type", `{"campaign_id":"c1","name":"a"}`, []string{"Content-Type", ""}, 415, "Content-Type"},
		{"form", `campaign_id=c1`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, "Content-Type"},
		// Hostile values are quoted bounded: the answer (kept a day under an
		// Idempotency-Key) never repeats megabytes of what the client sent.
		{"huge unknown workflow", `{"campaign_id":"c1","name":"a","workflow":"` + huge + `"}`, nil, 400, "workflow"},
		{"huge number for a string", `{"campaign_id":"c1","name":` + strings.Repeat("9", 400_000) + `}`, nil, 400, "name"},
		{"huge unknown field", `{"campaign_id":"c1","name":"a","` + huge + `":1}`, nil, 400, "body"},
		{"huge Content-Type", `{"campaign_id":"c1","name":"a"}`, []string{"Content-Type", "text/" + strings.Repeat("x", 60_000)}, 415, "Content-Type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr := append([]string{"X-Tenant-ID", "acme"}, tc.hdr...)
			r := e.do("POST", "/api/v1/campaigns", []byte(tc.body), hdr...)
			wantError(t, r, tc.status, tc.field)
			if _, field, msg := r.errorCode(); len(msg) > events.MaxReasonBytes || len(field) > events.MaxQuotedBytes || !utf8.ValidString(msg) {
				t.Fatalf("error message of %d bytes, field of %d (valid UTF-8: %v)", len(msg), len(field), utf8.ValidString(msg))
			}
		})
	}
	t.Run("empty Idempotency-Key", func(t *testing.T) {
		req, _ := http.NewRequest("POST", e.ts.URL+"/api/v1/campaigns", strings.NewReader(`{"campaign_id":"c1","name":"a"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Tenant-ID", "acme")
		req.Header["Idempotency-Key"] = []string{""}
		wantError(t, e.send(req), 400, "Idempotency-Key")
	})
	if n := len(e.commands()); n != 0 {
		t.Fatalf("%d commands published by refused requests", n)
	}
}

func TestBodyLimit(t *testing.T) {
	e := newEnv(t, storeKinds[0].open(t))
	big := `{"campaign_id":"big","name":"` + strings.Repeat("x", 1<<20) + `"}`
	t.Run("Content-Length", func(t *testing.T) {
		wantError(t, e.do("POST", "/api/v1/campaigns", []byte(big), "X-Tenant-ID", "acme"), 413, "")
	})
	t.Run("chunked", func(t *testing.T) {
		// An io.Reader of unknown length is sent chunked, without Content-Length.
		req, _ := http.NewRequest("POST", e.ts.URL+"/api/v1/campaigns", io.MultiReader(strings.NewReader(big)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Tenant-ID", "acme")
		if req.ContentLength != 0 || req.TransferEncoding != nil {
			t.Fatalf("request would not be chunked: %d %v", req.ContentLength, req.TransferEncoding)
		}
		wantError(t, e.send(req), 413, "")
	})
	t.Run("chunked verb", func(t *testing.T) {
		seed(t, e.st, "acme", "c-big", fsm.Pending)
		req, _ := http.NewRequest("POST", e.ts.URL+"/api/v1/campaigns/c-big/start", io.MultiReader(strings.NewReader(big)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Tenant-ID", "acme")
		wantError(t, e.send(req), 413, "")
	})
	t.Run("just under the limit is read", func(t *testing.T) {
		name := strings.Repeat("x", 1<<20-100)
		b := []byte(`{"campaign_id":"c","name":"` + name + `"}`)
		wantError(t, e.do("POST", "/api/v1/campaigns", b, "X-Tenant-ID", "acme"), 400, "name") // too long a name, but read
	})
	t.Run("under the limit but over the command stream's message size", func(t *testing.T) {
		// params of 600 kB: read, valid, but the command stream takes 512 KiB
		// messages: 413 (a retry cannot help), not 503.
		b := []byte(`{"campaign_id":"c-params","name":"n","params":{"blob":"` + strings.Repeat("x", 600_000) + `"}}`)
		wantError(t, e.do("POST", "/api/v1/campaigns", b, "X-Tenant-ID", "acme"), 413, "body")
	})
	if n := len(e.commands()); n != 0 {
		t.Fatalf("%d commands published", n)
	}
}

func TestVerbs(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		e := newEnv(t, k.open(t))
		seed(t, e.st, "acme", "c1", fsm.Running)
		var want []string
		for i, tc := range []struct {
			verb string
			body []byte
			hdr  []string
		}{
			{"start", nil, nil}, // no body, no Content-Type
			{"pause", []byte{}, []string{"Content-Type", "application/json"}}, // empty body with Content-Type
			{"resume", []byte(`{}`), nil},
			{"cancel", []byte(`{"tenant_id":"acme"}`), nil},
			{"retry", []byte(` `), []string{"Content-Type", "text/plain"}}, // whitespace is not empty: 415
		} {
			r := e.do("POST", "/api/v1/campaigns/c1/"+tc.verb, tc.body, append([]string{"X-Tenant-ID", "acme"}, tc.hdr...)...)
			if i == 4 {
				wantError(t, r, 415, "Content-Type")
				continue
			}
			_, cmdID := accepted(t, r)
			want = append(want, tc.verb+" "+cmdID)
		}
		var got []string
		for _, m := range e.commands() {
			env := commandEnvelope(t, m)
			if m.Subject != "campaign.cmd.acme.c1."+env.Type || m.Header.Get(nats.MsgIdHdr) != env.ID || env.CampaignID != "c1" {
				t.Fatalf("command %s %+v", m.Subject, env)
			}
			if _, err := events.DecodeCommand(m.Subject, m.Header, m.Data, workflows); err != nil {
				t.Fatalf("DecodeCommand: %v", err)
			}
			got = append(got, env.Type+" "+env.ID)
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("stored %v, want %v", got, want)
		}

		wantError(t, e.do("POST", "/api/v1/campaigns/c1/explode", nil, "X-Tenant-ID", "acme"), 400, "verb")
		wantError(t, e.do("POST", "/api/v1/campaigns/c1/advance", nil, "X-Tenant-ID", "acme"), 400, "verb")
		wantError(t, e.do("POST", "/api/v1/campaigns/a.b/start", nil, "X-Tenant-ID", "acme"), 400, "campaign_id")
		wantError(t, e.do("POST", "/api/v1/campaigns/a.%3E/start", nil, "X-Tenant-ID", "acme"), 400, "campaign_id")
		wantError(t, e.do("POST", "/api/v1/campaigns/nope/start", nil, "X-Tenant-ID", "acme"), 404, "campaign_id")
		wantError(t, e.do("POST", "/api/v1/campaigns/c1/start", nil, "X-Tenant-ID", "other"), 404, "campaign_id")
		wantError(t, e.do("POST", "/api/v1/campaigns/c1/start", []byte(`{"reason":"x"}`), "X-Tenant-ID", "acme"), 400, "reason")
		wantError(t, e.do("POST", "/api/v1/campaigns/c1/start", nil), 400, "tenant_id")
		if n := len(e.commands()); n != len(want) {
			t.Fatalf("%d commands stored, want %d", n, len(want))
		}

		// A campaign accepted a moment ago, its create not applied yet (no
		// worker here): the verb is accepted too, for its tenant only.
		accepted(t, e.create("acme", "fresh"))
		accepted(t, e.do("POST", "/api/v1/campaigns/fresh/start", nil, "X-Tenant-ID", "acme"))
		wantError(t, e.do("POST", "/api/v1/campaigns/fresh/start", nil, "X-Tenant-ID", "other"), 404, "campaign_id")
	})
}

func TestIdempotencyReplay(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		e := newEnv(t, k.open(t))
		body := []byte(`{"name":"x","tenant_id":"acme"}`)
		first := e.do("POST", "/api/v1/campaigns", body, "Idempotency-Key", "k-1")
		id, cmdID := accepted(t, first)
		if first.header.Get("Idempotent-Replayed") != "" {
			t.Fatal("first answer marked replayed")
		}
		if strings.Contains(cmdID, "k-1") || !strings.HasPrefix(cmdID, "idem-") {
			t.Fatalf("command id %q: derived, never the raw key", cmdID)
		}
		again := e.do("POST", "/api/v1/campaigns", body, "Idempotency-Key", "k-1")
		if again.status != 202 || !bytes.Equal(again.body, first.body) || again.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("replay: %s %v", again, again.header)
		}
		if again.header.Get("Location") != first.header.Get("Location") {
			t.Fatalf("replayed Location %q", again.header.Get("Location"))
		}
		// Same key, other body, path or tenant.
		wantError(t, e.do("POST", "/api/v1/campaigns", []byte(`{"name":"y","tenant_id":"acme"}`), "Idempotency-Key", "k-1"), 409, "Idempotency-Key")
		seed(t, e.st, "acme", id, fsm.Pending)
		wantError(t, e.do("POST", "/api/v1/campaigns/"+id+"/start", nil, "X-Tenant-ID", "acme", "Idempotency-Key", "k-1"), 409, "Idempotency-Key")
		other := e.do("POST", "/api/v1/campaigns", []byte(`{"name":"x","tenant_id":"globex"}`), "Idempotency-Key", "k-1")
		_, otherCmd := accepted(t, other)
		if otherCmd == cmdID {
			t.Fatal("two tenants' equal keys gave one command id")
		}
		if n := len(e.commands()); n != 2 {
			t.Fatalf("%d commands stored, want 2", n)
		}

		// 4xx answers are kept: a 404 stays a 404 for the same key.
		nf := e.do("POST", "/api/v1/campaigns/later/start", nil, "X-Tenant-ID", "acme", "Idempotency-Key", "k-404")
		wantError(t, nf, 404, "campaign_id")
		seed(t, e.st, "acme", "later", fsm.Pending)
		nf2 := e.do("POST", "/api/v1/campaigns/later/start", nil, "X-Tenant-ID", "acme", "Idempotency-Key", "k-404")
		if nf2.status != 404 || !bytes.Equal(nf2.body, nf.body) || nf2.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("kept 404: %s", nf2)
		}
	})
}

func TestIdempotencyRace(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		e := newEnv(t, k.open(t))
		const n = 8
		body := []byte(`{"campaign_id":"race","name":"race","tenant_id":"acme","start":true}`)
		answers := make([]resp, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				answers[i] = e.do("POST", "/api/v1/campaigns", body, "Idempotency-Key", "race-key")
			})
		}
		close(start)
		wg.Wait()
		replayed := 0
		for _, a := range answers {
			accepted(t, a)
			if !bytes.Equal(a.body, answers[0].body) {
				t.Fatalf("answers differ: %s vs %s", a.body, answers[0].body)
			}
			if a.header.Get("Idempotent-Replayed") == "true" {
				replayed++
			}
		}
		if replayed != n-1 {
			t.Fatalf("%d answers replayed, want %d", replayed, n-1)
		}
		if got := len(e.commands()); got != 1 {
			t.Fatalf("%d commands stored, want 1", got)
		}
	})
}

// TestIdempotentRetryAfterApplied: a create whose answer was lost (a 503
// after JetStream stored it, or an expired record) and whose command was
// applied since is answered 202 again on retry with the same key, with the
// same command id, and nothing is published again; another request for the
// same campaign id is 409.
func TestIdempotentRetryAfterApplied(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		e := newEnv(t, k.open(t))
		body := []byte(`{"campaign_id":"lost","name":"x","tenant_id":"acme"}`)
		first := e.do("POST", "/api/v1/campaigns", body, "Idempotency-Key", "k-lost")
		_, cmdID := accepted(t, first)
		if err := e.st.DeleteIdem(context.Background(), "acme", "k-lost", ""); err != nil { // the record is gone
			t.Fatal(err)
		}
		seed(t, e.st, "acme", "lost", fsm.Pending, cmdID) // the worker applied the command
		again := e.do("POST", "/api/v1/campaigns", body, "Idempotency-Key", "k-lost")
		if _, id := accepted(t, again); id != cmdID || again.header.Get("Idempotent-Replayed") != "" || !bytes.Equal(again.body, first.body) {
			t.Fatalf("retry: %s %v", again, again.header)
		}
		wantError(t, e.do("POST", "/api/v1/campaigns", body, "Idempotency-Key", "k-other"), 409, "campaign_id")
		wantError(t, e.do("POST", "/api/v1/campaigns", body), 409, "campaign_id")
		if n := len(e.commands()); n != 1 {
			t.Fatalf("%d commands stored, want 1", n)
		}
	})
}

// A client that sends part of its body and stalls is cut after
// BodyReadTimeout: the request gets an answer (400, nothing published) and
// the connection does not stay held.
func TestTrickledBodyCut(t *testing.T) {
	e := newEnv(t, store.NewMemory(store.Options{}), withConfig(func(c *httpapi.Config) { c.BodyReadTimeout = 200 * time.Millisecond }))
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/v1/campaigns HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Tenant-ID: acme\r\nContent-Length: 100\r\n\r\n{\"name\":")
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("stalled body: %d, want 400", res.StatusCode)
	}
	if n := len(e.commands()); n != 0 {
		t.Fatalf("%d commands published", n)
	}
}
