package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// deadLetter stores a DLQ copy of a command as the worker makes it.
func (e *env) deadLetter(tenant, campaign string, verb fsm.Verb, id, reason string, body []byte) {
	e.t.Helper()
	orig := nats.NewMsg(events.CommandSubject(tenant, campaign, verb))
	orig.Header.Set("Nats-Msg-Id", id)
	orig.Data = body
	m := events.NewDeadLetterMsg(orig, &events.InvalidCommand{ID: id, Tenant: tenant, Campaign: campaign, Verb: string(verb), Reason: reason}, 7)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.PublishMsg(ctx, m); err != nil {
		e.t.Fatalf("publish dead letter: %v", err)
	}
}

type dlqPage struct {
	DeadLetters []struct {
		Seq             uint64          `json:"seq"`
		Time            time.Time       `json:"time"`
		Subject         string          `json:"subject"`
		CampaignID      string          `json:"campaign_id"`
		OriginalSubject string          `json:"original_subject"`
		Command         string          `json:"command"`
		CommandID       string          `json:"command_id"`
		Reason          string          `json:"reason"`
		Body            json.RawMessage `json:"body"`
	} `json:"dead_letters"`
	NextCursor *string `json:"next_cursor"`
}

func (e *env) dlqPage(query string, hdr ...string) dlqPage {
	e.t.Helper()
	r := e.do("GET", "/api/v1/dlq"+query, nil, hdr...)
	if r.status != 200 {
		e.t.Fatalf("GET /api/v1/dlq%s: %s", query, r)
	}
	conformsToOpenAPI(e.t, "/api/v1/dlq", "get", r)
	var p dlqPage
	if err := json.Unmarshal(r.body, &p); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func TestDeadLettersTenantScopedAndPaged(t *testing.T) {
	e := newEnv(t, storeKinds[0].open(t))
	before := time.Now().Add(-time.Second)
	if p := e.dlqPage("", "X-Tenant-ID", "acme"); len(p.DeadLetters) != 0 || p.NextCursor != nil {
		t.Fatalf("empty DLQ: %+v", p)
	}
	// acme's five interleaved with globex's two (globex's "ghost" also has
	// a campaign token acme uses: only the tenant token scopes).
	for i := 1; i <= 5; i++ {
		body := fmt.Appendf(nil, `{"id":"acme-%d","type":"start","tenant_id":"acme","campaign_id":"ghost-%d"}`, i, i)
		if i == 3 {
			body = []byte("not json \xff")
		}
		e.deadLetter("acme", fmt.Sprintf("ghost-%d", i), fsm.Start, fmt.Sprintf("acme-%d", i), "unknown campaign", body)
		if i <= 2 {
			e.deadLetter("globex", "ghost-1", fsm.Pause, fmt.Sprintf("globex-%d", i), "unknown campaign", []byte(`{}`))
		}
	}

	var ids []string
	var seqs []uint64
	cursor, pages := "", 0
	for {
		q := "?limit=2"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		p := e.dlqPage(q, "X-Tenant-ID", "acme")
		pages++
		if len(p.DeadLetters) > 2 {
			t.Fatalf("page of %d with limit 2", len(p.DeadLetters))
		}
		for _, d := range p.DeadLetters {
			ids = append(ids, d.CommandID)
			seqs = append(seqs, d.Seq)
			n := strings.TrimPrefix(d.CommandID, "acme-")
			if d.Subject != "campaign.dlq.acme.ghost-"+n || d.CampaignID != "ghost-"+n || d.Command != "start" ||
				d.OriginalSubject != "campaign.cmd.acme.ghost-"+n+".start" || d.Reason != "unknown campaign" || d.Time.Before(before) {
				t.Fatalf("dead letter %+v", d)
			}
			var body any
			if err := json.Unmarshal(d.Body, &body); err != nil {
				t.Fatalf("body %s: %v", d.Body, err)
			}
			if n == "3" {
				if s, ok := body.(string); !ok || !strings.HasPrefix(s, "not json ") {
					t.Fatalf("a body that is not JSON is a string: %s", d.Body)
				}
			} else if m, ok := body.(map[string]any); !ok || m["id"] != d.CommandID {
				t.Fatalf("a JSON body is its JSON: %s", d.Body)
			}
		}
		if p.NextCursor == nil {
			break
		}
		cursor = *p.NextCursor
		if pages > 5 {
			t.Fatal("paging does not end")
		}
	}
	if strings.Join(ids, ",") != "acme-1,acme-2,acme-3,acme-4,acme-5" || pages != 3 {
		t.Fatalf("acme's dead letters %v in %d pages", ids, pages)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("not in stream order: %v", seqs)
		}
	}
	g := e.dlqPage("", "X-Tenant-ID", "globex")
	if len(g.DeadLetters) != 2 || g.DeadLetters[0].CommandID != "globex-1" || g.DeadLetters[1].Command != "pause" {
		t.Fatalf("globex's %+v", g)
	}
	if p := e.dlqPage("", "X-Tenant-ID", "initech"); len(p.DeadLetters) != 0 {
		t.Fatalf("a tenant without dead letters sees %+v", p)
	}
	// A cursor past the end is an empty last page.
	if p := e.dlqPage("?cursor=99999", "X-Tenant-ID", "acme"); len(p.DeadLetters) != 0 || p.NextCursor != nil {
		t.Fatalf("past the end: %+v", p)
	}
}

func TestDeadLettersBadRequests(t *testing.T) {
	e := newEnv(t, storeKinds[0].open(t))
	for _, q := range []string{"?limit=0", "?limit=101", "?limit=x", "?limit=-1"} {
		wantError(t, e.do("GET", "/api/v1/dlq"+q, nil, "X-Tenant-ID", "acme"), 400, "limit")
	}
	for _, q := range []string{"?cursor=abc", "?cursor=0", "?cursor=-3", "?cursor=" + strings.Repeat("9", 30)} {
		wantError(t, e.do("GET", "/api/v1/dlq"+q, nil, "X-Tenant-ID", "acme"), 400, "cursor")
	}
	r := e.do("GET", "/api/v1/dlq", nil)
	wantError(t, r, 400, "X-Tenant-ID")
	conformsToOpenAPI(t, "/api/v1/dlq", "get", r)
	wantError(t, e.do("GET", "/api/v1/dlq", nil, "X-Tenant-ID", "a.b"), 400, "X-Tenant-ID")

	te := tokenEnv(t, storeKinds[0])
	te.deadLetter("acme", "ghost", fsm.Start, "acme-1", "unknown campaign", []byte(`{}`))
	te.deadLetter("globex", "ghost", fsm.Start, "globex-1", "unknown campaign", []byte(`{}`))
	r = te.do("GET", "/api/v1/dlq", nil, "X-Tenant-ID", "acme")
	wantError(t, r, 401, "")
	conformsToOpenAPI(t, "/api/v1/dlq", "get", r)
	wantError(t, te.do("GET", "/api/v1/dlq", nil, "Authorization", "Bearer "+globexToken, "X-Tenant-ID", "acme"), 403, "X-Tenant-ID")
	p := te.dlqPage("", "Authorization", "Bearer "+globexToken)
	if len(p.DeadLetters) != 1 || p.DeadLetters[0].CommandID != "globex-1" {
		t.Fatalf("the token's tenant's only: %+v", p)
	}

	// A refused origin gets nothing; an allowed one may read the page.
	r = e.do("GET", "/api/v1/dlq", nil, "X-Tenant-ID", "acme", "Origin", "http://evil.example")
	wantError(t, r, 403, "Origin")
	noAccessControl(t, r)
	if r := e.do("GET", "/api/v1/dlq", nil, "X-Tenant-ID", "acme", "Origin", "http://localhost:3000"); r.status != 200 ||
		r.header.Get("Access-Control-Allow-Origin") != "http://localhost:3000" {
		t.Fatalf("allowed origin: %s %v", r, r.header)
	}
}
