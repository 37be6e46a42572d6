package httpapi

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v5"
	"github.com/oklog/ulid/v2"

	"github.com/campaign-orchestrator/orchestrator/internal/store"
)

// Idempotency-Key handling (IETF draft "The Idempotency-Key HTTP Header
// Field", CONTRACT section 7).
//
// A record per (tenant, key) is kept in the store. The first request
// reserves it (status 0, "in progress") with a short lease, runs, and then
// stores its exact answer (status, headers, body) for IdempotencyTTL when it
// is 2xx or 4xx; a 5xx answer deletes the record so that a retry can
// succeed. A repeat with the same fingerprint (method, path, body hash) gets
// the stored answer byte for byte with Idempotent-Replayed: true; a repeat
// while the first is in progress waits for it (bounded) and then replays;
// another request under the same key is 409.
//
// The command id is an HMAC-SHA256, under the server's idempotency secret
// (IDEMPOTENCY_SECRET, or one generated once and kept in the store), of
// tenant, key and fingerprint; never the raw key nor a plain hash of it.
// Equal keys of two tenants never collide, nobody without the secret can
// compute the id (so nobody can publish a message under it first and have
// JetStream's stream-wide deduplication drop this command), and a retry
// after a 503 whose command JetStream did store after all carries the same
// id, which JetStream (within its duplicate window) and the worker's ledger
// (after it) drop. A campaign id the server generates for such a request is
// derived the same way, so the retry names the same campaign.
//
// Each request also chooses a random owner nonce for its reservation, so
// that a reservation the store made although its reply was lost (and the
// Redis client retried) is recognised as the request's own.
const (
	// HeaderIdempotencyKey is the request header.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderReplayed marks a replayed answer.
	HeaderReplayed = "Idempotent-Replayed"
	// MaxIdempotencyKeyLength is the longest key accepted.
	MaxIdempotencyKeyLength = 255
	// MinIdempotencySecretLength is the shortest IDEMPOTENCY_SECRET
	// accepted, in bytes.
	MinIdempotencySecretLength = 16
	// idemSecretName names the generated secret in the store.
	idemSecretName = "idempotency"
	// generatedSecretLength is the size of a generated secret, in bytes.
	generatedSecretLength = 32
)

// idempotencySecret returns the configured secret, or, when none is, the
// one kept in the store, which the first ingress to start stored (a fresh
// random one) for every process sharing the store. It is called once, at
// start-up. The secret itself is never logged nor put in an error.
func idempotencySecret(ctx context.Context, configured []byte, st Store, log *slog.Logger) ([]byte, error) {
	if len(configured) > 0 {
		if len(configured) < MinIdempotencySecretLength {
			return nil, fmt.Errorf("httpapi: IDEMPOTENCY_SECRET is %d bytes, at least %d are needed", len(configured), MinIdempotencySecretLength)
		}
		log.Info("idempotency secret: from IDEMPOTENCY_SECRET")
		return bytes.Clone(configured), nil
	}
	candidate := make([]byte, generatedSecretLength)
	if _, err := rand.Read(candidate); err != nil {
		return nil, fmt.Errorf("httpapi: IDEMPOTENCY_SECRET unset: generating one: %w", err)
	}
	secret, err := st.Secret(ctx, idemSecretName, candidate)
	if err != nil {
		return nil, fmt.Errorf("httpapi: IDEMPOTENCY_SECRET unset, and the shared one cannot be read from the store: %w", err)
	}
	if len(secret) < MinIdempotencySecretLength {
		return nil, fmt.Errorf("httpapi: IDEMPOTENCY_SECRET unset, and the one kept in the store is %d bytes (at least %d are needed)", len(secret), MinIdempotencySecretLength)
	}
	if bytes.Equal(secret, candidate) {
		log.Info("idempotency secret: IDEMPOTENCY_SECRET unset, generated one and kept it in the store")
	} else {
		log.Info("idempotency secret: IDEMPOTENCY_SECRET unset, using the one kept in the store")
	}
	return secret, nil
}

// answer is a complete HTTP answer, kept under an Idempotency-Key.
type answer struct {
	status int
	header map[string]string
	body   []byte
}

// idemRequest is a request under an Idempotency-Key.
type idemRequest struct {
	tenant, key string
	fingerprint string
	commandID   string
	campaignID  string // for a generated campaign id
	// owner is this request's nonce in its reservation (IdemRecord.Owner),
	// chosen once per request.
	owner string
}

// newIdemRequest validates the key and derives the ids.
func (s *Server) newIdemRequest(c *echo.Context, tenant, key string, body []byte) (*idemRequest, error) {
	if key == "" || len(key) > MaxIdempotencyKeyLength {
		return nil, errorf(CodeInvalid, HeaderIdempotencyKey, "must be 1 to %d characters", MaxIdempotencyKeyLength)
	}
	for _, r := range key {
		if r < 0x20 || r > 0x7e {
			return nil, errorf(CodeInvalid, HeaderIdempotencyKey, "must be printable ASCII")
		}
	}
	r := c.Request()
	bodySum := sha256.Sum256(body)
	fp := r.Method + " " + r.URL.Path + " " + hex.EncodeToString(bodySum[:])
	commandID, campaignID := deriveIDs(s.idemSecret, tenant, key, fp)
	return &idemRequest{
		tenant: tenant, key: key, fingerprint: fp,
		commandID: commandID, campaignID: campaignID,
		owner: store.NewToken(),
	}, nil
}

// deriveIDs returns the command id ("idem-" and 32 hex digits) and the
// campaign id (a lower-case ULID) of a request under an Idempotency-Key:
// the two halves of HMAC-SHA256(secret, tenant, key, fingerprint). Tenant
// tokens, keys (printable ASCII) and fingerprints hold no NUL, so the
// NUL-separated input is unambiguous.
func deriveIDs(secret []byte, tenant, key, fingerprint string) (commandID, campaignID string) {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("campaign-orchestrator/idempotency\x00" + tenant + "\x00" + key + "\x00" + fingerprint))
	sum := m.Sum(nil)
	var u ulid.ULID
	copy(u[:], sum[16:32])
	return "idem-" + hex.EncodeToString(sum[:16]), strings.ToLower(u.String())
}

// idemLease bounds how long a reservation (status 0) lives if its request
// never completes (a crash): repeats wait at most that long, not a day.
func (s *Server) idemLease() time.Duration {
	return s.idemWait() + time.Minute
}

// idemWait is how long a repeat waits for the first request to finish.
func (s *Server) idemWait() time.Duration {
	return 2*s.cfg.PublishTimeout + 5*time.Second
}

// reserve takes the key for this request. It returns (nil, nil) when the
// request is the first and must run, the stored answer to replay, or an
// error (409 for another request under the key or one still in progress,
// 503 when the store is down). Store calls use ctx, which outlives the
// client, so that a reservation is never left half-made; the wait for
// another request's answer ends when the client goes (reqCtx).
func (s *Server) reserve(ctx, reqCtx context.Context, ir *idemRequest) (*answer, error) {
	deadline := time.Now().Add(s.idemWait())
	delay := 2 * time.Millisecond
	for {
		rec, exists, err := s.deps.Store.ReserveIdem(ctx, ir.tenant, ir.key, store.IdemRecord{Fingerprint: ir.fingerprint, Owner: ir.owner}, s.idemLease())
		switch {
		case err != nil:
			return nil, unavailable("the idempotency store", err)
		case !exists:
			return nil, nil
		case rec.Status == 0 && ir.owner != "" && rec.Owner == ir.owner && rec.Fingerprint == ir.fingerprint:
			// This request's own reservation, made by an earlier run of
			// the call whose reply was lost: the store answers false for
			// it itself; the same rule here keeps a request from ever
			// waiting on itself.
			return nil, nil
		case rec.Fingerprint != ir.fingerprint:
			return nil, errorf(CodeConflict, HeaderIdempotencyKey, "already used for another request (method, path or body differ)")
		case rec.Status != 0:
			return &answer{status: rec.Status, header: rec.Header, body: rec.Body}, nil
		}
		// The first request is still in progress: wait for its answer.
		if time.Now().After(deadline) {
			return nil, errorf(CodeConflict, HeaderIdempotencyKey, "a request with this key is still in progress")
		}
		t := time.NewTimer(delay)
		select {
		case <-reqCtx.Done():
			t.Stop()
			return nil, errorf(CodeConflict, HeaderIdempotencyKey, "a request with this key is still in progress")
		case <-ctx.Done():
			t.Stop()
			return nil, errorf(CodeConflict, HeaderIdempotencyKey, "a request with this key is still in progress")
		case <-t.C:
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// complete stores the answer of the first request (2xx, 4xx) or frees the
// key (5xx, and 429, which says "later", not "no"). Failures are logged: the
// answer itself still goes out.
func (s *Server) complete(ctx context.Context, ir *idemRequest, a *answer) {
	// The request's own context may have run out (a slow store is how a
	// 503 comes about): the key must not stay reserved because of it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var err error
	if a.status >= 500 || a.status == http.StatusTooManyRequests {
		err = s.deps.Store.DeleteIdem(ctx, ir.tenant, ir.key, ir.owner)
	} else {
		err = s.deps.Store.CompleteIdem(ctx, ir.tenant, ir.key, store.IdemRecord{
			Fingerprint: ir.fingerprint, Owner: ir.owner, Status: a.status, Header: a.header, Body: a.body,
		}, s.cfg.IdempotencyTTL)
	}
	if err != nil && !errors.Is(err, store.ErrIdempotencyMismatch) {
		s.log.Error("idempotency record not saved", "tenant_id", ir.tenant, "command_id", ir.commandID, "status", a.status, "error", err)
	}
}

// write sends an answer; replayed adds Idempotent-Replayed: true.
func (a *answer) write(c *echo.Context, replayed bool) error {
	h := c.Response().Header()
	for k, v := range a.header {
		h.Set(k, v)
	}
	if replayed {
		h.Set(HeaderReplayed, "true")
	}
	setErrorHeaders(h, a.status)
	c.Response().WriteHeader(a.status)
	_, err := c.Response().Write(a.body)
	return err
}
