package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// HTTPClient sends commands and reads campaigns through the service's HTTP
// ingress (docs/openapi.yaml), for callers outside NATS. It is safe for
// concurrent use.
type HTTPClient struct {
	base  *url.URL
	token string
	hc    *http.Client
}

// HTTPOption configures an HTTPClient.
type HTTPOption func(*HTTPClient)

// WithHTTPClient sends the requests with hc (default: a client with a 30 s
// timeout).
func WithHTTPClient(hc *http.Client) HTTPOption {
	return func(c *HTTPClient) {
		if hc != nil {
			c.hc = hc
		}
	}
}

// NewHTTP returns a client of the ingress at baseURL (http://host:8000) that
// authenticates with the bearer token, which names the tenant. With token ""
// (a service without API tokens, in development) each call names its tenant
// in X-Tenant-ID. It refuses a baseURL that is not an absolute http(s) URL.
func NewHTTP(baseURL, token string, opts ...HTTPOption) (*HTTPClient, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q: want an absolute http:// or https:// URL", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	c := &HTTPClient{base: u, token: token, hc: &http.Client{Timeout: 30 * time.Second}}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// ErrorCode is the machine-readable kind of an API error.
type ErrorCode string

// The API's error codes, one per status (CONTRACT section 7); the ingress
// answers with these.
const (
	CodeInvalidRequest       ErrorCode = "invalid_request"        // 400: bad JSON, a bad or missing field
	CodeUnauthorized         ErrorCode = "unauthorized"           // 401: no or unknown bearer token
	CodeForbidden            ErrorCode = "forbidden"              // 403: another tenant, an origin not allowed
	CodeNotFound             ErrorCode = "not_found"              // 404: no such campaign for the tenant
	CodeMethodNotAllowed     ErrorCode = "method_not_allowed"     // 405
	CodeConflict             ErrorCode = "conflict"               // 409: key reused, campaign exists, id in use
	CodePayloadTooLarge      ErrorCode = "payload_too_large"      // 413
	CodeUnsupportedMediaType ErrorCode = "unsupported_media_type" // 415
	CodeRateLimited          ErrorCode = "rate_limited"           // 429: retry after RetryAfter
	CodeInternal             ErrorCode = "internal"               // 500
	CodeUnavailable          ErrorCode = "unavailable"            // 503: nothing was done; retry
)

// ErrorCodes lists every code.
var ErrorCodes = []ErrorCode{
	CodeInvalidRequest, CodeUnauthorized, CodeForbidden, CodeNotFound, CodeMethodNotAllowed, CodeConflict,
	CodePayloadTooLarge, CodeUnsupportedMediaType, CodeRateLimited, CodeInternal, CodeUnavailable,
}

// APIError is an error answer of the ingress:
// {"error":{"code","message","field"}} and its status.
type APIError struct {
	// Status is the HTTP status.
	Status int
	// Code is the error's kind; Message names the field at fault, Field
	// is that field (or header) when there is one.
	Code    ErrorCode
	Message string
	Field   string
	// RetryAfter is the Retry-After of a 429 or 503 (0: none).
	RetryAfter time.Duration
}

// Error implements error.
func (e *APIError) Error() string {
	return fmt.Sprintf("client: HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// Temporary reports whether the same request may succeed later (429, 503).
func (e *APIError) Temporary() bool {
	return e.Code == CodeRateLimited || e.Code == CodeUnavailable
}

// Publish sends cmd for the tenant's campaign: a Create as POST
// /api/v1/campaigns (campaign "" lets the ingress choose the id, in
// Receipt.CampaignID), the other verbs as POST /api/v1/campaigns/{id}/{verb}.
// A nil error means the ingress answered 202: the command is stored in
// JetStream. With WithIdempotencyKey a repeat returns the first answer
// (Receipt.Replayed); WithTraceparent sets the request's traceparent.
// tenant "" leaves the tenant to the token. Errors: *APIError,
// *InvalidError for what cannot be sent (WithID, a bad token), transport
// errors.
func (c *HTTPClient) Publish(ctx context.Context, tenant, campaign string, cmd Command, opts ...PublishOption) (Receipt, error) {
	o := collect(opts)
	if o.idSet {
		return Receipt{}, invalidf("WithID is for NATS: over HTTP the ingress derives the command id from WithIdempotencyKey")
	}
	if cmd == nil {
		return Receipt{}, invalidf("no command")
	}
	if tenant != "" && !ValidToken(tenant) {
		return Receipt{}, invalidf("tenant %q must match %s", tenant, TokenPattern)
	}
	var path string
	var body []byte
	switch cmd := cmd.(type) {
	case Create:
		if campaign != "" && !ValidToken(campaign) {
			return Receipt{}, invalidf("campaign %q must match %s", campaign, TokenPattern)
		}
		req := struct {
			CampaignID string `json:"campaign_id,omitempty"`
			Create
		}{campaign, cmd}
		b, err := json.Marshal(req)
		if err != nil {
			return Receipt{}, invalidf("create: encode: %v", err)
		}
		path, body = "/api/v1/campaigns", b
	default:
		if !ValidToken(campaign) {
			return Receipt{}, invalidf("campaign %q must match %s", campaign, TokenPattern)
		}
		if !cmd.Verb().valid() {
			return Receipt{}, invalidf("verb %q is not one of %s", cmd.Verb(), verbList())
		}
		path = "/api/v1/campaigns/" + campaign + "/" + string(cmd.Verb())
	}
	h := http.Header{}
	if o.idemSet {
		h.Set("Idempotency-Key", o.idemKey)
	}
	if o.traceparent != "" {
		h.Set(HeaderTraceparent, o.traceparent)
	}
	var acc struct {
		CampaignID string `json:"campaign_id"`
		CommandID  string `json:"command_id"`
		Status     string `json:"status"`
	}
	res, err := c.do(ctx, http.MethodPost, path, tenant, h, body, &acc)
	if err != nil {
		return Receipt{}, err
	}
	return Receipt{CommandID: acc.CommandID, CampaignID: acc.CampaignID,
		Replayed: res.Header.Get("Idempotent-Replayed") == "true"}, nil
}

// Campaign is a campaign's state as GET /api/v1/campaigns/{id} shows it.
type Campaign struct {
	TenantID   string `json:"tenant_id"`
	CampaignID string `json:"campaign_id"`
	Name       string `json:"name"`
	Workflow   string `json:"workflow"`
	State      State  `json:"state"`
	// CurrentStep is the step to run next or running ("" once every step
	// ran); StepIndex its index in Steps.
	CurrentStep string          `json:"current_step"`
	StepIndex   int             `json:"step_index"`
	Steps       []StepStatus    `json:"steps"`
	Params      json.RawMessage `json:"params,omitempty"`
	// Outputs holds the output of each step that succeeded, by step name.
	Outputs map[string]json.RawMessage `json:"outputs"`
	Error   string                     `json:"error,omitempty"`
	// Sequence is the sequence of the last event reflected in this state.
	Sequence  uint64     `json:"sequence"`
	Version   uint64     `json:"version"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
}

// StepStatus is one step of a Campaign: pending, running, succeeded or
// failed, its run (from 1) and, while running, its attempt.
type StepStatus struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Run     int    `json:"run,omitempty"`
	Attempt int    `json:"attempt,omitempty"`
}

// Get returns the tenant's campaign; an unknown one is an *APIError with
// CodeNotFound.
func (c *HTTPClient) Get(ctx context.Context, tenant, campaign string) (Campaign, error) {
	if !ValidToken(campaign) {
		return Campaign{}, invalidf("campaign %q must match %s", campaign, TokenPattern)
	}
	var out Campaign
	_, err := c.do(ctx, http.MethodGet, "/api/v1/campaigns/"+campaign, tenant, nil, nil, &out)
	return out, err
}

// ListOptions select a page of List.
type ListOptions struct {
	// State keeps only the campaigns in that state ("": all).
	State State
	// Limit is the page size (0: the service's default, 50; at most 500).
	Limit int
	// Cursor is the NextCursor of the previous page ("": the first).
	Cursor string
}

// CampaignSummary is one campaign of a List page.
type CampaignSummary struct {
	CampaignID  string     `json:"campaign_id"`
	Name        string     `json:"name"`
	Workflow    string     `json:"workflow"`
	State       State      `json:"state"`
	CurrentStep string     `json:"current_step"`
	Error       string     `json:"error,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	EndedAt     *time.Time `json:"ended_at,omitempty"`
}

// Page is one page of List: follow NextCursor until it is "".
type Page struct {
	Campaigns  []CampaignSummary `json:"campaigns"`
	NextCursor string            `json:"next_cursor,omitempty"`
}

// List returns a page of the tenant's campaigns, in creation order.
func (c *HTTPClient) List(ctx context.Context, tenant string, o ListOptions) (Page, error) {
	q := url.Values{}
	if o.State != "" {
		q.Set("state", string(o.State))
	}
	if o.Limit != 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	path := "/api/v1/campaigns"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out Page
	_, err := c.do(ctx, http.MethodGet, path, tenant, nil, nil, &out)
	return out, err
}

// Events returns the campaign's history (GET /api/v1/campaigns/{id}/events),
// in sequence order.
func (c *HTTPClient) Events(ctx context.Context, tenant, campaign string) ([]Event, error) {
	if !ValidToken(campaign) {
		return nil, invalidf("campaign %q must match %s", campaign, TokenPattern)
	}
	var out []Event
	_, err := c.do(ctx, http.MethodGet, "/api/v1/campaigns/"+campaign+"/events", tenant, nil, nil, &out)
	return out, err
}

// maxAnswerBytes bounds an answer read.
const maxAnswerBytes = 64 << 20

// do sends one request and decodes a 2xx JSON answer into out; any other
// status is an *APIError.
func (c *HTTPClient) do(ctx context.Context, method, path, tenant string, h http.Header, body []byte, out any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, rd)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if tenant != "" {
		req.Header.Set("X-Tenant-ID", tenant)
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxAnswerBytes))
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: read answer: %w", method, path, err)
	}
	if res.StatusCode/100 != 2 {
		return nil, apiError(res, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return nil, fmt.Errorf("client: %s %s: decode answer: %w", method, path, err)
	}
	return res, nil
}

// apiError reads an error answer; one that is not the API's JSON shape
// (a proxy's page, say) keeps its status and a cut of its text.
func apiError(res *http.Response, data []byte) *APIError {
	var b struct {
		Error struct {
			Code    ErrorCode `json:"code"`
			Message string    `json:"message"`
			Field   string    `json:"field"`
		} `json:"error"`
	}
	e := &APIError{Status: res.StatusCode}
	if json.Unmarshal(data, &b) == nil && b.Error.Code != "" {
		e.Code, e.Message, e.Field = b.Error.Code, b.Error.Message, b.Error.Field
	} else {
		e.Code = codeOfStatus(res.StatusCode)
		msg := strings.TrimSpace(string(data))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		if msg == "" {
			msg = http.StatusText(res.StatusCode)
		}
		e.Message = msg
	}
	if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && s >= 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

// statusOfCode is the one table from codes to HTTP statuses.
var statusOfCode = map[ErrorCode]int{
	CodeInvalidRequest:       http.StatusBadRequest,
	CodeUnauthorized:         http.StatusUnauthorized,
	CodeForbidden:            http.StatusForbidden,
	CodeNotFound:             http.StatusNotFound,
	CodeMethodNotAllowed:     http.StatusMethodNotAllowed,
	CodeConflict:             http.StatusConflict,
	CodePayloadTooLarge:      http.StatusRequestEntityTooLarge,
	CodeUnsupportedMediaType: http.StatusUnsupportedMediaType,
	CodeRateLimited:          http.StatusTooManyRequests,
	CodeInternal:             http.StatusInternalServerError,
	CodeUnavailable:          http.StatusServiceUnavailable,
}

// Status is the HTTP status of the code (0 for an unknown code).
func (c ErrorCode) Status() int { return statusOfCode[c] }

func codeOfStatus(status int) ErrorCode {
	for c, s := range statusOfCode {
		if s == status {
			return c
		}
	}
	if status >= 500 {
		return CodeInternal
	}
	return CodeInvalidRequest
}
