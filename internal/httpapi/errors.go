package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v5"

	"github.com/campaign-orchestrator/orchestrator/client"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/tracing"
)

// Code is the machine-readable kind of an API error. Every Code has exactly
// one HTTP status, in statusOf.
type Code string

// Error codes, one per status the API answers with (CONTRACT section 7):
// the public client package's, so that the two cannot drift.
const (
	CodeInvalid          = Code(client.CodeInvalidRequest)       // 400: bad JSON, a bad or missing field
	CodeUnauthorized     = Code(client.CodeUnauthorized)         // 401: no or unknown bearer token
	CodeForbidden        = Code(client.CodeForbidden)            // 403: other tenant in the body, origin not allowed
	CodeNotFound         = Code(client.CodeNotFound)             // 404: no such route, or campaign unknown to the tenant
	CodeMethodNotAllowed = Code(client.CodeMethodNotAllowed)     // 405
	CodeConflict         = Code(client.CodeConflict)             // 409: Idempotency-Key reused, campaign exists
	CodeTooLarge         = Code(client.CodePayloadTooLarge)      // 413: body over the limit
	CodeUnsupportedMedia = Code(client.CodeUnsupportedMediaType) // 415: body not application/json
	CodeRateLimited      = Code(client.CodeRateLimited)          // 429: the tenant's command rate is exceeded
	CodeInternal         = Code(client.CodeInternal)             // 500: a bug; logged
	CodeUnavailable      = Code(client.CodeUnavailable)          // 503: NATS or the store cannot take the request; logged
)

// statusOf is the one table from error codes to HTTP statuses, the client
// package's.
var statusOf = func() map[Code]int {
	m := make(map[Code]int, len(client.ErrorCodes))
	for _, c := range client.ErrorCodes {
		m[Code(c)] = c.Status()
	}
	return m
}()

// codeOfStatus maps a status from outside this package (Echo's router and
// middleware) back to a Code.
func codeOfStatus(status int) Code {
	for c, s := range statusOf {
		if s == status {
			return c
		}
	}
	if status >= 500 {
		return CodeInternal
	}
	return CodeInvalid
}

// Error is the API's error: a Code, the request field at fault (if any), a
// message for the client that names that field, and an internal cause that
// is logged but never sent.
type Error struct {
	Code    Code
	Field   string
	Message string
	Err     error
}

// Error implements error.
func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Unwrap returns the internal cause.
func (e *Error) Unwrap() error { return e.Err }

// StatusCode implements echo.HTTPStatusCoder.
func (e *Error) StatusCode() int { return statusOf[e.Code] }

// errorf returns an *Error whose message is "<field>: <text>" when field is set.
//
// The message and field are bounded (events.BoundReason, events.MaxQuotedBytes)
// whatever the arguments: they may quote what a client sent, and a 4xx is
// kept under an Idempotency-Key for a day. Quote client values with
// events.QuoteBounded so that the message keeps its end.
func errorf(code Code, field, format string, args ...any) *Error {
	if len(field) > events.MaxQuotedBytes {
		field = events.BoundReason(field[:events.MaxQuotedBytes])
	}
	msg := fmt.Sprintf(format, args...)
	if field != "" {
		msg = field + ": " + msg
	}
	return &Error{Code: code, Field: field, Message: events.BoundReason(msg)}
}

// unavailable wraps an infrastructure failure as a 503.
func unavailable(what string, err error) *Error {
	return &Error{Code: CodeUnavailable, Message: what + " is unavailable, try again later", Err: err}
}

// errorBody is the JSON of every error answer: {"error":{"code","message"}}.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// asError turns any error into an *Error: ours as they are, Echo's by their
// status, anything else as an internal error.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if st := echo.StatusCode(err); st != 0 {
		code := codeOfStatus(st)
		msg := http.StatusText(st)
		var he *echo.HTTPError
		if errors.As(err, &he) && he.Message != "" {
			msg = he.Message
		}
		if code == CodeInternal {
			return &Error{Code: code, Message: "internal error", Err: err}
		}
		return &Error{Code: code, Message: msg}
	}
	return &Error{Code: CodeInternal, Message: "internal error", Err: err}
}

// render turns err into a status and a JSON body, logging it when it is
// internal (500) or an unavailable dependency (503): client errors are not
// logged.
func (s *Server) render(c *echo.Context, err error) (int, []byte) {
	e := asError(err)
	status, ok := statusOf[e.Code]
	if !ok {
		status = http.StatusInternalServerError
	}
	switch e.Code {
	case CodeInternal:
		s.log.Error("request failed", s.logAttrs(c, e)...)
	case CodeUnavailable:
		s.log.Warn("request failed: dependency unavailable", s.logAttrs(c, e)...)
	}
	b, _ := json.Marshal(errorBody{Error: errorDetail{Code: e.Code, Message: e.Message, Field: e.Field}})
	return status, append(b, '\n')
}

func (s *Server) logAttrs(c *echo.Context, e *Error) []any {
	attrs := []any{"method", c.Request().Method, "route", routeLabel(c), "error", e.Error()}
	if t, ok := c.Get(ctxTenant).(string); ok && t != "" {
		attrs = append(attrs, "tenant_id", t)
	}
	if id, ok := c.Get(ctxCampaign).(string); ok && id != "" {
		attrs = append(attrs, "campaign_id", id)
	}
	attrs = append(attrs, tracing.LogAttrs(c.Request().Context())...)
	return attrs
}

// handleError is Echo's HTTPErrorHandler: every error answer leaves here (or
// through render, for answers kept under an Idempotency-Key).
func (s *Server) handleError(c *echo.Context, err error) {
	if r, _ := echo.UnwrapResponse(c.Response()); r != nil && r.Committed {
		if e := asError(err); e.Code == CodeInternal {
			s.log.Error("request failed after the answer started", s.logAttrs(c, e)...)
		}
		return
	}
	status, body := s.render(c, err)
	h := c.Response().Header()
	setErrorHeaders(h, status)
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(status)
		return
	}
	if werr := c.Blob(status, echo.MIMEApplicationJSON, body); werr != nil {
		s.log.Debug("writing error answer", "error", werr)
	}
}

// componentLogger returns l (or slog.Default) with the component set.
func componentLogger(l *slog.Logger) *slog.Logger {
	if l == nil {
		l = slog.Default()
	}
	return l.With("component", "httpapi")
}

// setErrorHeaders adds the headers an error status calls for.
func setErrorHeaders(h http.Header, status int) {
	switch status {
	case http.StatusUnauthorized:
		h.Set("WWW-Authenticate", `Bearer realm="campaign-orchestrator"`)
	case http.StatusTooManyRequests:
		if h.Get("Retry-After") == "" { // the limiter sets its own
			h.Set("Retry-After", "1")
		}
	}
}
