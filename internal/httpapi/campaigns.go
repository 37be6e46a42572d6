package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v5"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
)

// Step statuses in a campaign view.
const (
	stepPending   = "pending"
	stepRunning   = "running"
	stepSucceeded = "succeeded"
	stepFailed    = "failed"
)

// campaignView is GET /api/v1/campaigns/{id}: what a dashboard shows.
type campaignView struct {
	TenantID    string          `json:"tenant_id"`
	CampaignID  string          `json:"campaign_id"`
	Name        string          `json:"name"`
	Workflow    string          `json:"workflow"`
	State       fsm.State       `json:"state"`
	CurrentStep *string         `json:"current_step"` // null once every step ran
	StepIndex   int             `json:"step_index"`
	Steps       []stepView      `json:"steps"`
	Params      json.RawMessage `json:"params,omitempty"`
	// Outputs are the outputs of the steps that succeeded, by step name.
	Outputs   map[string]json.RawMessage `json:"outputs"`
	Error     string                     `json:"error,omitempty"`
	Sequence  uint64                     `json:"sequence"` // of the last event applied to this state
	Version   uint64                     `json:"version"`
	CreatedAt time.Time                  `json:"created_at"`
	UpdatedAt time.Time                  `json:"updated_at"`
	EndedAt   *time.Time                 `json:"ended_at,omitempty"`
}

// stepView is one workflow step of a campaign.
type stepView struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Run     int    `json:"run,omitempty"`
	Attempt int    `json:"attempt,omitempty"`
}

// campaignSummary is one entry of GET /api/v1/campaigns.
type campaignSummary struct {
	CampaignID  string     `json:"campaign_id"`
	Name        string     `json:"name"`
	Workflow    string     `json:"workflow"`
	State       fsm.State  `json:"state"`
	CurrentStep *string    `json:"current_step"`
	Error       string     `json:"error,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	EndedAt     *time.Time `json:"ended_at,omitempty"`
}

// listBody is GET /api/v1/campaigns.
type listBody struct {
	Campaigns  []campaignSummary `json:"campaigns"`
	NextCursor string            `json:"next_cursor,omitempty"`
}

func currentStep(c *fsm.Campaign) *string {
	if s, ok := c.CurrentStep(); ok {
		return &s.Name
	}
	return nil
}

func viewOf(c fsm.Campaign) campaignView {
	v := campaignView{
		TenantID: c.Tenant, CampaignID: c.ID, Name: c.Name, Workflow: c.Workflow.Name,
		State: c.State, CurrentStep: currentStep(&c), StepIndex: c.Step, Params: c.Params,
		Outputs: c.Outputs, Error: c.Error, Sequence: c.Seq, Version: c.Version,
		CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt, EndedAt: c.EndedAt,
		Steps: make([]stepView, len(c.Workflow.Steps)),
	}
	if v.Outputs == nil {
		v.Outputs = map[string]json.RawMessage{}
	}
	for i, st := range c.Workflow.Steps {
		sv := stepView{Name: st.Name, Status: stepPending, Run: c.Run(st.Name)}
		switch {
		case i < c.Step:
			sv.Status = stepSucceeded
		case i == c.Step && c.State == fsm.Failed:
			sv.Status = stepFailed
		case i == c.Step && c.InFlight:
			sv.Status, sv.Attempt = stepRunning, c.Attempt
		}
		v.Steps[i] = sv
	}
	return v
}

func summaryOf(c fsm.Campaign) campaignSummary {
	return campaignSummary{
		CampaignID: c.ID, Name: c.Name, Workflow: c.Workflow.Name, State: c.State,
		CurrentStep: currentStep(&c), Error: c.Error,
		CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt, EndedAt: c.EndedAt,
	}
}

// campaignKey is the request's tenant and the campaign of its path.
func campaignKey(c *echo.Context) (store.Key, error) {
	tenant, err := requestTenant(c)
	if err != nil {
		return store.Key{}, err
	}
	id, err := campaignParam(c)
	if err != nil {
		return store.Key{}, err
	}
	return store.Key{Tenant: tenant, Campaign: id}, nil
}

// getCampaign handles GET /api/v1/campaigns/{id}.
func (s *Server) getCampaign(c *echo.Context) error {
	k, err := campaignKey(c)
	if err != nil {
		return err
	}
	camp, err := s.deps.Store.Load(c.Request().Context(), k)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errorf(CodeNotFound, "campaign_id", "campaign %q not found", k.Campaign)
	case err != nil:
		return unavailable("the store", err)
	}
	return writeJSON(c, http.StatusOK, viewOf(camp))
}

// listCampaigns handles GET /api/v1/campaigns?state=&limit=&cursor=.
func (s *Server) listCampaigns(c *echo.Context) error {
	tenant, err := requestTenant(c)
	if err != nil {
		return err
	}
	q := c.QueryParams()
	state := fsm.State(q.Get("state"))
	if state != "" && !state.Valid() {
		return errorf(CodeInvalid, "state", "%s is not one of pending, running, paused, completed, failed, cancelled", events.QuoteBounded(string(state)))
	}
	limit := store.DefaultListLimit
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > store.MaxListLimit {
			return errorf(CodeInvalid, "limit", "must be an integer from 1 to %d", store.MaxListLimit)
		}
		limit = n
	}
	cursor := q.Get("cursor")
	if len(cursor) > 1024 {
		return errorf(CodeInvalid, "cursor", "not a cursor this API returned")
	}
	page, err := s.deps.Store.List(c.Request().Context(), tenant, state, cursor, limit)
	switch {
	case errors.Is(err, store.ErrInvalid):
		return errorf(CodeInvalid, "cursor", "not a cursor this API returned")
	case err != nil:
		return unavailable("the store", err)
	}
	out := listBody{Campaigns: make([]campaignSummary, 0, len(page.Campaigns)), NextCursor: page.Next}
	for _, camp := range page.Campaigns {
		out.Campaigns = append(out.Campaigns, summaryOf(camp))
	}
	return writeJSON(c, http.StatusOK, out)
}

// writeJSON sends v as JSON with a trailing newline.
func writeJSON(c *echo.Context, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.Blob(status, echo.MIMEApplicationJSON, append(b, '\n'))
}
