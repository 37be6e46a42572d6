// Package workflow owns the workflow definitions a campaign can be created
// with: the built-in "standard" workflow and those of the workflows file
// (WORKFLOWS_FILE, CONTRACT section 6), loaded strictly and validated once at
// start-up into a read-only Registry of fsm.Workflow values.
//
// It does no I/O but reading that one file, and knows nothing of NATS, the
// store or HTTP calls: running a step is internal/stepclient's job.
package workflow

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// StandardSteps are the steps of the built-in workflow, in order.
var StandardSteps = []string{"validate", "segment", "render", "schedule", "dispatch"}

// namePattern is what workflow and step names must match.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Standard returns the built-in workflow, each step a POST to
// stepsBaseURL/<step>. Its steps have no timeout or retry policy of their
// own: the step client's defaults (STEP_TIMEOUT, STEP_MAX_RETRIES,
// STEP_BACKOFF_BASE) apply.
func Standard(stepsBaseURL string) fsm.Workflow {
	w := fsm.Workflow{Name: fsm.DefaultWorkflow, Steps: make([]fsm.Step, len(StandardSteps))}
	for i, name := range StandardSteps {
		w.Steps[i] = fsm.Step{Name: name, URL: stepURL(stepsBaseURL, name)}
	}
	return w
}

// stepURL is the default URL of a step: base/<name>.
func stepURL(base, name string) string {
	return strings.TrimRight(base, "/") + "/" + name
}

// checkURL reports why s is not an absolute http(s) URL with a host.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	return nil
}

// Registry holds the workflows by name. It is read-only after construction
// and safe for concurrent use.
type Registry struct {
	workflows map[string]fsm.Workflow
}

// Default returns a Registry holding only the built-in standard workflow.
func Default(stepsBaseURL string) *Registry {
	return &Registry{workflows: map[string]fsm.Workflow{fsm.DefaultWorkflow: Standard(stepsBaseURL)}}
}

// Get returns a copy of the workflow named name (changing it does not change
// the registry), and whether it exists.
func (r *Registry) Get(name string) (fsm.Workflow, bool) {
	w, ok := r.workflows[name]
	if !ok {
		return fsm.Workflow{}, false
	}
	return clone(w), true
}

// Names returns the workflow names, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.workflows))
	for n := range r.workflows {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// clone deep-copies w.
func clone(w fsm.Workflow) fsm.Workflow {
	w.Steps = slices.Clone(w.Steps)
	for i, s := range w.Steps {
		if s.Retry != nil {
			r := *s.Retry
			r.RetryOnStatus = slices.Clone(r.RetryOnStatus)
			w.Steps[i].Retry = &r
		}
	}
	return w
}

// withDefaultTimeout sets d on the steps of w that have no timeout.
func withDefaultTimeout(w fsm.Workflow, d time.Duration) fsm.Workflow {
	if d <= 0 {
		return w
	}
	for i := range w.Steps {
		if w.Steps[i].Timeout == 0 {
			w.Steps[i].Timeout = d
		}
	}
	return w
}
