package stepclient

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"
)

// Errors. Compare with errors.Is; read a status answer with errors.As into a
// *StatusError.
//
// The context errors (context.Canceled, context.DeadlineExceeded) appear in
// an error returned by Call only when the caller's context ended: a
// per-attempt timeout is ErrAttemptTimeout and does not wrap
// context.DeadlineExceeded, so errors.Is(err, context.Canceled) reliably means
// "interrupted (shutdown)", not "the step failed".
var (
	// ErrRetriesExhausted: every allowed attempt failed with a retryable error
	// (network error, per-attempt timeout or a status the step lists). The
	// error also wraps the last attempt's error.
	ErrRetriesExhausted = errors.New("retries exhausted")
	// ErrAttemptTimeout: one attempt took longer than the step's timeout.
	ErrAttemptTimeout = errors.New("attempt timed out")
	// ErrResponseTooLarge: a 2xx answer's body was over Config.MaxResponseBytes.
	// Not retried.
	ErrResponseTooLarge = errors.New("response body too large")
	// ErrInvalidOutput: a 2xx answer's body was not JSON. Not retried.
	ErrInvalidOutput = errors.New("response body is not JSON")
	// ErrInvalidRequest: the Request cannot be sent (no step URL, a URL that is
	// not absolute http(s), missing tenant, campaign, step name or run, params
	// or outputs that are not JSON). Nothing was sent.
	ErrInvalidRequest = errors.New("invalid step request")
)

// maxErrorBody bounds StatusError.Body.
const maxErrorBody = 512

// StatusError is a non-2xx answer from the step's service. Unless the step's
// retry policy lists Code, it is returned after one attempt.
type StatusError struct {
	// Code is the HTTP status code.
	Code int
	// Body is the start of the answer's body (at most 512 bytes, valid UTF-8).
	Body string
}

// Error implements error.
func (e *StatusError) Error() string {
	msg := fmt.Sprintf("step service answered %d %s", e.Code, http.StatusText(e.Code))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// newStatusError builds a StatusError with a bounded, printable body.
func newStatusError(code int, body []byte) *StatusError {
	s := strings.TrimSpace(string(body))
	if len(s) > maxErrorBody {
		s = s[:maxErrorBody]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		s += "…"
	}
	return &StatusError{Code: code, Body: strings.ToValidUTF8(s, "?")}
}

// transientError marks an attempt's error as retryable.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// IsRetryable reports whether err is, or ends with, a failure that a later
// attempt may not meet: a network error (connection refused or reset,
// unexpected EOF), a per-attempt timeout, or a status the step's retry policy
// lists. An ErrRetriesExhausted error whose last cause was one of these is
// retryable too (a later retry of the step may succeed).
//
// Not retryable: the caller's context ending, an unlisted status
// (*StatusError), ErrResponseTooLarge, ErrInvalidOutput, ErrInvalidRequest and
// an error returned by onRetry.
func IsRetryable(err error) bool {
	var t *transientError
	return errors.As(err, &t)
}
