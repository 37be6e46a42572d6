// Package store keeps what the orchestrator must not lose between commands:
// each campaign's state (with a version), its ledger of applied command ids,
// its inbox of commands waiting for the campaign to be free, its outbox of
// messages to publish after a state write, its lock with a fencing token, and
// the HTTP ingress's idempotency records and per-tenant campaign index.
//
// Two implementations satisfy Store: Redis (NewRedis) for production and
// several processes, and in-process (NewMemory) for the zero-set-up default
// and one process only. Both pass the same contract suite (storetest).
//
// The store knows nothing of NATS or HTTP; it stores fsm types and opaque
// bytes. It never logs: errors go to the caller.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// Errors. Compare with errors.Is.
var (
	// ErrNotFound: no such campaign (or record).
	ErrNotFound = errors.New("store: not found")
	// ErrLockLost: the lease's lock expired or belongs to someone else, or a
	// newer fencing token has written the campaign. Nothing was written.
	ErrLockLost = errors.New("store: lock lost (fenced)")
	// ErrConflict: the campaign's version is not the one the write expected.
	// Nothing was written.
	ErrConflict = errors.New("store: version conflict")
	// ErrIdempotencyMismatch: an idempotency key reused with another request.
	ErrIdempotencyMismatch = errors.New("store: idempotency key reused with a different request")
	// ErrNotHead: the write named an inbox item (Write.Head) that is no longer
	// the inbox's first: an earlier command was parked meanwhile. Nothing
	// was written.
	ErrNotHead = errors.New("store: not the inbox's first item")
	// ErrInvalid: an argument the store cannot use (an empty or malformed
	// key, a bad List cursor or state, a non-positive TTL, a campaign that
	// does not belong to the lease's key). Nothing was written.
	ErrInvalid = errors.New("store: invalid argument")
)

// Key names one campaign.
type Key struct{ Tenant, Campaign string }

// String returns "<tenant>/<campaign>".
func (k Key) String() string { return k.Tenant + "/" + k.Campaign }

// Lease is a held campaign lock: the token its holder chose (Claim.Token),
// the fencing token that came with it, and the stream sequence of the
// message that backs the holder (Item.Seq of the Enqueue that took it). Fence
// grows with every acquisition of the campaign's lock and is always above the
// Fence recorded in the campaign's stored state.
type Lease struct {
	Key   Key
	Token string
	Fence uint64
	Seq   uint64
}

// Claim asks Enqueue to take the campaign's lock when it is free. Token is
// chosen by the caller once per logical acquisition (NewToken) and passed
// again unchanged on every retry of that Enqueue: a retry after a lost reply
// then finds its own lock and gets its Lease back, instead of taking the
// lock for someone else. The zero Claim parks the item and never takes the
// lock.
type Claim struct {
	Token string
	TTL   time.Duration
}

// Item is a command waiting in a campaign's inbox. Items are kept in Seq
// order (the JetStream stream sequence); ID is unique within the inbox.
type Item struct {
	ID   string
	Seq  uint64
	Data []byte // opaque to the store
}

// Message is one entry of a campaign's outbox: a message to publish after
// the state write that produced it, as its writer encoded it (the worker
// stores what internal/events gives it). Opaque to the store, which keeps
// its bytes as they are and compares them whole (TrimOutbox); it must not
// be empty.
type Message = []byte

// Enqueued is the answer of Enqueue.
type Enqueued struct {
	// Duplicate: the item's ID is in the campaign's ledger; it was not added.
	Duplicate bool
	// Lease is non-nil when the caller now holds the campaign's lock and must
	// drain the inbox (then Release). It is nil when someone else holds it:
	// that holder will find the item before it can release.
	Lease *Lease
	// Snapshot, with Lease, is what the holder starts from, read in the
	// same atomic step: no other round trip is needed to begin draining.
	Snapshot *Snapshot
	// HolderSeq, when Lease is nil and the lock is held, is the stream
	// sequence of the message that backs the holder (its Lease.Seq). When it
	// is the caller's own Item.Seq, the holder took over the caller's message
	// (redelivered while the caller stalled): the caller must not acknowledge
	// it, or nothing would bring the campaign back should that holder die.
	HolderSeq uint64
	// Held: the lock is held by someone else (HolderSeq 0: by a sweep,
	// backed by no message; see Take).
	Held bool
}

// Snapshot is a campaign as a new lock holder finds it.
type Snapshot struct {
	// Campaign is the stored campaign, nil when there is none.
	Campaign *fsm.Campaign
	// Inbox is the inbox's first InboxHead items, in Seq order.
	Inbox []Item
	// Outbox is the whole outbox, oldest first: what a lost holder left
	// unpublished.
	Outbox []Message
}

// InboxHead is how many inbox items Enqueue's Snapshot and CommitRead return.
const InboxHead = 32

// Write is one atomic, fenced change of a campaign.
type Write struct {
	// ID names this write, chosen by the caller once (NewToken) and kept
	// for every retry of it: a Commit retried after a lost reply finds its
	// own write and succeeds instead of reporting a version conflict. Empty:
	// the store picks one (safe against its own client's retries only).
	ID    string
	Lease Lease
	// Campaign, when not nil, replaces the stored campaign; the stored version
	// must be Campaign.Version-1 (0: the campaign must not exist yet). Its
	// Fence is set to Lease.Fence.
	Campaign *fsm.Campaign
	// Outbox is appended to the campaign's outbox.
	Outbox []Message
	// Applied command ids are added to the ledger.
	Applied []string
	// Dequeue removes these ids from the inbox.
	Dequeue []string
	// Head, when not empty, is the inbox item the write acts on: the write
	// happens only if it is still the inbox's first item (ErrNotHead).
	Head string
	// Trim holds outbox messages the caller published: they are removed
	// first, exactly as TrimOutbox would (the oldest len(Trim) messages, if
	// the last of them is at that position).
	Trim []Message
	// Park adds items to the inbox after Dequeue, as Enqueue does (an ID
	// already there is not added again) but without a ledger check: the
	// holder's own advances, the campaign's durable trigger. An advance
	// whose step is in flight is parked first (Seq 0), so that whoever
	// holds the lock next finishes that step before the commands that
	// arrived meanwhile; one scheduled while commands wait is parked
	// behind them (SeqInternal).
	Park []Item
}

// Install is a campaign rebuilt from its event history (internal/rebuild),
// for Store.Install: the state the store lost, never a newer one.
type Install struct {
	// ID names this install, chosen by the caller once (NewToken) and kept
	// for every retry: a retry after a lost reply finds its own install
	// (Installed true again) instead of a state that exists. Empty: the
	// store picks one.
	ID string
	// Campaign is the rebuilt state. Its Fence is the fence floor: the
	// highest fencing token the history shows.
	Campaign fsm.Campaign
	// Applied are the command ids the campaign's ledger must hold.
	Applied []string
	// Park adds items to the inbox as Write.Park does: the rebuilt
	// campaign's durable trigger when it has work pending.
	Park []Item
	// Lease, when not nil, is the caller's hold of the campaign's lock
	// (taken while the state was missing, so with a fencing token that may
	// be below the floor): the install is made only if it still holds the
	// lock (ErrLockLost), and its fencing token is raised above the floor
	// (Installed.Fence), so that it can go on writing.
	Lease *Lease
}

// Installed is the answer of Install.
type Installed struct {
	// Installed: the campaign was written (or had been, by this install).
	// False with Expired false: a state exists; nothing was written.
	Installed bool
	// Expired: the campaign ended longer ago than the retention, so its
	// state expired rather than got lost; nothing was written.
	Expired bool
	// Fence, with Install.Lease, is the lease's fencing token from now on
	// (Lease.Fence must be set to it): above every fence of the history.
	Fence uint64
}

// SeqInternal is the Seq of an advance the lock holder parks behind every
// command the stream accepted (Write.Park), so that a pause waiting in the
// inbox is applied before the next step.
const SeqInternal = 1 << 53

// IdemRecord is a stored HTTP answer for an Idempotency-Key.
type IdemRecord struct {
	Fingerprint string            `json:"fingerprint"`     // method, path and body hash of the first request
	Owner       string            `json:"owner,omitempty"` // nonce of the request that reserved it (see ReserveIdem)
	Status      int               `json:"status"`          // 0 while the first request is still in progress
	Header      map[string]string `json:"header,omitempty"`
	Body        []byte            `json:"body,omitempty"`
}

// Page is one page of a tenant's campaigns.
type Page struct {
	Campaigns []fsm.Campaign
	Next      string // cursor of the next page; "" when this is the last
}

// Store is the orchestrator's durable state. Every method is safe for
// concurrent use by many goroutines and, for Redis, many processes.
type Store interface {
	// Enqueue adds item to the campaign's inbox unless its ID is in the
	// campaign's ledger (Duplicate). An ID already in the inbox is not added
	// again: the first Seq and Data stay. Then, in the same atomic step, if
	// claim has a Token, the inbox or the outbox is not empty and the lock
	// is free, it takes the lock for claim.TTL with claim.Token, a new
	// fencing token and item.Seq as the backing message, and returns the
	// Lease (also for a Duplicate: whoever finds the lock free publishes
	// what a lost holder left in the outbox and drains the inbox). A lock
	// already held with claim.Token is the caller's own from an earlier run
	// of this call: its Lease is returned again. Otherwise HolderSeq tells
	// which message backs the holder.
	Enqueue(ctx context.Context, k Key, item Item, claim Claim) (Enqueued, error)
	// Take takes the campaign's lock for claim, backed by no message
	// (Lease.Seq 0), when the lock is free and the inbox or the outbox holds
	// something: a campaign whose holder died with no message left to bring
	// it back (see Stranded). It returns nil when the lock is held or there
	// is nothing to do. Like Enqueue, a retry with the same claim finds its
	// own lock.
	Take(ctx context.Context, k Key, claim Claim) (*Lease, error)
	// Stranded returns campaigns whose inbox or outbox is not empty while
	// their lock is free, a page at a time from cursor ("" first; the next
	// cursor is "" after the last page). A page may be empty while the next
	// cursor is not. Workers sweep them (Take, then drain), so that a
	// campaign's progress never rests on one unacknowledged message alone.
	Stranded(ctx context.Context, cursor string, limit int) ([]Key, string, error)
	// Inbox returns up to limit items in Seq order (ties by ID); limit <= 0
	// returns them all.
	Inbox(ctx context.Context, k Key, limit int) ([]Item, error)
	// Extend sets the lock's TTL to ttl again. ErrLockLost if not held by l.
	Extend(ctx context.Context, l Lease, ttl time.Duration) error
	// ExtendAll is Extend for many leases at once (one round trip to Redis,
	// pipelined): errs[i] is Extend's answer for leases[i].
	ExtendAll(ctx context.Context, leases []Lease, ttl time.Duration) (errs []error)
	// Release removes published from the outbox as TrimOutbox would, then
	// frees the lock if the inbox is empty and reports whether it did; false
	// means items arrived meanwhile: drain them, then try again.
	// When l no longer holds the lock but it is free and the inbox and the
	// outbox are empty (a retry after the release's reply was lost, or an
	// expiry with nothing left to do) it reports true as well. ErrLockLost
	// if another holder has the lock, or it is free with items or messages
	// waiting (another holder wrote them meanwhile and died: the caller must
	// take the lock again and publish them).
	Release(ctx context.Context, l Lease, published []Message) (bool, error)
	// Abandon frees the lock whatever the inbox holds (shutdown). It is not
	// an error if the lock is no longer held by l.
	Abandon(ctx context.Context, l Lease) error

	// Load returns the campaign. ErrNotFound if it does not exist.
	Load(ctx context.Context, k Key) (fsm.Campaign, error)
	// Commit applies w atomically: nothing is written unless l holds the
	// lock and no higher fence has written the campaign (ErrLockLost) and
	// the version matches (ErrConflict). A campaign written in a terminal
	// state expires, with its ledger and fencing counter, after the
	// retention; any other write of the campaign keeps it forever. The inbox
	// and outbox never expire: they empty themselves, and a command waiting
	// there must not be lost. A Write without Campaign keeps the campaign's
	// expiry as it is (or, when the campaign does not exist, lets the ledger
	// expire after the retention).
	Commit(ctx context.Context, w Write) error
	// CommitRead is Commit that also returns the inbox's first InboxHead
	// items after the write (also with ErrNotHead, nothing written: the
	// items as they are).
	CommitRead(ctx context.Context, w Write) ([]Item, error)
	// Outbox returns the campaign's outbox, oldest first.
	Outbox(ctx context.Context, k Key) ([]Message, error)
	// TrimOutbox removes published, the oldest messages of the outbox as
	// Outbox returned them, if they are still there: it removes
	// len(published) messages when the outbox's message at that position is
	// the last of published, and nothing otherwise, so a retry after a lost
	// reply does not remove messages never published. Outbox messages are
	// distinct (each carries its own id). ErrLockLost if l does not hold the
	// lock.
	TrimOutbox(ctx context.Context, l Lease, published []Message) error
	// Applied reports whether id is in the campaign's ledger.
	Applied(ctx context.Context, k Key, id string) (bool, error)
	// Install writes a campaign rebuilt from its history (CONTRACT
	// guarantee 8) if it has no state: in one atomic step it stores
	// in.Campaign (version, fence and state as given), adds in.Applied to
	// the ledger, removes from the inbox the items whose ids it holds
	// (Enqueue would have refused them: they were parked while the ledger
	// was lost), parks in.Park, and raises the fencing counter to at least
	// in.Campaign.Fence, so that the next lock's fencing token is above
	// every fence of the history. A terminal campaign expires with its
	// ledger and fencing counter the retention after its EndedAt; one that
	// ended longer ago than that is not written (Expired). A state that
	// exists is never overwritten (Installed false). The tenant's index
	// (List) gets the campaign only when it is written. ErrLockLost when
	// in.Lease no longer holds the lock, also for a retry of an install
	// that was made (in.ID) whose lease has been lost since; ErrInvalid
	// for a key or campaign the store cannot use.
	Install(ctx context.Context, in Install) (Installed, error)

	// List returns the tenant's campaigns in creation order (CreatedAt to
	// the millisecond, then ID), optionally only those in state ("" for
	// all), starting after cursor ("" for the first page). limit <= 0 means
	// DefaultListLimit; it is capped at MaxListLimit. A page may hold fewer
	// than limit campaigns while Next is not empty: follow Next until "".
	// ErrInvalid for a cursor List did not make or an unknown state.
	List(ctx context.Context, tenant string, state fsm.State, cursor string, limit int) (Page, error)
	// CountByState returns how many campaigns exist in each state, across
	// all tenants: every fsm.States entry is a key (zero included). A
	// campaign stops counting when it expires. It is meant for a metrics
	// gauge, not for decisions: Memory counts exactly (one pass over its
	// campaigns); Redis reads a global index kept beside the campaigns
	// (see Redis), exact except after a crash between a state write and the
	// index update, until the campaign's next Enqueue or Commit.
	CountByState(ctx context.Context) (map[fsm.State]int64, error)

	// ReserveIdem stores rec (Status 0: in progress) under (tenant, key) for
	// ttl unless a record exists, and returns the existing record and true
	// if one does (the caller compares fingerprints). An expired record does
	// not exist. A stored in-progress record with the caller's rec.Owner
	// (not empty) is the caller's own reservation from an earlier run of
	// this call (a lost reply): it counts as reserved now (false).
	ReserveIdem(ctx context.Context, tenant, key string, rec IdemRecord, ttl time.Duration) (IdemRecord, bool, error)
	// CompleteIdem replaces the record with the final answer (ttl again).
	// ErrIdempotencyMismatch, and nothing written, if the stored record has
	// another Fingerprint (the reservation expired and another request took
	// the key).
	CompleteIdem(ctx context.Context, tenant, key string, rec IdemRecord, ttl time.Duration) error
	// DeleteIdem removes the record (a 5xx answer is not kept): only the one
	// reserved or completed by owner, when owner is not empty, so that a
	// retried or late delete never removes another request's record.
	DeleteIdem(ctx context.Context, tenant, key, owner string) error

	// Secret returns the secret stored under name, storing candidate first
	// when there is none, so that every process sharing the store uses the
	// one the first of them chose (IDEMPOTENCY_SECRET when unset). Safe to
	// retry. ErrInvalid for an empty name or candidate.
	Secret(ctx context.Context, name string, candidate []byte) ([]byte, error)

	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
	// Close releases the store's resources.
	Close() error
}
