package store

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// Defaults of Options and List.
const (
	// DefaultRetention is how long an ended campaign is kept (CAMPAIGN_RETENTION).
	DefaultRetention = 720 * time.Hour
	// DefaultPrefix starts every Redis key.
	DefaultPrefix = "co"
	// DefaultListLimit is List's page size when limit <= 0.
	DefaultListLimit = 50
	// MaxListLimit caps List's page size.
	MaxListLimit = 500
)

// Options tune a Store. The zero value is valid: every field has a default.
type Options struct {
	// Retention is how long a campaign written in a terminal state is kept,
	// with its ledger and fencing counter (default DefaultRetention). It also
	// bounds how long the ledger of a campaign that was never created is kept.
	Retention time.Duration
	// Now is the clock of the in-process store (default time.Now); tests set
	// it to drive TTLs. Redis ignores it: its TTLs follow the server's clock.
	Now func() time.Time
	// Prefix starts every Redis key (default DefaultPrefix), so that several
	// services or tests can share one Redis database. The in-process store
	// ignores it.
	Prefix string
}

func (o Options) withDefaults() Options {
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	return o
}

// check rejects a key that cannot name a campaign: an empty token, a brace
// (it would break the Redis hash tag) or a slash (two keys would share one
// hash tag).
func (k Key) check() error {
	if k.Tenant == "" || k.Campaign == "" ||
		strings.ContainsAny(k.Tenant, "{}/") || strings.ContainsAny(k.Campaign, "{}/") {
		return fmt.Errorf("key %q: %w", k.String(), ErrInvalid)
	}
	return nil
}

func checkTenant(tenant string) error {
	if tenant == "" || strings.ContainsAny(tenant, "{}") {
		return fmt.Errorf("tenant %q: %w", tenant, ErrInvalid)
	}
	return nil
}

func checkTTL(op string, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("%s: ttl %s: %w", op, ttl, ErrInvalid)
	}
	return nil
}

// checkEnqueue validates Enqueue's arguments.
func checkEnqueue(k Key, item Item, claim Claim) error {
	if err := k.check(); err != nil {
		return fmt.Errorf("enqueue %s: %w", k, err)
	}
	if item.ID == "" {
		return fmt.Errorf("enqueue %s: empty item id: %w", k, ErrInvalid)
	}
	if claim.Token == "" {
		return nil
	}
	if strings.ContainsRune(claim.Token, '|') {
		return fmt.Errorf("enqueue %s: lock token with '|': %w", k, ErrInvalid)
	}
	return checkTTL("enqueue "+k.String(), claim.TTL)
}

// checkTake validates Take's arguments.
func checkTake(k Key, claim Claim) error {
	if err := k.check(); err != nil {
		return fmt.Errorf("take %s: %w", k, err)
	}
	if claim.Token == "" || strings.ContainsRune(claim.Token, '|') {
		return fmt.Errorf("take %s: lock token %q: %w", k, claim.Token, ErrInvalid)
	}
	return checkTTL("take "+k.String(), claim.TTL)
}

// lockValue is what the lock holds: the holder's token and the stream
// sequence of the message backing it.
func lockValue(token string, seq uint64) string {
	return token + "|" + strconv.FormatUint(seq, 10)
}

// lockSeq reads the backing sequence of a lock value (0 if none).
func lockSeq(v string) uint64 {
	i := strings.LastIndexByte(v, '|')
	if i < 0 {
		return 0
	}
	n, _ := strconv.ParseUint(v[i+1:], 10, 64)
	return n
}

// checkWrite rejects a Write whose campaign is not the lease's, and an
// outbox without a campaign (only a campaign write can recognise its own
// retry, so only it may append).
func checkInstall(in Install) error {
	k := Key{Tenant: in.Campaign.Tenant, Campaign: in.Campaign.ID}
	if err := k.check(); err != nil {
		return err
	}
	if in.Lease != nil && in.Lease.Key != k {
		return fmt.Errorf("install of %s under the lease of %s: %w", k, in.Lease.Key, ErrInvalid)
	}
	if in.Campaign.Version == 0 || !in.Campaign.State.Valid() {
		return fmt.Errorf("install of %s: version %d, state %q: %w", k, in.Campaign.Version, in.Campaign.State, ErrInvalid)
	}
	if in.Campaign.Fence > fsm.MaxFence {
		return fmt.Errorf("install of %s: fence floor %d above %d: %w", k, in.Campaign.Fence, uint64(fsm.MaxFence), ErrInvalid)
	}
	if in.Campaign.State.Terminal() && in.Campaign.EndedAt == nil {
		return fmt.Errorf("install of %s: %s without an end time: %w", k, in.Campaign.State, ErrInvalid)
	}
	for _, it := range in.Park {
		if it.ID == "" || it.Seq > SeqInternal {
			return fmt.Errorf("install of %s: parked item %q (seq %d): %w", k, it.ID, it.Seq, ErrInvalid)
		}
	}
	return nil
}

func checkWrite(w Write) error {
	if err := w.Lease.Key.check(); err != nil {
		return err
	}
	if w.Campaign == nil && len(w.Outbox) > 0 {
		return fmt.Errorf("outbox without a campaign under key %s: %w", w.Lease.Key, ErrInvalid)
	}
	for i, m := range w.Outbox {
		if len(m) == 0 {
			return fmt.Errorf("empty outbox message %d under key %s: %w", i, w.Lease.Key, ErrInvalid)
		}
	}
	for _, it := range w.Park {
		if it.ID == "" || it.Seq > SeqInternal {
			return fmt.Errorf("parked item %q (seq %d) under key %s: %w", it.ID, it.Seq, w.Lease.Key, ErrInvalid)
		}
	}
	if c := w.Campaign; c != nil {
		if c.Tenant != w.Lease.Key.Tenant || c.ID != w.Lease.Key.Campaign {
			return fmt.Errorf("campaign %s/%s under key %s: %w", c.Tenant, c.ID, w.Lease.Key, ErrInvalid)
		}
		if c.Version == 0 {
			return fmt.Errorf("campaign %s: version 0: %w", w.Lease.Key, ErrInvalid)
		}
	}
	return nil
}

// ExpiresAt is when a campaign rebuilt as c expires from a store keeping
// ended campaigns for retention: the retention after it ended, for a
// terminal campaign (ok); a campaign that has not ended never expires. The
// rule Install applies (Expired) and a worker checks before it treats a
// missing state as a loss.
func ExpiresAt(c fsm.Campaign, retention time.Duration) (t time.Time, ok bool) {
	if !c.State.Terminal() || c.EndedAt == nil {
		return time.Time{}, false
	}
	return c.EndedAt.Add(retention), true
}

// NewToken returns a random token (32 hex characters) for a Claim, a
// Write.ID or an IdemRecord.Owner.
func NewToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// listLimit applies List's default and cap.
func listLimit(limit int) int {
	switch {
	case limit <= 0:
		return DefaultListLimit
	case limit > MaxListLimit:
		return MaxListLimit
	}
	return limit
}

// ttlMillis rounds d up to whole milliseconds, at least 1.
func ttlMillis(d time.Duration) int64 {
	ms := int64((d + time.Millisecond - 1) / time.Millisecond)
	if ms < 1 {
		ms = 1
	}
	return ms
}
