package deadletter

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

// Page is one page of dead letters read by ListPage.
type Page struct {
	// Entries are in CAMPAIGN_DLQ stream order.
	Entries []Entry
	// Next is the stream sequence to read the next page from; 0 when no
	// entry matching the filter follows.
	Next uint64
}

// PageOptions bound a page.
type PageOptions struct {
	// Limit is the most entries a page holds (at least 1).
	Limit int
	// MaxBytes, when positive, ends the page early once its entries' bodies
	// add up to that many bytes (a page always holds at least one entry).
	MaxBytes int
}

// ListPage returns the entries of CAMPAIGN_DLQ whose subject matches filter
// (campaign.dlq.<tenant>.> for one tenant's), from stream sequence from (0
// is 1), at most opt.Limit of them. Like List it reads with direct gets
// (next_by_subj), one request per entry plus one to find the next page,
// and consumes nothing. dlq is the CAMPAIGN_DLQ stream.
func ListPage(ctx context.Context, dlq jetstream.Stream, filter string, from uint64, opt PageOptions) (Page, error) {
	if opt.Limit < 1 {
		return Page{}, fmt.Errorf("list dead letters: limit %d: want at least 1", opt.Limit)
	}
	if from == 0 {
		from = 1
	}
	var p Page
	size := 0
	for seq := from; ; {
		raw, err := dlq.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return p, nil
		}
		if err != nil {
			return Page{}, fmt.Errorf("list dead letters %s from %s sequence %d: %w", filter, events.StreamDLQ, seq, err)
		}
		if len(p.Entries) == opt.Limit || (opt.MaxBytes > 0 && len(p.Entries) > 0 && size+len(raw.Data) > opt.MaxBytes) {
			p.Next = raw.Sequence
			return p, nil
		}
		p.Entries = append(p.Entries, newEntry(raw))
		size += len(raw.Data)
		seq = raw.Sequence + 1
	}
}
