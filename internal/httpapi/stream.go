package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v5"
	"github.com/nats-io/nats.go"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
)

// historyTimeout bounds one read of a campaign's history.
const historyTimeout = 10 * time.Second

// getEvents handles GET /api/v1/campaigns/{id}/events: the campaign's history
// from CAMPAIGN_EVENTS as a JSON array of CloudEvents or, with
// Accept: text/event-stream, as server-sent events followed by live ones.
func (s *Server) getEvents(c *echo.Context) error {
	k, err := campaignKey(c)
	if err != nil {
		return err
	}
	tenant, id := k.Tenant, k.Campaign
	if wantsEventStream(c.Request()) {
		return s.streamEvents(c, tenant, id)
	}
	hist, err := s.history(c.Request().Context(), tenant, id)
	if err != nil {
		return err
	}
	if hist == nil {
		hist = []events.CloudEvent{}
	}
	return writeJSON(c, http.StatusOK, hist)
}

// history reads the campaign's events (under the requesting tenant's
// subjects only). A campaign with no event yet is 404 unless the store knows
// it or its create command is still waiting in CAMPAIGN_COMMANDS: a
// dashboard may open the stream right after its create was accepted.
// Another tenant's campaign is always 404.
func (s *Server) history(ctx context.Context, tenant, id string) ([]events.CloudEvent, error) {
	hctx, cancel := context.WithTimeout(ctx, historyTimeout)
	defer cancel()
	hist, err := events.History(hctx, s.deps.JS, tenant, id)
	if err != nil {
		return nil, unavailable("NATS JetStream", fmt.Errorf("history of %s/%s: %w", tenant, id, err))
	}
	if len(hist) > 0 {
		return hist, nil
	}
	switch _, err := s.deps.Store.Load(ctx, store.Key{Tenant: tenant, Campaign: id}); {
	case err == nil:
		return hist, nil
	case !errors.Is(err, store.ErrNotFound):
		return nil, unavailable("the store", err)
	}
	pending, err := s.createPending(hctx, tenant, id)
	if err != nil {
		return nil, unavailable("NATS JetStream", err)
	}
	if !pending {
		return nil, errorf(CodeNotFound, "campaign_id", "campaign %q not found", id)
	}
	return hist, nil
}

// maxReadAhead bounds how many of a campaign's waiting commands
// createPending looks at.
const maxReadAhead = 16

// createPending reports whether a create command for the tenant's campaign
// is still waiting in CAMPAIGN_COMMANDS.
func (s *Server) createPending(ctx context.Context, tenant, id string) (bool, error) {
	stream, err := s.deps.JS.Stream(ctx, events.StreamCommands)
	if err != nil {
		return false, fmt.Errorf("stream %s: %w", events.StreamCommands, err)
	}
	var from uint64
	for range maxReadAhead {
		msg, ok, err := events.NextCommand(ctx, stream, tenant, id, from)
		if err != nil || !ok {
			return false, err
		}
		if strings.HasSuffix(msg.Subject, "."+string(fsm.Create)) {
			return true, nil
		}
		from = msg.Sequence + 1
	}
	return false, nil
}

// wantsEventStream reports whether the client asks for text/event-stream.
func wantsEventStream(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "text/event-stream" {
			return true
		}
	}
	return false
}

// streamEvents serves the campaign's events as server-sent events: first
// the history after Last-Event-ID (the sequence of the last event the client
// has), then live events, each with "id: <sequence>", and a comment line
// every Config.Heartbeat.
//
// The live subscription (core NATS on the campaign's event subjects) starts
// before the history is read, so no event falls between the two; events are
// de-duplicated by sequence, and a gap in the live events (a message core
// NATS dropped) is filled from the history again. Nothing waits on the
// client: the subscription hands messages to a buffered channel without
// blocking, and a client that lets the buffer fill (or does not take a write
// within the write timeout) is dropped; it reconnects with Last-Event-ID and
// loses nothing. When the client goes, or the server shuts down, the handler
// returns and unsubscribes: no goroutine is left behind.
func (s *Server) streamEvents(c *echo.Context, tenant, id string) error {
	ctx := c.Request().Context()
	var last uint64
	if h := strings.TrimSpace(c.Request().Header.Get("Last-Event-ID")); h != "" {
		n, err := strconv.ParseUint(h, 10, 64)
		if err != nil {
			return errorf(CodeInvalid, "Last-Event-ID", "must be the sequence number of an event")
		}
		last = n
	}

	live := make(chan *nats.Msg, s.cfg.StreamBuffer)
	overflow := make(chan struct{})
	var once sync.Once
	sub, err := s.deps.NC.Subscribe(events.CampaignEvents(tenant, id), func(m *nats.Msg) {
		select {
		case live <- m:
		default:
			once.Do(func() { close(overflow) })
		}
	})
	if err != nil {
		return unavailable("NATS", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	hist, err := s.history(ctx, tenant, id)
	if err != nil {
		return err
	}

	w := c.Response()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	sw := &sseWriter{w: w, rc: http.NewResponseController(w), timeout: s.cfg.StreamWriteTimeout}
	defer func() { _ = sw.rc.SetWriteDeadline(time.Time{}) }() // the connection may serve another request

	send := func(evs []events.CloudEvent) error {
		for _, ev := range evs {
			if seq := ev.Seq(); seq > last {
				if err := sw.event(seq, ev); err != nil {
					return err
				}
				last = seq
			}
		}
		return sw.flush()
	}
	if err := sw.comment("history of " + tenant + "/" + id); err != nil {
		return nil
	}
	if err := send(hist); err != nil {
		return nil // the client is gone or too slow
	}
	heartbeat := time.NewTicker(s.cfg.Heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.done:
			return nil
		case <-overflow:
			s.log.Debug("event stream dropped: client too slow", "tenant_id", tenant, "campaign_id", id)
			return nil
		case <-heartbeat.C:
			if sw.comment("heartbeat") != nil || sw.flush() != nil {
				return nil
			}
		case m := <-live:
			ev, err := events.ParseEvent(m.Data)
			if err != nil {
				continue // not an event of ours; the history has the real ones
			}
			seq := ev.Seq()
			if seq <= last {
				continue
			}
			batch := []events.CloudEvent{ev}
			if seq > last+1 {
				// A live event is missing: take the events in between from
				// the history, then this one (the history may not hold it yet).
				hist, err := s.history(ctx, tenant, id)
				if err != nil {
					return nil // the client reconnects with Last-Event-ID
				}
				batch = batch[:0]
				next := last + 1
				for _, h := range append(hist, ev) {
					if h.Seq() == next { // only an unbroken run after last
						batch = append(batch, h)
						next++
					}
				}
			}
			if send(batch) != nil {
				return nil
			}
			if last < seq {
				// The history still lacks events before seq: end the stream
				// so the client resumes with Last-Event-ID, rather than wait
				// for an event that may be the campaign's last.
				return nil
			}
		}
	}
}

// sseWriter writes server-sent events with a deadline per write, so that a
// client that stops reading cannot hold the handler.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (sw *sseWriter) write(s string) error {
	_ = sw.rc.SetWriteDeadline(time.Now().Add(sw.timeout)) // not supported by every writer (tests)
	_, err := sw.w.Write([]byte(s))
	return err
}

// event writes one event: "id: <seq>" and the CloudEvent as one data line.
// The SSE event name is left unset, so EventSource.onmessage gets every
// event; the CloudEvent's type is in the data.
func (sw *sseWriter) event(seq uint64, ev events.CloudEvent) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	return sw.write("id: " + strconv.FormatUint(seq, 10) + "\ndata: " + string(b) + "\n\n")
}

func (sw *sseWriter) comment(text string) error { return sw.write(": " + text + "\n\n") }

func (sw *sseWriter) flush() error {
	_ = sw.rc.SetWriteDeadline(time.Now().Add(sw.timeout))
	if err := sw.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}
