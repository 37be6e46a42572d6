package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"

	"github.com/campaign-orchestrator/orchestrator/client"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
	"github.com/campaign-orchestrator/orchestrator/internal/tracing"
)

// createRequest is the body of POST /api/v1/campaigns.
type createRequest struct {
	CampaignID *string         `json:"campaign_id"`
	Name       string          `json:"name"`
	Workflow   string          `json:"workflow"`
	Params     json.RawMessage `json:"params"`
	Start      bool            `json:"start"`
	TenantID   string          `json:"tenant_id"`
}

// verbRequest is the optional body of POST /api/v1/campaigns/{id}/{verb}.
type verbRequest struct {
	TenantID string `json:"tenant_id"`
}

// acceptedBody is the 202 answer of both command endpoints.
type acceptedBody struct {
	CampaignID string `json:"campaign_id"`
	CommandID  string `json:"command_id"`
	Status     string `json:"status"`
}

// commandVerbs are the verbs of POST /api/v1/campaigns/{id}/{verb}; advance
// is internal and create has its own endpoint.
var commandVerbs = []fsm.Verb{fsm.Start, fsm.Pause, fsm.Resume, fsm.Cancel, fsm.Retry}

// exec is the part of a command request that runs under its Idempotency-Key,
// if any: validation, store checks and the publish. Its answer (also an
// error answer) is what a repeat replays. body is the request body;
// generatedID is the campaign id to use when the request names none.
type exec func(ctx context.Context, tenant, commandID, generatedID string, body []byte) (*answer, error)

// createCampaign handles POST /api/v1/campaigns.
func (s *Server) createCampaign(c *echo.Context) error {
	return s.command(c, func(ctx context.Context, tenant, commandID, generatedID string, body []byte) (*answer, error) {
		var req createRequest
		if err := decodeJSON(body, &req); err != nil {
			return nil, err
		}
		id := generatedID
		if req.CampaignID != nil {
			id = *req.CampaignID
			if !events.ValidToken(id) {
				return nil, errorf(CodeInvalid, "campaign_id", "must match %s", events.TokenRE)
			}
		}
		c.Set(ctxCampaign, id)
		create := fsm.CreatePayload{Name: req.Name, Workflow: req.Workflow, Params: bytes.TrimSpace(req.Params), Start: req.Start}
		if _, prob := events.CheckCreate(&create, s.deps.Workflows); prob != nil {
			return nil, errorf(CodeInvalid, prob.Field, "%s", prob.Detail)
		}
		k := store.Key{Tenant: tenant, Campaign: id}
		switch _, err := s.deps.Store.Load(ctx, k); {
		case err == nil:
			// A retry of a create that was stored although it answered 503
			// finds its own command applied: same answer as the first time.
			applied, aerr := s.deps.Store.Applied(ctx, k, commandID)
			if aerr != nil {
				return nil, unavailable("the store", aerr)
			}
			if !applied {
				return nil, errorf(CodeConflict, "campaign_id", "campaign %q already exists", id)
			}
			return accepted(id, commandID), nil
		case !errors.Is(err, store.ErrNotFound):
			return nil, unavailable("the store", err)
		}
		payload, err := json.Marshal(create)
		if err != nil {
			return nil, err
		}
		if err := s.publish(ctx, c, tenant, id, fsm.Create, commandID, payload); err != nil {
			return nil, err
		}
		return accepted(id, commandID), nil
	})
}

// campaignVerb handles POST /api/v1/campaigns/{id}/{verb}.
func (s *Server) campaignVerb(c *echo.Context) error {
	return s.command(c, func(ctx context.Context, tenant, commandID, _ string, body []byte) (*answer, error) {
		id, err := campaignParam(c)
		if err != nil {
			return nil, err
		}
		verb := fsm.Verb(c.Param("verb"))
		known := false
		for _, v := range commandVerbs {
			known = known || v == verb
		}
		if !known {
			return nil, errorf(CodeInvalid, "verb", "%s is not one of start, pause, resume, cancel, retry", events.QuoteBounded(string(verb)))
		}
		if len(body) > 0 {
			var req verbRequest
			if err := decodeJSON(body, &req); err != nil {
				return nil, err
			}
		}
		switch _, err := s.deps.Store.Load(ctx, store.Key{Tenant: tenant, Campaign: id}); {
		case errors.Is(err, store.ErrNotFound):
			// Accepted a moment ago, not applied yet: the stream applies
			// the create first, so the verb may follow it.
			pending, perr := s.createPending(ctx, tenant, id)
			if perr != nil {
				return nil, unavailable("NATS", perr)
			}
			if !pending {
				return nil, errorf(CodeNotFound, "campaign_id", "campaign %q not found", id)
			}
		case err != nil:
			return nil, unavailable("the store", err)
		}
		if err := s.publish(ctx, c, tenant, id, verb, commandID, nil); err != nil {
			return nil, err
		}
		return accepted(id, commandID), nil
	})
}

// command is the common frame of both command endpoints: read the body,
// find the tenant, take the Idempotency-Key (or replay its answer), run
// exec, keep its answer under the key, and send it.
func (s *Server) command(c *echo.Context, run exec) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	tenant, err := commandTenant(c, peekTenant(body))
	if err != nil {
		return err
	}
	// The work below is not abandoned when the client goes away: a command
	// being published finishes and its answer is kept for the repeat.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), s.idemWait()+s.cfg.PublishTimeout)
	defer cancel()

	var ir *idemRequest
	commandID, generatedID := newULID(), strings.ToLower(newULID())
	if keys, ok := c.Request().Header[http.CanonicalHeaderKey(HeaderIdempotencyKey)]; ok {
		key := ""
		if len(keys) > 0 {
			key = keys[0]
		}
		if ir, err = s.newIdemRequest(c, tenant, key, body); err != nil {
			return err
		}
		commandID, generatedID = ir.commandID, ir.campaignID
		replay, err := s.reserve(ctx, c.Request().Context(), ir)
		if err != nil {
			return err
		}
		if replay != nil {
			return replay.write(c, true)
		}
	}
	if err := s.limit(c, tenant); err != nil {
		if ir != nil {
			s.complete(ctx, ir, &answer{status: http.StatusTooManyRequests}) // frees the key
		}
		return err
	}
	a, err := run(ctx, tenant, commandID, generatedID, body)
	if err != nil {
		status, b := s.render(c, err)
		a = &answer{status: status, header: map[string]string{"Content-Type": echo.MIMEApplicationJSON}, body: b}
	}
	if ir != nil {
		s.complete(ctx, ir, a)
	}
	return a.write(c, false)
}

// newULID returns a new command id: client.NewID, a ULID whose random part
// comes from crypto/rand, so that nobody can predict it and publish under it
// first (JetStream's stream-wide deduplication would drop the command).
func newULID() string { return client.NewID() }

// accepted is the 202 answer.
func accepted(campaignID, commandID string) *answer {
	b, _ := json.Marshal(acceptedBody{CampaignID: campaignID, CommandID: commandID, Status: "accepted"})
	return &answer{
		status: http.StatusAccepted,
		header: map[string]string{"Content-Type": echo.MIMEApplicationJSON, "Location": "/api/v1/campaigns/" + campaignID},
		body:   append(b, '\n'),
	}
}

// publish stores one command in CAMPAIGN_COMMANDS and returns once JetStream
// has acknowledged it (PubAck), within PublishTimeout; otherwise 503. When
// NATS is disconnected nothing is sent. When the PubAck is late, JetStream
// may still store the command after the 503: a retry with the same
// Idempotency-Key carries the same command id, which is then dropped as a
// duplicate, so the command takes effect once. A PubAck that reports a
// duplicate only says that the stream has seen the id (on any subject):
// confirmDuplicate decides whether it was this command. The command's
// traceparent is the one of a producer span "send campaign.cmd…", a child
// of ctx's span (the request's server span).
func (s *Server) publish(ctx context.Context, c *echo.Context, tenant, campaign string, verb fsm.Verb, commandID string, payload json.RawMessage) (err error) {
	now := time.Now().UTC()
	ctx, span := tracing.StartProducer(ctx, tracing.Tracer(s.deps.TracerProvider), tracing.CommandsTemplate,
		events.CommandSubject(tenant, campaign, verb), 1)
	defer func() {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	tp := tracing.Traceparent(ctx)
	env := events.CommandEnvelope{
		ID: commandID, Type: string(verb), TenantID: tenant, CampaignID: campaign,
		IssuedAt: &now, Payload: payload,
	}
	msg := events.NewCommandMsg(env, tp)
	if !s.deps.NC.IsConnected() {
		// While reconnecting, nats.go would buffer the message and send it
		// after the 503: refuse it now so that a 503 leaves nothing behind.
		return unavailable("NATS", fmt.Errorf("connection %s", s.deps.NC.Status()))
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	ack, err := s.deps.JS.PublishMsg(pctx, msg, jetstream.WithExpectStream(events.StreamCommands))
	if err != nil {
		if tooLarge(err) {
			// Under the body limit but over what the command stream takes
			// once wrapped in its envelope: retrying cannot help.
			return errorf(CodeTooLarge, "body", "the command (%d bytes with its envelope) is larger than the command stream accepts", len(msg.Data))
		}
		return unavailable("NATS JetStream", err)
	}
	if ack.Duplicate {
		_, keyed := c.Request().Header[http.CanonicalHeaderKey(HeaderIdempotencyKey)]
		return s.confirmDuplicate(ctx, env, msg.Subject, ack.Sequence, keyed)
	}
	return nil
}

// confirmDuplicate answers a PubAck that reports Duplicate: JetStream
// deduplicates across the whole stream, whatever the subject, so the
// message it kept under the command id may be another's (someone who
// published under the id first, on a subject they may use), and this
// command was then dropped. The PubAck's Sequence is the one of the message
// first stored under the id (nats-server stream.go: the dedup entry keeps
// the stored message's sequence, and the duplicate's PubAck carries it).
//
//   - That message is still in the stream: it is this request's own command
//     (an earlier attempt whose PubAck was lost) when it has the same
//     subject, id and body, issued_at aside (each attempt stamps its own
//     time): nil, a true 202. Anything else is a collision: 409, kept under
//     the Idempotency-Key like every 4xx (the key can only ever name that
//     id: the client must use another).
//   - It is gone (CAMPAIGN_COMMANDS is a work queue: a worker acked it):
//     the id in this campaign's ledger proves the earlier attempt was
//     applied (a message with this id on another tenant's subject lands in
//     another campaign's ledger, never this one): nil.
//   - Neither: 503. The message may have been this request's own earlier
//     attempt, taken off the stream but not applied yet (waiting in the
//     campaign's inbox) or dead-lettered, or a foreign one. A 202 could be
//     a lie and a kept 4xx would tell a client whose command is about to be
//     applied that it failed; a 503 is not kept, so the client's retry with
//     the same key asks again: it finds the id in the ledger (202) once the
//     worker applied it, or, after the duplicate window, JetStream stores
//     the command again and the worker's ledger drops it if the earlier
//     copy was applied meanwhile.
func (s *Server) confirmDuplicate(ctx context.Context, env events.CommandEnvelope, subject string, seq uint64, keyed bool) error {
	gctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	log := s.log.With("tenant_id", env.TenantID, "campaign_id", env.CampaignID, "command_id", env.ID, "stored_seq", seq)
	if seq > 0 {
		// A duplicate is rare: looking the stream up here (a STREAM.INFO)
		// costs nothing on the common path. CAMPAIGN_COMMANDS has
		// allow_direct, so GetMsg is a direct get.
		stream, err := s.deps.JS.Stream(gctx, events.StreamCommands)
		if err != nil {
			return unavailable("NATS JetStream", fmt.Errorf("reading the message stored under a duplicate command id: %w", err))
		}
		stored, err := stream.GetMsg(gctx, seq)
		switch {
		case err == nil:
			if events.SameCommand(stored, env, subject) {
				return nil
			}
			log.Warn("command id collision: another message holds this command id in the command stream; the command was not stored",
				"stored_subject", stored.Subject)
			if keyed {
				return errorf(CodeConflict, HeaderIdempotencyKey, "command id %s derived from this key is already used by another message in the command stream: this command was not stored (send it with another Idempotency-Key)", env.ID)
			}
			return errorf(CodeConflict, "", "command id %s is already used by another message in the command stream: this command was not stored (send it again)", env.ID)
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return unavailable("NATS JetStream", fmt.Errorf("reading the message stored under a duplicate command id: %w", err))
		}
	}
	applied, err := s.deps.Store.Applied(gctx, store.Key{Tenant: env.TenantID, Campaign: env.CampaignID}, env.ID)
	if err != nil {
		return unavailable("the store", err)
	}
	if applied {
		return nil
	}
	log.Warn("duplicate command id whose stored message is gone and not applied to this campaign: answering 503")
	return &Error{Code: CodeUnavailable,
		Message: fmt.Sprintf("command id %s was already used in the command stream and it is not known yet whether by this command: try again later", env.ID),
		Err:     errors.New("duplicate PubAck, stored message gone, id not in the campaign's ledger")}
}

// tooLarge reports whether a publish failed because the message exceeds the
// server's payload limit or the stream's max_msg_size.
func tooLarge(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, nats.ErrMaxPayload) ||
		(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum)
}

// campaignParam returns the {id} path parameter, validated.
func campaignParam(c *echo.Context) (string, error) {
	id := c.Param("id")
	if !events.ValidToken(id) {
		return "", errorf(CodeInvalid, "campaign_id", "must match %s", events.TokenRE)
	}
	c.Set(ctxCampaign, id)
	return id, nil
}
