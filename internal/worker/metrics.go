package worker

import (
	"errors"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/metrics"
	"github.com/campaign-orchestrator/orchestrator/internal/stepclient"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
)

// The helpers below feed Deps.Metrics (nil: they record nothing). Labels
// stay bounded: verbs go through metrics.VerbLabel, reasons are constants.

// verbLabel is the metrics verb of a command subject: its verb if known,
// else "invalid".
func verbLabel(subject string) string {
	v, _ := subjectVerb(subject)
	return metrics.VerbLabel(string(v))
}

// noteEnqueued records what parking a delivered command found: its id in
// the ledger (a duplicate), the campaign's lock taken, or the lock held by
// another handler, which will find the command in the inbox (contention:
// the command waits there rather than being redelivered).
func (w *Worker) noteEnqueued(res store.Enqueued, si store.Item) {
	m := w.d.Metrics
	if m == nil {
		return
	}
	switch {
	case res.Lease != nil:
		m.LockAcquired()
	case !res.Duplicate:
		m.LockContended()
	}
	if res.Duplicate {
		it, _ := events.DecodeInbox(si.Data) // only for the label; rare
		m.CommandDuplicated(verbLabel(it.Subject))
	}
}

// countApplied counts verb as applied when err is nil, and returns err.
func (w *Worker) countApplied(err error, verb fsm.Verb) error {
	if err == nil {
		w.d.Metrics.CommandApplied(string(verb))
	}
	return err
}

// countRejected counts verb as rejected by the state machine when err is
// nil, and returns err.
func (w *Worker) countRejected(err error, verb fsm.Verb) error {
	if err == nil {
		w.d.Metrics.CommandRejected(string(verb))
	}
	return err
}

// fenced counts a store write the fencing check refused, and returns err.
func (w *Worker) fenced(err error) error {
	switch {
	case err == nil:
	case errors.Is(err, store.ErrLockLost):
		w.d.Metrics.FencingRejected(metrics.FenceLockLost)
	case errors.Is(err, store.ErrConflict):
		w.d.Metrics.FencingRejected(metrics.FenceConflict)
	}
	return err
}

// noteStep records a step run that ended (callErr nil: succeeded), with
// traceID as exemplar.
func (w *Worker) noteStep(step string, callErr error, took time.Duration, traceID string) {
	outcome := metrics.OutcomeSucceeded
	if callErr != nil {
		outcome = metrics.OutcomeFailed
	}
	w.d.Metrics.StepFinished(step, outcome, took, traceID)
}

// retryReason classifies why a step attempt is retried.
func retryReason(err error) string {
	var se *stepclient.StatusError
	switch {
	case errors.As(err, &se):
		return metrics.RetryStatus
	case errors.Is(err, stepclient.ErrAttemptTimeout):
		return metrics.RetryTimeout
	}
	return metrics.RetryNetwork
}
