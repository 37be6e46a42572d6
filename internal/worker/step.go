package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/stepclient"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/tracing"
)

// runStep calls the campaign's current step and writes its result.
func (d *drainer) runStep(ctx context.Context, c fsm.Campaign, it events.InboxItem, si store.Item) error {
	itemID := si.ID
	w := d.w
	step, _ := c.CurrentStep()
	if err := w.fault(BeforeStepCall, d.k); err != nil {
		return err
	}
	outputs, err := json.Marshal(c.Outputs)
	if err != nil {
		return err
	}
	sctx, span := w.startStep(ctx, d.k, it.ID, step.Name, c.Run(step.Name), max(c.Attempt, 1))
	log := w.campaignLog(sctx, d.k, it.ID).With("step", step.Name, "run", c.Run(step.Name))
	cur := c
	onRetry := func(n stepclient.RetryNotice) error {
		log.Warn("step attempt failed: retrying", "attempt", n.Attempt, "delay", n.Delay, "err", n.Err)
		w.d.Metrics.StepRetrying(step.Name, retryReason(n.Err))
		r := fsm.StepRetrying(cur, it.ID, n.Attempt, n.Err.Error(), n.Delay, w.d.Now())
		if err := d.commit(ctx, it, r, false, ""); err != nil {
			return err
		}
		cur = r.Campaign
		return nil
	}
	// The call may take seconds: the handler's slot goes back to pulling
	// commands, and the call waits for one of the StepsInFlight instead.
	select {
	case w.steps <- struct{}{}:
	case <-ctx.Done():
		span.End()
		return fmt.Errorf("step %s of %s: %w", step.Name, d.k, context.Cause(ctx))
	}
	freeSlot(ctx) // once the call may start: a full STEPS_IN_FLIGHT holds the pulling back
	started := time.Now()
	res, callErr := w.d.Steps.Call(sctx, stepclient.Request{
		Tenant: d.k.Tenant, Campaign: d.k.Campaign, Step: step, Run: c.Run(step.Name), Attempt: max(c.Attempt, 1),
		Params: c.Params, Outputs: outputs, Fence: d.l.Fence, Traceparent: tracing.Traceparent(sctx),
	}, onRetry)
	<-w.steps
	failSpan(span, callErr)
	span.End()
	if ctx.Err() != nil {
		return fmt.Errorf("step %s of %s interrupted: %w", step.Name, d.k, context.Cause(ctx))
	}
	if errors.Is(callErr, errCrash) || errors.Is(callErr, store.ErrLockLost) || errors.Is(callErr, store.ErrConflict) || errors.Is(callErr, store.ErrNotHead) {
		return callErr
	}
	if err := w.fault(AfterStepCall, d.k); err != nil {
		return err
	}
	took := res.Duration
	if took == 0 {
		took = time.Since(started)
	}
	attempt := max(res.Attempts, cur.Attempt, 1)
	var r fsm.Result
	if callErr != nil {
		log.Warn("step failed", "attempt", attempt, "err", callErr)
		r = fsm.StepFailed(cur, it.ID, attempt, callErr.Error(), took, w.d.Now())
	} else {
		log.Info("step succeeded", "attempt", attempt, "duration", took)
		r = fsm.StepSucceeded(cur, it.ID, attempt, res.Output, took, w.d.Now())
	}
	// The result is written alone, its advance parked behind whatever
	// waits: the step ends when its result is stored, and only a read
	// ahead made after that (by the drain loop, before the advance's
	// step.started) sees every pause or cancel the stream accepted while it
	// ran (CONTRACT section 5). Going on to the next step in the same write
	// would let one accepted after a read ahead made before it, but before
	// the write, wait behind the next step.
	err = d.commit(ctx, it, r, false, itemID)
	if callErr == nil && errors.Is(err, events.ErrEventTooLarge) {
		// Nothing was written: record the step as failed instead.
		callErr = fmt.Errorf("output of %d bytes does not fit in an event (at most %d bytes)", len(res.Output), events.MaxEventBytes)
		log.Warn("step failed", "err", callErr)
		err = d.commit(ctx, it, fsm.StepFailed(cur, it.ID, attempt, callErr.Error(), took, w.d.Now()), false, itemID)
	}
	w.noteStep(step.Name, callErr, took, sampledTraceID(sctx))
	return err
}
