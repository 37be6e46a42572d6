// Package stepclient calls one step of a campaign: an HTTP POST to the step's
// service (CONTRACT section 6) with a per-attempt timeout, exponential
// back-off with jitter on network errors, opt-in retries of listed statuses
// honouring Retry-After, and a bounded JSON output.
//
// It owns the wire format of a step call and the retries inside one run of a
// step. It does not log, record events, take locks or touch the store: each
// retry is reported to the caller's onRetry callback before the wait, and
// failures come back as classified errors (IsRetryable, *StatusError,
// ErrRetriesExhausted, the caller's context error).
//
// Attempts are counted where they happen. Go's http.Transport silently
// replays a request carrying an Idempotency-Key when a reused keep-alive
// connection fails; the client makes its requests non-replayable (no
// GetBody), so every request that reaches the wire is one of its attempts,
// with its own attempt number in the body, and a failure is retried here,
// after the back-off, with onRetry told.
//
// Each attempt is an OpenTelemetry client span (internal/tracing), and the
// traceparent header it sends is that span's.
package stepclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v5"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/tracing"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultMaxRetries       = 2
	DefaultBackoffBase      = 500 * time.Millisecond
	DefaultTimeout          = 10 * time.Second
	DefaultMaxResponseBytes = 1 << 20
	DefaultMaxRetryAfter    = 30 * time.Second
	DefaultIdleConnsPerHost = 1024
	// connBufferSize is the read and the write buffer of each connection
	// of the default transport.
	connBufferSize = 1 << 10
)

// Back-off shape: delays base, 2×base, 4×base… each ±20 %.
const (
	backoffMultiplier   = 2
	backoffRandomFactor = 0.2
)

// Config configures a Client. Zero fields take the defaults above.
type Config struct {
	// MaxRetries is the number of retries after the first attempt of a run
	// (default 2). Zero means the default; a negative value disables retries.
	// A step's Retry.MaxRetries, when set, replaces it for that step.
	MaxRetries int
	// BackoffBase is the first retry delay (default 500ms); each next delay
	// doubles, with ±20 % jitter. A step's Retry.BackoffBase, when set,
	// replaces it for that step.
	BackoffBase time.Duration
	// Timeout bounds each attempt, the body read included (default 10s). A
	// step's own Timeout, when set, replaces it.
	Timeout time.Duration
	// MaxResponseBytes bounds a 2xx answer's body (default 1 MiB); a bigger
	// one is ErrResponseTooLarge, not retried.
	MaxResponseBytes int64
	// MaxRetryAfter caps the wait a Retry-After header asks for (default 30s).
	MaxRetryAfter time.Duration
	// HTTPClient, when set, is used (a shallow copy that never follows
	// redirects: a 3xx answer is a *StatusError). Default: a client on a
	// clone of http.DefaultTransport that keeps up to IdleConnsPerHost idle
	// connections to each step service.
	HTTPClient *http.Client
	// IdleConnsPerHost is how many idle connections the default transport
	// keeps to one step service (default 1024; set it to the steps in
	// flight). http.DefaultTransport keeps 2: with more calls at once, every
	// other call dials a new connection and leaves one in TIME_WAIT — CPU
	// for nothing, and ephemeral ports run out under load.
	IdleConnsPerHost int
	// H2C, with the default transport, calls http:// step services over
	// HTTP/2 without TLS (prior knowledge): calls in flight share a few
	// connections instead of holding one each (its two goroutines and its
	// buffers). Every http:// step service must speak it. https:// services
	// negotiate HTTP/2 by ALPN either way.
	H2C bool
	// TracerProvider starts each attempt's client span, whose traceparent
	// is the one sent (nil: the global provider).
	TracerProvider trace.TracerProvider
}

// Request is one run of one step of one campaign.
type Request struct {
	Tenant   string
	Campaign string
	Step     fsm.Step
	// Run counts the runs of the step, from 1; it is part of the
	// Idempotency-Key.
	Run int
	// Attempt is the number of the first attempt this call makes (1, or more
	// when a call interrupted by a crash is resumed). Attempts already made
	// count against the retry budget; the call always makes at least one.
	Attempt int
	// Params and Outputs go into the body as they are; empty means {}.
	Params  json.RawMessage
	Outputs json.RawMessage
	// Fence is the fencing token sent as Campaign-Fence.
	Fence uint64
	// Traceparent names the parent of the attempts' client spans when ctx
	// carries no span. The traceparent header sent is the client span's
	// (with no tracer provider installed: ctx's or this one, unchanged).
	Traceparent string
}

// Result is a call's outcome. Call returns Attempts and Duration with an
// error too.
type Result struct {
	// Output is the 2xx answer's body, compacted JSON ({} when empty).
	Output json.RawMessage
	// Attempts is the number of the last attempt made (Request.Attempt-1
	// when none was made).
	Attempts int
	// Duration is the time the whole call took, retries and waits included.
	Duration time.Duration
}

// RetryNotice tells onRetry that an attempt failed and another follows after
// Delay.
type RetryNotice struct {
	// Attempt is the number of the attempt that failed.
	Attempt int
	// Err is why it failed (IsRetryable(Err) is true).
	Err error
	// Delay is the wait before the next attempt.
	Delay time.Duration
}

// Client calls steps. It is safe for concurrent use.
type Client struct {
	cfg    Config
	http   *http.Client
	tracer trace.Tracer
}

// New returns a Client with cfg's zero fields set to their defaults.
func New(cfg Config) *Client {
	switch {
	case cfg.MaxRetries == 0:
		cfg.MaxRetries = DefaultMaxRetries
	case cfg.MaxRetries < 0:
		cfg.MaxRetries = 0
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = DefaultBackoffBase
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if cfg.IdleConnsPerHost <= 0 {
		cfg.IdleConnsPerHost = DefaultIdleConnsPerHost
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = cfg.IdleConnsPerHost
	t.MaxIdleConns = 0 // no limit over all hosts: each is bounded by MaxIdleConnsPerHost
	// A step's request and answer are small, and every call in flight holds
	// its connection's buffers (4 KiB each by default): larger ones are read
	// and written in several pieces.
	t.ReadBufferSize, t.WriteBufferSize = connBufferSize, connBufferSize
	hc := &http.Client{Transport: t}
	if cfg.H2C {
		h2c := t.Clone()
		h2c.Protocols = new(http.Protocols)
		h2c.Protocols.SetUnencryptedHTTP2(true) // alone: http:// URLs go over h2c
		// One dial at a time per step service (for HTTP/2 this bounds the
		// dials in progress, not the connections): calls that start
		// together wait for it and share the connection, where each would
		// otherwise dial its own.
		h2c.MaxConnsPerHost = 1
		hc.Transport = bySchemeTransport{plain: h2c, tls: t}
	}
	if cfg.HTTPClient != nil {
		c := *cfg.HTTPClient
		hc = &c
	}
	// A redirected POST would become a GET or need a replayable body: treat a
	// 3xx as the answer.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cfg.HTTPClient = nil
	return &Client{cfg: cfg, http: hc, tracer: tracing.Tracer(cfg.TracerProvider)}
}

// bySchemeTransport sends http:// requests through plain, the others
// through tls.
type bySchemeTransport struct{ plain, tls *http.Transport }

func (t bySchemeTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme == "http" {
		return t.plain.RoundTrip(r)
	}
	return t.tls.RoundTrip(r)
}

// policy is the effective retry policy of one step.
type policy struct {
	retries  int
	base     time.Duration
	timeout  time.Duration
	statuses []int
}

func (c *Client) policy(s fsm.Step) policy {
	p := policy{retries: c.cfg.MaxRetries, base: c.cfg.BackoffBase, timeout: c.cfg.Timeout}
	if s.Timeout > 0 {
		p.timeout = s.Timeout
	}
	if r := s.Retry; r != nil {
		if r.MaxRetries > 0 {
			p.retries = r.MaxRetries
		}
		if r.BackoffBase > 0 {
			p.base = r.BackoffBase
		}
		p.statuses = r.RetryOnStatus
	}
	return p
}

// Call runs one step: it POSTs the step request and retries network errors,
// per-attempt timeouts and the statuses the step lists, up to the retry
// budget, calling onRetry (when not nil) before each wait. If onRetry returns
// an error, Call stops and returns it wrapped.
//
// Errors:
//   - the caller's context error, wrapped, when ctx ended before an answer
//     (no further attempt is made);
//   - *StatusError for an answer outside 2xx that is not retried;
//   - ErrRetriesExhausted wrapped with the last attempt's error;
//   - ErrResponseTooLarge, ErrInvalidOutput, ErrInvalidRequest;
//   - the error onRetry returned, wrapped.
func (c *Client) Call(ctx context.Context, req Request, onRetry func(RetryNotice) error) (Result, error) {
	start := time.Now()
	name := req.Step.Name
	first := max(req.Attempt, 1)
	res := Result{Attempts: first - 1}
	if err := validate(req); err != nil {
		return res, fmt.Errorf("step %s: %w", name, err)
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("step %s: not called: %w", name, err)
	}

	p := c.policy(req.Step)
	tries := max(p.retries+1-(first-1), 1)
	sched := newSchedule(p.base)

	// rctx lets onRetry's error end back-off's wait at once.
	rctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var (
		attempt = first - 1
		stopErr error // returned by onRetry
		lastErr error // the last attempt's error
	)
	op := func() (json.RawMessage, error) {
		if stopErr != nil {
			return nil, backoff.Permanent(stopErr)
		}
		if err := ctx.Err(); err != nil {
			return nil, backoff.Permanent(err)
		}
		attempt++
		actx, span := c.startAttempt(ctx, req, attempt)
		out, err := c.attempt(actx, req, attempt, p, sched)
		endAttempt(span, err)
		lastErr = err
		if err != nil && !IsRetryable(err) {
			return nil, backoff.Permanent(err)
		}
		return out, err
	}
	notify := func(err error, d time.Duration) {
		if onRetry == nil || stopErr != nil {
			return
		}
		if e := onRetry(RetryNotice{Attempt: attempt, Err: err, Delay: d}); e != nil {
			stopErr = e
			stop(e)
		}
	}
	out, err := backoff.Retry(rctx, op,
		backoff.WithBackOff(sched),
		backoff.WithMaxTries(uint(tries)),
		backoff.WithMaxElapsedTime(c.elapsedBound(tries, p)),
		backoff.WithNotify(notify),
	)
	res.Attempts = attempt
	res.Duration = time.Since(start)
	switch {
	case err == nil:
		res.Output = out
		return res, nil
	case stopErr != nil:
		return res, fmt.Errorf("step %s: stopped after attempt %d: %w", name, attempt, stopErr)
	case ctx.Err() != nil && (lastErr == nil || IsRetryable(lastErr) || isContextErr(ctx, lastErr)):
		return res, fmt.Errorf("step %s: interrupted after attempt %d: %w", name, attempt, ctx.Err())
	case lastErr != nil && !IsRetryable(lastErr):
		return res, fmt.Errorf("step %s: attempt %d: %w", name, attempt, lastErr)
	default:
		if lastErr == nil {
			lastErr = err
		}
		return res, fmt.Errorf("step %s: %w after %d attempts (last: attempt %d): %w",
			name, ErrRetriesExhausted, attempt-first+1, attempt, lastErr)
	}
}

// isContextErr reports whether err is ctx's own error.
func isContextErr(ctx context.Context, err error) bool {
	return ctx.Err() != nil && err == ctx.Err()
}

// validate checks what Call needs before sending anything.
func validate(req Request) error {
	switch {
	case req.Tenant == "" || req.Campaign == "":
		return fmt.Errorf("%w: tenant and campaign are required", ErrInvalidRequest)
	case req.Step.Name == "":
		return fmt.Errorf("%w: step name is required", ErrInvalidRequest)
	case req.Run < 1:
		return fmt.Errorf("%w: run %d, want 1 or more", ErrInvalidRequest, req.Run)
	case len(req.Params) > 0 && !json.Valid(req.Params):
		return fmt.Errorf("%w: params are not JSON", ErrInvalidRequest)
	case len(req.Outputs) > 0 && !json.Valid(req.Outputs):
		return fmt.Errorf("%w: outputs are not JSON", ErrInvalidRequest)
	}
	u, err := url.Parse(req.Step.URL)
	if err != nil {
		return fmt.Errorf("%w: url %q: %v", ErrInvalidRequest, req.Step.URL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: url %q is not an absolute http(s) URL", ErrInvalidRequest, req.Step.URL)
	}
	return nil
}

// body is the JSON body of a step request (CONTRACT section 6).
type body struct {
	Tenant   string          `json:"tenant_id"`
	Campaign string          `json:"campaign_id"`
	Step     string          `json:"step"`
	Attempt  int             `json:"attempt"`
	Params   json.RawMessage `json:"params"`
	Outputs  json.RawMessage `json:"outputs"`
}

var emptyObject = json.RawMessage("{}")

func orEmpty(m json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(m)) == 0 {
		return emptyObject
	}
	return m
}

// IdempotencyKey returns the Idempotency-Key of a step request:
// <tenant>.<campaign>.<step>.<run>.
func IdempotencyKey(tenant, campaign, step string, run int) string {
	return tenant + "." + campaign + "." + step + "." + strconv.Itoa(run)
}

// attempt makes attempt number n. Its error is a *transientError when a
// retry may help, the parent context's error when ctx ended, or a final
// error.
func (c *Client) attempt(ctx context.Context, req Request, n int, p policy, sched *schedule) (json.RawMessage, error) {
	payload, err := json.Marshal(body{
		Tenant: req.Tenant, Campaign: req.Campaign, Step: req.Step.Name, Attempt: n,
		Params: orEmpty(req.Params), Outputs: orEmpty(req.Outputs),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: encode body: %v", ErrInvalidRequest, err)
	}
	actx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(actx, http.MethodPost, req.Step.URL, bytes.NewReader(payload))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	// Not replayable: the transport must not resend it behind our back (see
	// the package comment).
	hreq.GetBody = nil
	h := hreq.Header
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json")
	h.Set("User-Agent", "campaign-orchestrator-stepclient")
	h.Set("Idempotency-Key", IdempotencyKey(req.Tenant, req.Campaign, req.Step.Name, req.Run))
	h.Set("Campaign-Fence", strconv.FormatUint(req.Fence, 10))
	if tp := tracing.Traceparent(ctx); tp != "" {
		h.Set(tracing.Header, tp)
	}

	resp, err := c.http.Do(hreq)
	if err != nil {
		return nil, networkError(ctx, actx, p.timeout, err)
	}
	defer resp.Body.Close()
	trace.SpanFromContext(ctx).SetAttributes(semconv.HTTPResponseStatusCode(resp.StatusCode))
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxResponseBytes+1))
	if err != nil {
		return nil, networkError(ctx, actx, p.timeout, fmt.Errorf("read %d answer: %w", resp.StatusCode, err))
	}
	tooLarge := int64(len(data)) > c.cfg.MaxResponseBytes

	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if tooLarge {
			return nil, fmt.Errorf("%w: %d answer over %d bytes", ErrResponseTooLarge, resp.StatusCode, c.cfg.MaxResponseBytes)
		}
		return output(data)
	}
	se := newStatusError(resp.StatusCode, data)
	if !slices.Contains(p.statuses, resp.StatusCode) {
		return nil, se
	}
	if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		sched.setOverride(min(d, c.cfg.MaxRetryAfter))
	}
	return nil, &transientError{err: se}
}

// networkError classifies a failed request or body read.
func networkError(ctx, actx context.Context, timeout time.Duration, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if actx.Err() != nil {
		// %v, not %w: a per-attempt timeout must not look like the caller's
		// context.DeadlineExceeded.
		return &transientError{err: fmt.Errorf("%w (%s): %v", ErrAttemptTimeout, timeout, err)}
	}
	return &transientError{err: err}
}

// output turns a 2xx body into the step's output.
func output(data []byte) (json.RawMessage, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return emptyObject, nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidOutput, err)
	}
	return json.RawMessage(buf.Bytes()), nil
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date.
// A date in the past is a zero wait.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(time.Duration(1<<62)/time.Second) {
			secs = int64(time.Duration(1<<62) / time.Second)
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// schedule is the back-off of one call: exponential with jitter, except
// that a Retry-After answer sets the next delay (any duration, sub-second
// included, without resetting the exponential progression).
type schedule struct {
	exp      backoff.ExponentialBackOff
	next     time.Duration
	override bool
}

var _ backoff.BackOff = (*schedule)(nil)

func newSchedule(base time.Duration) *schedule {
	return &schedule{exp: backoff.ExponentialBackOff{
		InitialInterval:     base,
		RandomizationFactor: backoffRandomFactor,
		Multiplier:          backoffMultiplier,
		MaxInterval:         max(backoff.DefaultMaxInterval, base),
	}}
}

// NextBackOff implements backoff.BackOff.
func (s *schedule) NextBackOff() time.Duration {
	d := s.exp.NextBackOff()
	if s.override {
		s.override = false
		return s.next
	}
	return d
}

// Reset implements backoff.BackOff.
func (s *schedule) Reset() {
	s.exp.Reset()
	s.override = false
}

func (s *schedule) setOverride(d time.Duration) {
	s.next, s.override = d, true
}

// elapsedBound is the call's MaxElapsedTime: enough for every attempt to
// time out and every wait to be its longest, plus a margin, so it never cuts
// the retry budget short yet stays finite.
func (c *Client) elapsedBound(tries int, p policy) time.Duration {
	total := time.Duration(tries)*p.timeout + time.Minute
	d := p.base
	for i := 1; i < tries; i++ {
		wait := time.Duration(float64(d)*(1+backoffRandomFactor)) + time.Millisecond
		if len(p.statuses) > 0 {
			wait = max(wait, c.cfg.MaxRetryAfter)
		}
		total += wait
		d = min(d*backoffMultiplier, max(backoff.DefaultMaxInterval, p.base))
	}
	return total
}
