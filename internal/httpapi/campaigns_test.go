package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"testing"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

func TestGetCampaign(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		e := newEnv(t, k.open(t))
		seed(t, e.st, "acme", "c1", fsm.Running)
		r := e.do("GET", "/api/v1/campaigns/c1", nil, "X-Tenant-ID", "acme")
		if r.status != 200 {
			t.Fatalf("GET: %s", r)
		}
		var v struct {
			TenantID    string  `json:"tenant_id"`
			CampaignID  string  `json:"campaign_id"`
			Workflow    string  `json:"workflow"`
			State       string  `json:"state"`
			CurrentStep *string `json:"current_step"`
			Steps       []struct {
				Name, Status string
				Run          int
			} `json:"steps"`
			Outputs   map[string]json.RawMessage `json:"outputs"`
			CreatedAt string                     `json:"created_at"`
			UpdatedAt string                     `json:"updated_at"`
		}
		if err := json.Unmarshal(r.body, &v); err != nil {
			t.Fatal(err)
		}
		if v.TenantID != "acme" || v.CampaignID != "c1" || v.State != "running" || v.Workflow != "standard" ||
			v.CurrentStep == nil || *v.CurrentStep != "segment" || v.CreatedAt == "" || v.UpdatedAt == "" {
			t.Fatalf("view %s", r.body)
		}
		if len(v.Steps) != 5 || v.Steps[0].Status != "succeeded" || v.Steps[1].Status != "running" || v.Steps[2].Status != "pending" {
			t.Fatalf("steps %+v", v.Steps)
		}
		if string(v.Outputs["validate"]) != `{"ok":true}` {
			t.Fatalf("outputs %s", r.body)
		}
		wantError(t, e.do("GET", "/api/v1/campaigns/c1", nil, "X-Tenant-ID", "other"), 404, "campaign_id")
		wantError(t, e.do("GET", "/api/v1/campaigns/nope", nil, "X-Tenant-ID", "acme"), 404, "campaign_id")
		wantError(t, e.do("GET", "/api/v1/campaigns/a.b", nil, "X-Tenant-ID", "acme"), 400, "campaign_id")
		wantError(t, e.do("GET", "/api/v1/campaigns/c1", nil), 400, "X-Tenant-ID")
	})
}

func TestListCampaigns(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		e := newEnv(t, k.open(t))
		for i := range 5 {
			state := fsm.Pending
			if i%2 == 1 {
				state = fsm.Running
			}
			seed(t, e.st, "acme", fmt.Sprintf("c%d", i), state)
		}
		seed(t, e.st, "globex", "g1", fsm.Pending)

		type page struct {
			Campaigns []struct {
				CampaignID string `json:"campaign_id"`
				State      string `json:"state"`
			} `json:"campaigns"`
			NextCursor string `json:"next_cursor"`
		}
		list := func(query string) (ids []string, states map[string]string) {
			states = map[string]string{}
			cursor := ""
			for range 20 {
				q := query
				if cursor != "" {
					q += "&cursor=" + url.QueryEscape(cursor)
				}
				r := e.do("GET", "/api/v1/campaigns?"+q, nil, "X-Tenant-ID", "acme")
				if r.status != 200 {
					t.Fatalf("list %s: %s", q, r)
				}
				var p page
				if err := json.Unmarshal(r.body, &p); err != nil {
					t.Fatal(err)
				}
				for _, c := range p.Campaigns {
					ids = append(ids, c.CampaignID)
					states[c.CampaignID] = c.State
				}
				if cursor = p.NextCursor; cursor == "" {
					return ids, states
				}
			}
			t.Fatalf("list %s: more than 20 pages", query)
			return nil, nil
		}
		ids, _ := list("limit=2")
		if fmt.Sprint(ids) != "[c0 c1 c2 c3 c4]" {
			t.Fatalf("paged list %v", ids)
		}
		ids, states := list("state=running")
		if fmt.Sprint(ids) != "[c1 c3]" || states["c1"] != "running" {
			t.Fatalf("running %v", ids)
		}
		if ids, _ := list("state=completed"); len(ids) != 0 {
			t.Fatalf("completed %v", ids)
		}
		for _, tc := range []struct{ query, field string }{
			{"state=done", "state"}, {"limit=0", "limit"}, {"limit=x", "limit"}, {"limit=501", "limit"},
			{"limit=-1", "limit"}, {"cursor=garbage", "cursor"},
		} {
			wantError(t, e.do("GET", "/api/v1/campaigns?"+tc.query, nil, "X-Tenant-ID", "acme"), 400, tc.field)
		}
		wantError(t, e.do("GET", "/api/v1/campaigns", nil), 400, "X-Tenant-ID")
		r := e.do("GET", "/api/v1/campaigns", nil, "X-Tenant-ID", "globex")
		var p page
		_ = json.Unmarshal(r.body, &p)
		if len(p.Campaigns) != 1 || p.Campaigns[0].CampaignID != "g1" {
			t.Fatalf("globex sees %s", r.body)
		}
	})
}
