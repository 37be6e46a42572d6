package httpapi_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/httpapi"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
)

// TestRateLimit: COMMAND_RATE per tenant, 429 with a Retry-After that says
// when the next token comes; another tenant has its own bucket; a 429 is not
// kept under its Idempotency-Key.
func TestRateLimit(t *testing.T) {
	tokens, err := httpapi.ParseTokens("acme:" + acmeToken + ", globex:" + globexToken)
	if err != nil {
		t.Fatal(err)
	}
	// One command per 10 s, two at once.
	e := newEnv(t, storeKinds[0].open(t), withConfig(func(c *httpapi.Config) { c.CommandRate, c.CommandBurst, c.Tokens = 0.1, 2, tokens }))
	acme, globex := []string{"Authorization", "Bearer " + acmeToken}, []string{"Authorization", "Bearer " + globexToken}
	accepted(t, e.create("acme", "r1", acme...))
	accepted(t, e.create("acme", "r2", acme...))
	r := e.create("acme", "r3", append(acme, "Idempotency-Key", "k3")...)
	wantError(t, r, 429, "")
	secs, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || secs < 9 || secs > 10 {
		t.Fatalf("Retry-After %q, want about 10 seconds (one token per 10 s)", r.header.Get("Retry-After"))
	}
	accepted(t, e.create("globex", "r1", globex...)) // per tenant, whatever the address
	// A 429 is not kept under its key: the same request is not replayed as 429 but limited again.
	if r := e.create("acme", "r3", append(acme, "Idempotency-Key", "k3")...); r.status != 429 || r.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("retry after 429: %s %v", r, r.header)
	}
	if n := len(e.commands()); n != 3 {
		t.Fatalf("%d commands", n)
	}
}

// TestRateLimitByAddressInDevelopmentMode: without API tokens the client
// names its tenant, so naming a new one per request does not escape the
// limit: the client address has a bucket too. The address is the peer's:
// an X-Forwarded-For from an untrusted peer changes nothing.
func TestRateLimitByAddressInDevelopmentMode(t *testing.T) {
	e := newEnv(t, storeKinds[0].open(t), withConfig(func(c *httpapi.Config) { c.CommandRate, c.CommandBurst = 0.001, 2 }))
	accepted(t, e.create("t1", "r1"))
	accepted(t, e.create("t2", "r1", "X-Forwarded-For", "203.0.113.7"))
	wantError(t, e.create("t3", "r1", "X-Forwarded-For", "203.0.113.8"), 429, "")
}

// TestTrustedProxies: only a trusted proxy's X-Forwarded-For names the
// client; clients behind it get their own address buckets.
func TestTrustedProxies(t *testing.T) {
	_, loopback, _ := net.ParseCIDR("127.0.0.0/8")
	e := newEnv(t, storeKinds[0].open(t), withConfig(func(c *httpapi.Config) {
		c.CommandRate, c.CommandBurst, c.TrustedProxies = 0.001, 1, []*net.IPNet{loopback}
	}))
	accepted(t, e.create("t1", "r1", "X-Forwarded-For", "203.0.113.7"))
	wantError(t, e.create("t2", "r1", "X-Forwarded-For", "203.0.113.7"), 429, "")
	accepted(t, e.create("t3", "r1", "X-Forwarded-For", "203.0.113.8"))
	// A client cannot pick its address by prepending one: the nearest
	// untrusted entry counts.
	wantError(t, e.create("t4", "r1", "X-Forwarded-For", "198.51.100.1, 203.0.113.8"), 429, "")
}

// TestSecureHeaders: every answer, errors included, tells the browser not
// to sniff, frame or refer; API answers are not cached.
func TestSecureHeaders(t *testing.T) {
	e := newEnv(t, storeKinds[0].open(t))
	for _, r := range []resp{
		e.create("acme", "h1"),
		e.do("GET", "/api/v1/campaigns/nope", nil, "X-Tenant-ID", "acme"),
		e.do("GET", "/healthz", nil),
	} {
		for h, want := range map[string]string{
			"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
			"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
		} {
			if got := r.header.Get(h); got != want {
				t.Errorf("%d answer: %s = %q, want %q", r.status, h, got, want)
			}
		}
	}
	if got := e.create("acme", "h2").header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("API answer Cache-Control %q, want no-store", got)
	}
}

// stalledStore answers Load only when the request's context ends.
type stalledStore struct{ store.Store }

func (stalledStore) Load(ctx context.Context, _ store.Key) (fsm.Campaign, error) {
	<-ctx.Done()
	return fsm.Campaign{}, ctx.Err()
}

// TestRequestTimeout: a request whose handling outlasts RequestTimeout is
// answered 503 saying so (here: a store that never answers).
func TestRequestTimeout(t *testing.T) {
	e := newEnv(t, stalledStore{storeKinds[0].open(t)}, withConfig(func(c *httpapi.Config) { c.RequestTimeout = 200 * time.Millisecond }))
	r := e.do("GET", "/api/v1/campaigns/slow", nil, "X-Tenant-ID", "acme")
	wantError(t, r, 503, "")
	if _, _, msg := r.errorCode(); !strings.Contains(msg, "longer than 200ms") {
		t.Fatalf("503 does not name the request timeout: %s", r)
	}
}
