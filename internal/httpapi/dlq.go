package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v5"

	"github.com/campaign-orchestrator/orchestrator/internal/deadletter"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

// Paging of GET /api/v1/dlq.
const (
	DefaultDLQLimit = 20
	MaxDLQLimit     = 100
	// maxDLQPageBytes ends a page early once its bodies add up to this much:
	// a dead letter may hold up to 1 MiB.
	maxDLQPageBytes = 4 << 20
)

// dlqBody is GET /api/v1/dlq.
type dlqBody struct {
	DeadLetters []deadLetterView `json:"dead_letters"`
	NextCursor  string           `json:"next_cursor,omitempty"`
}

// deadLetterView is one dead letter of the tenant.
type deadLetterView struct {
	// Seq is its CAMPAIGN_DLQ stream sequence (what `orchestrator dlq
	// replay` takes).
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Subject is campaign.dlq.<tenant>.<campaign>; CampaignID its last
	// token (_unknown where the command's subject had no usable one).
	Subject         string `json:"subject"`
	CampaignID      string `json:"campaign_id"`
	OriginalSubject string `json:"original_subject"`
	// Command is the verb of OriginalSubject when it is a command subject.
	Command   string `json:"command,omitempty"`
	CommandID string `json:"command_id,omitempty"`
	Reason    string `json:"reason"`
	// Body is the command's body: its JSON when it is JSON, else a string.
	Body any `json:"body"`
	// BodyTruncated is the original body's length when the copy was cut.
	BodyTruncated int `json:"body_truncated,omitempty"`
}

func deadLetterViewOf(e deadletter.Entry) deadLetterView {
	v := deadLetterView{
		Seq: e.Seq, Time: e.Time.UTC(), Subject: e.Subject, OriginalSubject: e.OriginalSubject,
		CommandID: e.CommandID, Reason: e.Reason, Body: string(e.Data),
	}
	if i := strings.LastIndexByte(e.Subject, '.'); i >= 0 {
		v.CampaignID = e.Subject[i+1:]
	}
	if parts := strings.Split(e.OriginalSubject, "."); len(parts) == 5 && parts[0] == "campaign" && parts[1] == "cmd" {
		v.Command = parts[4]
	}
	if json.Valid(e.Data) {
		v.Body = json.RawMessage(e.Data)
	}
	v.BodyTruncated, _ = strconv.Atoi(e.Header.Get(events.HdrBodyTruncated))
	return v
}

// listDeadLetters handles GET /api/v1/dlq?limit=&cursor=: the dead letters
// on the tenant's DLQ subjects (campaign.dlq.<tenant>.>), in CAMPAIGN_DLQ
// order, read without consuming anything. The cursor is the stream sequence
// the next page starts at.
func (s *Server) listDeadLetters(c *echo.Context) error {
	tenant, err := requestTenant(c)
	if err != nil {
		return err
	}
	q := c.QueryParams()
	limit := DefaultDLQLimit
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > MaxDLQLimit {
			return errorf(CodeInvalid, "limit", "must be an integer from 1 to %d", MaxDLQLimit)
		}
		limit = n
	}
	var from uint64
	if cur := q.Get("cursor"); cur != "" {
		n, err := strconv.ParseUint(cur, 10, 64)
		if err != nil || n == 0 {
			return errorf(CodeInvalid, "cursor", "not a cursor this API returned")
		}
		from = n
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), historyTimeout)
	defer cancel()
	stream, err := s.deps.JS.Stream(ctx, events.StreamDLQ)
	if err != nil {
		return unavailable("NATS JetStream", err)
	}
	page, err := deadletter.ListPage(ctx, stream, tenantDLQ(tenant), from,
		deadletter.PageOptions{Limit: limit, MaxBytes: maxDLQPageBytes})
	if err != nil {
		return unavailable("NATS JetStream", err)
	}
	out := dlqBody{DeadLetters: make([]deadLetterView, 0, len(page.Entries))}
	if page.Next > 0 {
		out.NextCursor = strconv.FormatUint(page.Next, 10)
	}
	for _, e := range page.Entries {
		out.DeadLetters = append(out.DeadLetters, deadLetterViewOf(e))
	}
	return writeJSON(c, http.StatusOK, out)
}

// tenantDLQ is the filter of a tenant's DLQ subjects, campaign.dlq.<tenant>.>
// (tenant is a valid token: the middleware checked it).
func tenantDLQ(tenant string) string {
	return strings.TrimSuffix(events.DLQSubject(tenant, "_"), "_") + ">"
}
