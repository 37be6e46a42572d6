package worker

import (
	"context"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

// InboxItem is what the worker keeps in a campaign's inbox for a command
// published on subject with id and body, for tests that strand a campaign.
func InboxItem(subject, id string, body []byte) []byte {
	b, err := events.EncodeInbox(events.InboxItem{Subject: subject, ID: id, Body: body})
	if err != nil {
		panic(err)
	}
	return b
}

// RebuildDeadline exposes rebuildDeadline.
func (w *Worker) RebuildDeadline(ctx context.Context, missingAt time.Time) (time.Time, error) {
	return w.rebuildDeadline(ctx, missingAt)
}

// RebuildWait is the worker's Config.RebuildWait, defaults applied.
func (w *Worker) RebuildWait() time.Duration { return w.cfg.RebuildWait }
