package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// The ingress's idempotency records and shared secrets.

// reserveSrc: KEYS record; ARGV json ttl_ms owner. Returns the existing
// record, or false after storing the new one or finding the caller's own
// in-progress reservation (same owner).
var reserveSrc = lua("reserve")

// ReserveIdem implements Store.
func (r *Redis) ReserveIdem(ctx context.Context, tenant, key string, rec IdemRecord, ttl time.Duration) (IdemRecord, bool, error) {
	if err := checkTenant(tenant); err != nil {
		return IdemRecord{}, false, fmt.Errorf("reserve idempotency key: %w", err)
	}
	if err := checkTTL("reserve idempotency key", ttl); err != nil {
		return IdemRecord{}, false, err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return IdemRecord{}, false, fmt.Errorf("reserve idempotency key %s/%s: encode: %w", tenant, key, err)
	}
	cur, err := r.scripts.reserve.Run(ctx, r.client, []string{r.idemKey(tenant, key)}, b, ttlMillis(ttl), rec.Owner).Text()
	if errors.Is(err, redis.Nil) {
		return IdemRecord{}, false, nil
	}
	if err != nil {
		return IdemRecord{}, false, fmt.Errorf("reserve idempotency key %s/%s: %w", tenant, key, err)
	}
	var got IdemRecord
	if err := json.Unmarshal([]byte(cur), &got); err != nil {
		return IdemRecord{}, false, fmt.Errorf("reserve idempotency key %s/%s: decode: %w", tenant, key, err)
	}
	return got, true, nil
}

// completeSrc: KEYS record; ARGV json fingerprint ttl_ms. Returns 0 if
// the stored record has another fingerprint, else 1 after writing.
var completeSrc = lua("complete")

// CompleteIdem implements Store.
func (r *Redis) CompleteIdem(ctx context.Context, tenant, key string, rec IdemRecord, ttl time.Duration) error {
	if err := checkTenant(tenant); err != nil {
		return fmt.Errorf("complete idempotency key: %w", err)
	}
	if err := checkTTL("complete idempotency key", ttl); err != nil {
		return err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("complete idempotency key %s/%s: encode: %w", tenant, key, err)
	}
	n, err := r.scripts.complete.Run(ctx, r.client, []string{r.idemKey(tenant, key)}, b, rec.Fingerprint, ttlMillis(ttl)).Int64()
	if err != nil {
		return fmt.Errorf("complete idempotency key %s/%s: %w", tenant, key, err)
	}
	if n != 1 {
		return fmt.Errorf("complete idempotency key %s/%s: %w", tenant, key, ErrIdempotencyMismatch)
	}
	return nil
}

// deleteIdemSrc: KEYS record; ARGV owner. Deletes the record unless owner
// is given and the record is another's. Returns the number deleted.
var deleteIdemSrc = lua("deleteidem")

// DeleteIdem implements Store.
func (r *Redis) DeleteIdem(ctx context.Context, tenant, key, owner string) error {
	if err := checkTenant(tenant); err != nil {
		return fmt.Errorf("delete idempotency key: %w", err)
	}
	if err := r.scripts.deleteIdem.Run(ctx, r.client, []string{r.idemKey(tenant, key)}, owner).Err(); err != nil {
		return fmt.Errorf("delete idempotency key %s/%s: %w", tenant, key, err)
	}
	return nil
}

// secretSrc: KEYS secret; ARGV candidate. Stores candidate unless a secret
// is stored, and returns the stored one.
var secretSrc = lua("secret")

// Secret implements Store. The secret is kept under P:secret:<name>, with
// no expiry.
func (r *Redis) Secret(ctx context.Context, name string, candidate []byte) ([]byte, error) {
	if name == "" || len(candidate) == 0 {
		return nil, fmt.Errorf("secret %q: empty name or candidate: %w", name, ErrInvalid)
	}
	b, err := r.scripts.secret.Run(ctx, r.client, []string{r.prefix + ":secret:" + name}, candidate).Text()
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	return []byte(b), nil
}
