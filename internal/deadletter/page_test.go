package deadletter_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/campaign-orchestrator/orchestrator/internal/deadletter"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

// ListPage reads one tenant's entries in stream order, a page at a time,
// and ends a page early at MaxBytes of bodies (always with one entry).
func TestListPage(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	sizes := []int{10, 600, 10, 10, 2000, 10}
	for i, n := range sizes {
		for _, tenant := range []string{"acme", "globex"} {
			orig := nats.NewMsg(events.CommandSubject(tenant, "c", "start"))
			orig.Data = bytes.Repeat([]byte("x"), n)
			id := fmt.Sprintf("%s-%d", tenant, i)
			if _, err := e.js.PublishMsg(ctx, events.NewDeadLetterMsg(orig, &events.InvalidCommand{ID: id, Tenant: tenant, Campaign: "c", Reason: "r"}, 0)); err != nil {
				t.Fatal(err)
			}
		}
	}
	dlq, err := e.js.Stream(ctx, events.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	var pages [][]string
	for from := uint64(0); ; {
		p, err := deadletter.ListPage(ctx, dlq, "campaign.dlq.acme.>", from, deadletter.PageOptions{Limit: 3, MaxBytes: 1000})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, en := range p.Entries {
			ids = append(ids, en.CommandID)
		}
		pages = append(pages, ids)
		if p.Next == 0 {
			break
		}
		from = p.Next
	}
	// 10+600 fit, the third (10) too: 620; then 10, then 2000 alone
	// (over MaxBytes, but a page holds at least one), then 10.
	if got, want := fmt.Sprint(pages), "[[acme-0 acme-1 acme-2] [acme-3] [acme-4] [acme-5]]"; got != want {
		t.Fatalf("pages %s, want %s", got, want)
	}
	if _, err := deadletter.ListPage(ctx, dlq, ">", 0, deadletter.PageOptions{}); err == nil {
		t.Fatal("limit 0 accepted")
	}
}
