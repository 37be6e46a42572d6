package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/store"
)

// maxCompletionBatch bounds the records one CompleteIdems call writes.
const maxCompletionBatch = 256

// completions writes the idempotency records of answered requests in
// batches, off the requests' path: a request's answer goes out once its
// command is stored (the PubAck), and its record follows, written with
// the records of the requests answered meanwhile in one round trip
// (group commit). A repeat that comes before its record is written finds
// the reservation and waits for it (reserve), as it waits for a request
// still in progress; a record never written (the process died first)
// lets a repeat run again once the reservation's lease ends, under the
// same command id: JetStream's duplicate window and the workers' ledger
// apply the command once.
//
// One goroutine writes while records wait, and ends when none does: a
// server never shut down leaves nothing running. Shutdown waits for it
// (flush).
type completions struct {
	store interface {
		CompleteIdems(ctx context.Context, cs []store.IdemCompletion) error
	}
	log *slog.Logger

	mu      sync.Mutex
	pending []completion
	running bool
	idle    *sync.Cond // signalled when the writer ends
}

// completion is a record to write, and what its log line names.
type completion struct {
	store.IdemCompletion
	commandID string
}

func newCompletions(st interface {
	CompleteIdems(ctx context.Context, cs []store.IdemCompletion) error
}, log *slog.Logger) *completions {
	q := &completions{store: st, log: log}
	q.idle = sync.NewCond(&q.mu)
	return q
}

// add queues c, starting the writer when none runs.
func (q *completions) add(c completion) {
	q.mu.Lock()
	q.pending = append(q.pending, c)
	start := !q.running
	q.running = true
	q.mu.Unlock()
	if start {
		go q.write()
	}
}

// write writes batches until nothing waits.
func (q *completions) write() {
	for {
		q.mu.Lock()
		if len(q.pending) == 0 {
			q.running = false
			q.idle.Broadcast()
			q.mu.Unlock()
			return
		}
		n := min(len(q.pending), maxCompletionBatch)
		batch := make([]completion, n)
		copy(batch, q.pending)
		q.pending = append(q.pending[:0], q.pending[n:]...)
		q.mu.Unlock()
		q.writeBatch(batch)
	}
}

func (q *completions) writeBatch(batch []completion) {
	cs := make([]store.IdemCompletion, len(batch))
	for i := range batch {
		cs[i] = batch[i].IdemCompletion
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := q.store.CompleteIdems(ctx, cs)
	for i, c := range cs {
		e := c.Err
		if err != nil {
			e = err
		}
		if e != nil && !errors.Is(e, store.ErrIdempotencyMismatch) {
			q.log.Error("idempotency record not saved", "tenant_id", c.Tenant, "command_id", batch[i].commandID, "status", c.Rec.Status, "error", e)
		}
	}
}

// flush waits until every record queued is written, or ctx ends.
func (q *completions) flush(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		q.mu.Lock()
		for q.running {
			q.idle.Wait()
		}
		q.mu.Unlock()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
