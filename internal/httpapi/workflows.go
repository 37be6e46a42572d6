package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v5"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// workflowsBody is GET /api/v1/workflows: the workflows a campaign can be
// created with, by name, and the one a create that names none gets.
type workflowsBody struct {
	Workflows []workflowView `json:"workflows"`
	Default   string         `json:"default"`
}

// workflowView is one workflow and its steps, in order. The steps' URLs are
// left out: they name the service's internal hosts, which a tenant has no
// business knowing.
type workflowView struct {
	Name  string         `json:"name"`
	Steps []workflowStep `json:"steps"`
}

type workflowStep struct {
	Name string `json:"name"`
	// TimeoutMS bounds each attempt (0: the service's STEP_TIMEOUT).
	TimeoutMS int64      `json:"timeout_ms,omitempty"`
	Retry     *retryView `json:"retry,omitempty"`
}

type retryView struct {
	MaxRetries    int   `json:"max_retries"`
	BackoffBaseMS int64 `json:"backoff_base_ms,omitempty"`
	RetryOnStatus []int `json:"retry_on_status,omitempty"`
}

func workflowViewOf(wf fsm.Workflow) workflowView {
	v := workflowView{Name: wf.Name, Steps: make([]workflowStep, len(wf.Steps))}
	for i, st := range wf.Steps {
		v.Steps[i] = workflowStep{Name: st.Name, TimeoutMS: st.Timeout.Milliseconds()}
		if r := st.Retry; r != nil {
			v.Steps[i].Retry = &retryView{MaxRetries: r.MaxRetries, BackoffBaseMS: r.BackoffBase.Milliseconds(), RetryOnStatus: r.RetryOnStatus}
		}
	}
	return v
}

// listWorkflows handles GET /api/v1/workflows. It is authenticated like the
// campaign routes and needs the tenant (the registry is the same for every
// tenant today; the route is where per-tenant workflows would be scoped).
func (s *Server) listWorkflows(c *echo.Context) error {
	if _, err := requestTenant(c); err != nil {
		return err
	}
	out := workflowsBody{Workflows: []workflowView{}, Default: fsm.DefaultWorkflow}
	for _, name := range s.deps.Workflows.Names() {
		if wf, ok := s.deps.Workflows.Get(name); ok {
			out.Workflows = append(out.Workflows, workflowViewOf(wf))
		}
	}
	return writeJSON(c, http.StatusOK, out)
}
