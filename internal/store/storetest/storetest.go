// Package storetest is the contract test suite of store.Store: every
// implementation runs Run and must pass it unchanged. It is for tests only.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
)

// Retention is the Options.Retention that the stores newStore returns must
// have: the suite waits for ended campaigns to expire.
const Retention = 400 * time.Millisecond

// FenceResetter is implemented by a store under test that can simulate the
// loss of a campaign's fencing counter (Redis restarted without persistence).
// Without it the fence-reset case is skipped.
type FenceResetter interface {
	ResetFence(ctx context.Context, k store.Key) error
}

// ReplyLoser is implemented by a store under test that can lose the reply
// to one call after the server carried it out (the connection drops after a
// Redis script ran, and the client retries on a new one). Without it the
// LostReply cases are skipped.
type ReplyLoser interface {
	// LoseNextReply makes the reply to the store's next script call be lost
	// once; lost reports how many replies were lost so far (0 or 1).
	LoseNextReply(t *testing.T) (lost func() int)
}

const (
	longTTL  = 30 * time.Second       // a lock that must not expire during a test
	shortTTL = 100 * time.Millisecond // a lock a test waits to expire
	midTTL   = 500 * time.Millisecond // a lock a test extends at once
	waitFor  = 10 * time.Second       // deadline of every poll
)

// Run runs the contract suite. newStore returns a new, empty store (or one
// whose keys no other call sees) with Options.Retention = Retention, and
// arranges for it to be closed in t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		f    func(t *testing.T, s store.Store)
	}{
		{"EmptyAndInvalid", testEmptyAndInvalid},
		{"EnqueueInboxOrder", testEnqueueInboxOrder},
		{"DuplicateViaLedger", testDuplicateViaLedger},
		{"LeaseOnlyWhenFree", testLeaseOnlyWhenFree},
		{"WrongTokenOrFence", testWrongTokenOrFence},
		{"ExpiredLease", testExpiredLease},
		{"FenceIncreases", testFenceIncreases},
		{"FenceAfterCounterReset", testFenceAfterCounterReset},
		{"VersionConflict", testVersionConflict},
		{"Outbox", testOutbox},
		{"LeftoverOutboxTakesLock", testLeftoverOutboxTakesLock},
		{"WriteWithoutCampaign", testWriteWithoutCampaign},
		{"Abandon", testAbandon},
		{"TerminalExpires", testTerminalExpires},
		{"RetriedKept", testRetriedKept},
		{"List", testList},
		{"Idempotency", testIdempotency},
		{"IdempotencyTTL", testIdempotencyTTL},
		{"ConcurrentHolders", testConcurrentHolders},
		{"CountByState", testCountByState},
		{"RetriedCalls", testRetriedCalls},
		{"HolderSeq", testHolderSeq},
		{"Secret", testSecret},
		{"LostReply", testLostReply},
		{"ReleaseAfterTakeover", testReleaseAfterTakeover},
		{"StrandedAndTake", testStrandedAndTake},
		{"SnapshotAndHead", testSnapshotAndHead},
		{"Park", testPark},
		{"ExtendAll", testExtendAll},
		{"Install", testInstall},
		{"InstallUnderLease", testInstallUnderLease},
		{"InstallTerminal", testInstallTerminal},
		{"InstallRetriedAfterLeaseLost", testInstallRetriedAfterLeaseLost},
		{"InstallNotWrittenKeepsList", testInstallNotWrittenKeepsList},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.f(t, newStore(t))
		})
	}
}

// helpers

func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// created is the creation time of the suite's campaigns.
func created() time.Time { return time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC) }

// newCampaign returns a campaign of k with the given version and state.
func newCampaign(k store.Key, version uint64, state fsm.State) *fsm.Campaign {
	return &fsm.Campaign{
		Tenant: k.Tenant, ID: k.Campaign, Name: "campaign " + k.Campaign,
		Workflow: fsm.Workflow{Name: "standard", Steps: []fsm.Step{{Name: "validate", URL: "http://x/validate"}}},
		Params:   json.RawMessage(`{"audience":"all"}`),
		State:    state, Version: version, Seq: version,
		Runs:      map[string]int{"validate": 1},
		Outputs:   map[string]json.RawMessage{"validate": json.RawMessage(`{"ok":true}`)},
		CreatedAt: created(), UpdatedAt: created().Add(time.Duration(version) * time.Second),
	}
}

func item(id string, seq uint64) store.Item {
	return store.Item{ID: id, Seq: seq, Data: []byte("data of " + id)}
}

// claim is a Claim with a new token.
func claim(ttl time.Duration) store.Claim { return store.Claim{Token: store.NewToken(), TTL: ttl} }

func mustEnqueue(t *testing.T, s store.Store, k store.Key, it store.Item, ttl time.Duration) store.Enqueued {
	t.Helper()
	res, err := s.Enqueue(t.Context(), k, it, claim(ttl))
	if err != nil {
		t.Fatalf("Enqueue(%s, %s): %v", k, it.ID, err)
	}
	return res
}

// mustLease enqueues it and requires that it brings the lease.
func mustLease(t *testing.T, s store.Store, k store.Key, it store.Item, ttl time.Duration) store.Lease {
	t.Helper()
	res := mustEnqueue(t, s, k, it, ttl)
	if res.Lease == nil {
		t.Fatalf("Enqueue(%s, %s) on a free campaign: no lease", k, it.ID)
	}
	if res.Lease.Key != k || res.Lease.Token == "" || res.Lease.Fence == 0 {
		t.Fatalf("Enqueue(%s, %s): lease %+v", k, it.ID, *res.Lease)
	}
	return *res.Lease
}

// mustNoLease enqueues it and requires that the lock was not free.
func mustNoLease(t *testing.T, s store.Store, k store.Key, it store.Item) {
	t.Helper()
	if res := mustEnqueue(t, s, k, it, longTTL); res.Lease != nil {
		t.Fatalf("Enqueue(%s, %s) while the lock is held: got a lease %+v", k, it.ID, *res.Lease)
	}
}

func mustCommit(t *testing.T, s store.Store, w store.Write) {
	t.Helper()
	if err := s.Commit(t.Context(), w); err != nil {
		t.Fatalf("Commit(%s): %v", w.Lease.Key, err)
	}
}

func mustRelease(t *testing.T, s store.Store, l store.Lease, want bool) {
	t.Helper()
	got, err := s.Release(t.Context(), l, nil)
	if err != nil {
		t.Fatalf("Release(%s): %v", l.Key, err)
	}
	if got != want {
		t.Fatalf("Release(%s) = %v, want %v", l.Key, got, want)
	}
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want %v", what, err, target)
	}
}

func inboxIDs(t *testing.T, s store.Store, k store.Key, limit int) []string {
	t.Helper()
	items, err := s.Inbox(t.Context(), k, limit)
	if err != nil {
		t.Fatalf("Inbox(%s): %v", k, err)
	}
	ids := []string{}
	for _, it := range items {
		ids = append(ids, it.ID)
	}
	return ids
}

func applied(t *testing.T, s store.Store, k store.Key, id string) bool {
	t.Helper()
	ok, err := s.Applied(t.Context(), k, id)
	if err != nil {
		t.Fatalf("Applied(%s, %s): %v", k, id, err)
	}
	return ok
}

func outbox(t *testing.T, s store.Store, k store.Key) []store.Message {
	t.Helper()
	msgs, err := s.Outbox(t.Context(), k)
	if err != nil {
		t.Fatalf("Outbox(%s): %v", k, err)
	}
	return msgs
}

func mustLoad(t *testing.T, s store.Store, k store.Key) fsm.Campaign {
	t.Helper()
	c, err := s.Load(t.Context(), k)
	if err != nil {
		t.Fatalf("Load(%s): %v", k, err)
	}
	return c
}

func wantNotFound(t *testing.T, s store.Store, k store.Key) {
	t.Helper()
	_, err := s.Load(t.Context(), k)
	wantErr(t, "Load("+k.String()+")", err, store.ErrNotFound)
}

// sameCampaign fails unless got is want once stored (Fence set to fence).
func sameCampaign(t *testing.T, got fsm.Campaign, want fsm.Campaign, fence uint64) {
	t.Helper()
	want.Fence = fence
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if !bytes.Equal(g, w) {
		t.Fatalf("campaign\n got %s\nwant %s", g, w)
	}
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, waitFor)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// expire lets a TTL of d pass (the only sleep the suite uses).
func expire(d time.Duration) { time.Sleep(d + d/2 + 20*time.Millisecond) }

// tests

func testEmptyAndInvalid(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := store.Key{Tenant: "acme", Campaign: "empty"}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	wantNotFound(t, s, k)
	if ids := inboxIDs(t, s, k, 0); len(ids) != 0 {
		t.Fatalf("Inbox of an unknown campaign = %v", ids)
	}
	if msgs := outbox(t, s, k); len(msgs) != 0 {
		t.Fatalf("Outbox of an unknown campaign = %v", msgs)
	}
	if applied(t, s, k, "x") {
		t.Fatal("Applied on an unknown campaign = true")
	}
	_, err := s.Enqueue(ctx, store.Key{Tenant: "acme"}, item("a", 1), store.Claim{Token: store.NewToken(), TTL: longTTL})
	wantErr(t, "Enqueue with an empty campaign", err, store.ErrInvalid)
	_, err = s.Enqueue(ctx, k, item("a", 1), store.Claim{Token: store.NewToken(), TTL: 0})
	wantErr(t, "Enqueue with ttl 0", err, store.ErrInvalid)
	_, err = s.Enqueue(ctx, k, item("", 1), store.Claim{Token: store.NewToken(), TTL: longTTL})
	wantErr(t, "Enqueue with an empty id", err, store.ErrInvalid)
	_, err = s.Enqueue(ctx, store.Key{Tenant: "a/b", Campaign: "c"}, item("a", 1), store.Claim{Token: store.NewToken(), TTL: longTTL})
	wantErr(t, "Enqueue with a slash in the tenant", err, store.ErrInvalid)

	l := mustLease(t, s, k, item("a", 1), longTTL)
	other := newCampaign(store.Key{Tenant: "other", Campaign: k.Campaign}, 1, fsm.Pending)
	err = s.Commit(ctx, store.Write{Lease: l, Campaign: other})
	wantErr(t, "Commit of another tenant's campaign", err, store.ErrInvalid)
	wantNotFound(t, s, k)
	_, err = s.List(ctx, "acme", "sleeping", "", 10)
	wantErr(t, "List with an unknown state", err, store.ErrInvalid)
	_, err = s.List(ctx, "acme", "", "not a cursor!", 10)
	wantErr(t, "List with a bad cursor", err, store.ErrInvalid)
}

func testEnqueueInboxOrder(t *testing.T, s store.Store) {
	k := store.Key{Tenant: "acme", Campaign: "order"}
	res := mustEnqueue(t, s, k, item("a", 30), longTTL)
	if res.Duplicate || res.Lease == nil {
		t.Fatalf("first Enqueue = %+v, want a lease and no duplicate", res)
	}
	mustNoLease(t, s, k, item("b", 10))
	mustNoLease(t, s, k, item("c", 20))
	mustNoLease(t, s, k, item("d", 20)) // same Seq: ordered by id
	if got, want := inboxIDs(t, s, k, 0), []string{"b", "c", "d", "a"}; !slices.Equal(got, want) {
		t.Fatalf("Inbox = %v, want %v", got, want)
	}
	if got, want := inboxIDs(t, s, k, 2), []string{"b", "c"}; !slices.Equal(got, want) {
		t.Fatalf("Inbox(limit 2) = %v, want %v", got, want)
	}

	// Re-enqueueing an id in the inbox changes nothing.
	again := mustEnqueue(t, s, k, store.Item{ID: "a", Seq: 5, Data: []byte("other")}, longTTL)
	if again.Duplicate || again.Lease != nil {
		t.Fatalf("re-Enqueue of an id in the inbox = %+v, want neither duplicate nor lease", again)
	}
	items, err := s.Inbox(t.Context(), k, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Item{item("b", 10), item("c", 20), item("d", 20), item("a", 30)}
	if !reflect.DeepEqual(items, want) {
		t.Fatalf("Inbox after re-enqueue =\n%+v\nwant\n%+v", items, want)
	}
	if ids := inboxIDs(t, s, store.Key{Tenant: "acme", Campaign: "order2"}, 0); len(ids) != 0 {
		t.Fatalf("another campaign's inbox = %v", ids)
	}
	if ids := inboxIDs(t, s, store.Key{Tenant: "other", Campaign: "order"}, 0); len(ids) != 0 {
		t.Fatalf("another tenant's inbox = %v", ids)
	}
}

func testDuplicateViaLedger(t *testing.T, s store.Store) {
	k := store.Key{Tenant: "acme", Campaign: "dup"}
	l := mustLease(t, s, k, item("a", 1), longTTL)
	mustCommit(t, s, store.Write{Lease: l, Campaign: newCampaign(k, 1, fsm.Pending), Applied: []string{"a"}, Dequeue: []string{"a"}})
	if !applied(t, s, k, "a") || applied(t, s, k, "b") {
		t.Fatal("ledger: want a applied and b not")
	}
	if applied(t, s, store.Key{Tenant: "other", Campaign: "dup"}, "a") {
		t.Fatal("ledger shared across tenants")
	}
	res := mustEnqueue(t, s, k, item("a", 2), longTTL)
	if !res.Duplicate || res.Lease != nil {
		t.Fatalf("Enqueue of an applied id while held = %+v, want duplicate without lease", res)
	}
	if ids := inboxIDs(t, s, k, 0); len(ids) != 0 {
		t.Fatalf("Inbox after a duplicate = %v, want empty", ids)
	}
	mustRelease(t, s, l, true)
	res = mustEnqueue(t, s, k, item("a", 3), longTTL)
	if !res.Duplicate || res.Lease != nil {
		t.Fatalf("Enqueue of an applied id while free = %+v, want duplicate without lease (nothing to drain)", res)
	}
}

func testLeaseOnlyWhenFree(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := store.Key{Tenant: "acme", Campaign: "free"}
	l1 := mustLease(t, s, k, item("a", 1), longTTL)
	mustNoLease(t, s, k, item("b", 2))
	mustRelease(t, s, l1, false) // b waits
	mustCommit(t, s, store.Write{Lease: l1, Dequeue: []string{"a"}})
	mustRelease(t, s, l1, false)
	mustCommit(t, s, store.Write{Lease: l1, Dequeue: []string{"b"}})
	mustRelease(t, s, l1, true)

	// A second Release (a retry after a lost reply) finds nothing to do.
	mustRelease(t, s, l1, true)
	wantErr(t, "Extend after Release", s.Extend(ctx, l1, longTTL), store.ErrLockLost)

	l2 := mustLease(t, s, k, item("c", 3), longTTL)
	if l2.Fence <= l1.Fence || l2.Token == l1.Token {
		t.Fatalf("second lease %+v after %+v: want a higher fence and a new token", l2, l1)
	}
	if err := s.Extend(ctx, l2, longTTL); err != nil {
		t.Fatalf("Extend: %v", err)
	}
}

// untouched fails unless k has no campaign, an empty outbox and ledger,
// and exactly inbox in its inbox.
func untouched(t *testing.T, s store.Store, k store.Key, inbox ...string) {
	t.Helper()
	wantNotFound(t, s, k)
	if msgs := outbox(t, s, k); len(msgs) != 0 {
		t.Fatalf("outbox written: %v", msgs)
	}
	for _, id := range inbox {
		if applied(t, s, k, id) {
			t.Fatalf("ledger written: %s", id)
		}
	}
	if got := inboxIDs(t, s, k, 0); !slices.Equal(got, inbox) {
		t.Fatalf("inbox = %v, want %v", got, inbox)
	}
}

// fullWrite is a Write that touches everything.
func fullWrite(l store.Lease, version uint64, ids ...string) store.Write {
	return store.Write{
		Lease: l, Campaign: newCampaign(l.Key, version, fsm.Running),
		Outbox:  []store.Message{[]byte("campaign.evt.x x")},
		Applied: ids, Dequeue: ids,
	}
}

func testWrongTokenOrFence(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := store.Key{Tenant: "acme", Campaign: "wrong"}
	l := mustLease(t, s, k, item("a", 1), longTTL)
	bad := l
	bad.Token = "not-the-token"
	wantErr(t, "Extend(wrong token)", s.Extend(ctx, bad, longTTL), store.ErrLockLost)
	_, err := s.Release(ctx, bad, nil)
	wantErr(t, "Release(wrong token)", err, store.ErrLockLost)
	wantErr(t, "Commit(wrong token)", s.Commit(ctx, fullWrite(bad, 1, "a")), store.ErrLockLost)
	wantErr(t, "TrimOutbox(wrong token)", s.TrimOutbox(ctx, bad, outbox(t, s, k)), store.ErrLockLost)
	untouched(t, s, k, "a")

	// The same token on another campaign is not a lease there.
	k2 := store.Key{Tenant: "acme", Campaign: "wrong2"}
	l2 := mustLease(t, s, k2, item("x", 1), longTTL)
	cross := l2
	cross.Key = k
	cross.Token = l2.Token
	wantErr(t, "Commit(another campaign's lease)", s.Commit(ctx, fullWrite(cross, 1, "a")), store.ErrLockLost)
	untouched(t, s, k, "a")

	if err := s.Abandon(ctx, bad); err != nil {
		t.Fatalf("Abandon(wrong token): %v", err)
	}
	mustNoLease(t, s, k, item("b", 2)) // still held by l

	// The right token with a fence below the stored one is refused too.
	mustCommit(t, s, fullWrite(l, 1, "a"))
	low := l
	low.Fence = l.Fence - 1
	w := fullWrite(low, 2, "b")
	wantErr(t, "Commit(lower fence)", s.Commit(ctx, w), store.ErrLockLost)
	if c := mustLoad(t, s, k); c.Version != 1 || c.Fence != l.Fence {
		t.Fatalf("after a fenced-out commit: version %d fence %d, want 1 and %d", c.Version, c.Fence, l.Fence)
	}
	if applied(t, s, k, "b") || len(outbox(t, s, k)) != 1 {
		t.Fatal("a fenced-out commit wrote the ledger or the outbox")
	}
}

func testExpiredLease(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := store.Key{Tenant: "acme", Campaign: "expired"}
	l1 := mustLease(t, s, k, item("a", 1), shortTTL)
	expire(shortTTL)

	// Expired, nobody else holds it: still refused.
	wantErr(t, "Commit after the TTL", s.Commit(ctx, fullWrite(l1, 1, "a")), store.ErrLockLost)
	wantErr(t, "Extend after the TTL", s.Extend(ctx, l1, longTTL), store.ErrLockLost)
	wantErr(t, "TrimOutbox after the TTL", s.TrimOutbox(ctx, l1, outbox(t, s, k)), store.ErrLockLost)
	_, err := s.Release(ctx, l1, nil)
	wantErr(t, "Release after the TTL", err, store.ErrLockLost)
	untouched(t, s, k, "a")

	// Someone else takes it; the old holder stays out.
	l2 := mustLease(t, s, k, item("b", 2), longTTL)
	if l2.Fence <= l1.Fence {
		t.Fatalf("fence %d after an expired %d", l2.Fence, l1.Fence)
	}
	wantErr(t, "Commit of the old holder", s.Commit(ctx, fullWrite(l1, 1, "a")), store.ErrLockLost)
	if err := s.Abandon(ctx, l1); err != nil {
		t.Fatalf("Abandon of the old holder: %v", err)
	}
	mustNoLease(t, s, k, item("c", 3))
	mustCommit(t, s, fullWrite(l2, 1, "a", "b", "c"))
	mustRelease(t, s, l2, true)

	// Extend keeps a short lock alive.
	l3 := mustLease(t, s, k, item("d", 4), midTTL)
	if err := s.Extend(ctx, l3, longTTL); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	expire(midTTL)
	mustNoLease(t, s, k, item("e", 5))
	mustCommit(t, s, fullWrite(l3, 2, "d", "e"))
}

func testFenceIncreases(t *testing.T, s store.Store) {
	k := store.Key{Tenant: "acme", Campaign: "fence"}
	var last uint64
	for i := uint64(1); i <= 5; i++ {
		id := "c" + strconv.FormatUint(i, 10)
		l := mustLease(t, s, k, item(id, i), longTTL)
		if l.Fence <= last {
			t.Fatalf("acquisition %d: fence %d after %d", i, l.Fence, last)
		}
		last = l.Fence
		if i%2 == 1 { // every other holder writes the campaign
			c := newCampaign(k, i/2+1, fsm.Running)
			mustCommit(t, s, store.Write{Lease: l, Campaign: c, Applied: []string{id}, Dequeue: []string{id}})
			sameCampaign(t, mustLoad(t, s, k), *c, l.Fence)
			mustRelease(t, s, l, true)
		} else {
			mustCommit(t, s, store.Write{Lease: l, Dequeue: []string{id}})
			if err := s.Abandon(t.Context(), l); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func testFenceAfterCounterReset(t *testing.T, s store.Store) {
	r, ok := s.(FenceResetter)
	if !ok {
		t.Skip("the store cannot reset its fencing counter")
	}
	k := store.Key{Tenant: "acme", Campaign: "reset"}
	var version uint64
	for i := uint64(1); i <= 3; i++ {
		id := "c" + strconv.FormatUint(i, 10)
		l := mustLease(t, s, k, item(id, i), longTTL)
		version++
		mustCommit(t, s, store.Write{Lease: l, Campaign: newCampaign(k, version, fsm.Running), Applied: []string{id}, Dequeue: []string{id}})
		mustRelease(t, s, l, true)
	}
	stored := mustLoad(t, s, k).Fence
	if err := r.ResetFence(t.Context(), k); err != nil {
		t.Fatalf("ResetFence: %v", err)
	}
	l := mustLease(t, s, k, item("after", 10), longTTL)
	if l.Fence <= stored {
		t.Fatalf("fence %d after a counter reset, want above the stored %d", l.Fence, stored)
	}
	version++
	mustCommit(t, s, store.Write{Lease: l, Campaign: newCampaign(k, version, fsm.Running), Dequeue: []string{"after"}})
	mustRelease(t, s, l, true)
	l2 := mustLease(t, s, k, item("next", 11), longTTL)
	if l2.Fence <= l.Fence {
		t.Fatalf("fence %d after %d", l2.Fence, l.Fence)
	}
}

func testVersionConflict(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := store.Key{Tenant: "acme", Campaign: "conflict"}
	l := mustLease(t, s, k, item("a", 1), longTTL)
	wantErr(t, "Commit of version 2 on no campaign", s.Commit(ctx, fullWrite(l, 2, "a")), store.ErrConflict)
	untouched(t, s, k, "a")

	c1 := newCampaign(k, 1, fsm.Pending)
	mustCommit(t, s, store.Write{Lease: l, Campaign: c1, Outbox: []store.Message{[]byte("v1")}})
	for _, v := range []uint64{1, 3} {
		err := s.Commit(ctx, fullWrite(l, v, "a"))
		wantErr(t, fmt.Sprintf("Commit of version %d on version 1", v), err, store.ErrConflict)
	}
	sameCampaign(t, mustLoad(t, s, k), *c1, l.Fence)
	if msgs := outbox(t, s, k); len(msgs) != 1 || string(msgs[0]) != "v1" {
		t.Fatalf("outbox after conflicts = %+v", msgs)
	}
	if applied(t, s, k, "a") || !slices.Equal(inboxIDs(t, s, k, 0), []string{"a"}) {
		t.Fatal("a conflicting commit wrote the ledger or the inbox")
	}
	c2 := newCampaign(k, 2, fsm.Running)
	c2.Error = "none"
	mustCommit(t, s, store.Write{Lease: l, Campaign: c2, Applied: []string{"a"}, Dequeue: []string{"a"}})
	sameCampaign(t, mustLoad(t, s, k), *c2, l.Fence)
}

func testOutbox(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := store.Key{Tenant: "acme", Campaign: "outbox"}
	l := mustLease(t, s, k, item("a", 1), longTTL)
	m1 := store.Message(`{"subject":"campaign.evt.acme.outbox.created","header":{"Nats-Msg-Id":"acme.outbox.1"},"data":"eyJuIjoxfQ=="}`)
	m2 := store.Message{0, 1, 2, 255, 0, '\n', '"', '\\'} // any bytes: NUL, newline, quote, backslash, not UTF-8
	m3 := store.Message("advance")
	mustCommit(t, s, store.Write{Lease: l, Campaign: newCampaign(k, 1, fsm.Running), Outbox: []store.Message{m1, m2}})
	mustCommit(t, s, store.Write{Lease: l, Campaign: newCampaign(k, 2, fsm.Running), Outbox: []store.Message{m3}})
	if got, want := outbox(t, s, k), []store.Message{m1, m2, m3}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Outbox =\n%+v\nwant\n%+v", got, want)
	}
	if err := s.TrimOutbox(ctx, l, nil); err != nil {
		t.Fatalf("TrimOutbox(none): %v", err)
	}
	published := outbox(t, s, k)[:2]
	for range 2 { // the second time is a retry after a lost reply: m3 stays
		if err := s.TrimOutbox(ctx, l, published); err != nil {
			t.Fatalf("TrimOutbox(2): %v", err)
		}
		if got, want := outbox(t, s, k), []store.Message{m3}; !reflect.DeepEqual(got, want) {
			t.Fatalf("Outbox after trimming 2 = %+v, want %+v", got, want)
		}
	}
	// Messages that are not the outbox's oldest are not trimmed.
	if err := s.TrimOutbox(ctx, l, []store.Message{m1, m2, m3}); err != nil {
		t.Fatalf("TrimOutbox(3 of 1): %v", err)
	}
	if err := s.TrimOutbox(ctx, l, []store.Message{m1}); err != nil {
		t.Fatalf("TrimOutbox(m1): %v", err)
	}
	if got, want := outbox(t, s, k), []store.Message{m3}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Outbox after trimming what is not there = %+v, want %+v", got, want)
	}
	if err := s.TrimOutbox(ctx, l, outbox(t, s, k)); err != nil {
		t.Fatalf("TrimOutbox(all): %v", err)
	}
	if got := outbox(t, s, k); len(got) != 0 {
		t.Fatalf("Outbox after trimming all = %+v", got)
	}
	if got := outbox(t, s, store.Key{Tenant: "other", Campaign: "outbox"}); len(got) != 0 {
		t.Fatalf("another tenant's outbox = %+v", got)
	}
}

// A holder that lost its lock between a write and the publish of its outbox
// leaves messages behind with an empty inbox: the next Enqueue, even of a
// duplicate, must take the free lock so that someone publishes them.
func testLeftoverOutboxTakesLock(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := store.Key{Tenant: "acme", Campaign: "leftover"}
	l := mustLease(t, s, k, item("create", 1), shortTTL)
	m := store.Message("campaign.evt.acme.leftover.created {}")
	mustCommit(t, s, store.Write{Lease: l, Campaign: newCampaign(k, 1, fsm.Pending), Outbox: []store.Message{m}, Applied: []string{"create"}, Dequeue: []string{"create"}})
	if in, err := s.Inbox(ctx, k, 0); err != nil || len(in) != 0 {
		t.Fatalf("inbox %v %v, want empty", in, err)
	}
	// The holder dies: its lock expires with the outbox still full.
	deadline := time.Now().Add(waitFor)
	for {
		res := mustEnqueue(t, s, k, item("create", 1), longTTL)
		if !res.Duplicate {
			t.Fatal("the applied create is not a duplicate")
		}
		if res.Lease != nil {
			if res.Lease.Fence <= l.Fence {
				t.Fatalf("fence %d after %d", res.Lease.Fence, l.Fence)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an outbox left by an expired holder never handed out the lock")
		}
		time.Sleep(shortTTL / 4)
	}
}

func testWriteWithoutCampaign(t *testing.T, s store.Store) {
	// An unknown campaign's command: ledger and dequeue, no state.
	k := store.Key{Tenant: "acme", Campaign: "unknown"}
	l := mustLease(t, s, k, item("a", 1), longTTL)
	// An outbox without a campaign write could not recognise its own retry.
	dlq := store.Message("campaign.dlq.acme.unknown")
	wantErr(t, "Commit(outbox without a campaign)", s.Commit(t.Context(), store.Write{Lease: l, Outbox: []store.Message{dlq}}), store.ErrInvalid)
	wantErr(t, "Commit(empty outbox message)", s.Commit(t.Context(), store.Write{Lease: l, Campaign: newCampaign(k, 1, fsm.Pending), Outbox: []store.Message{{}}}), store.ErrInvalid)
	for range 2 { // the second time is a retry: the same effect
		mustCommit(t, s, store.Write{Lease: l, Applied: []string{"a"}, Dequeue: []string{"a"}})
	}
	wantNotFound(t, s, k)
	if !applied(t, s, k, "a") {
		t.Fatal("ledger not written")
	}
	if got := outbox(t, s, k); len(got) != 0 {
		t.Fatalf("Outbox = %+v", got)
	}
	mustRelease(t, s, l, true)
}

func testAbandon(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := store.Key{Tenant: "acme", Campaign: "abandon"}
	l := mustLease(t, s, k, item("a", 1), longTTL)
	mustNoLease(t, s, k, item("b", 2))
	if err := s.Abandon(ctx, l); err != nil {
		t.Fatalf("Abandon: %v", err)
	}
	if err := s.Abandon(ctx, l); err != nil {
		t.Fatalf("second Abandon: %v", err)
	}
	wantErr(t, "Commit after Abandon", s.Commit(ctx, fullWrite(l, 1, "a")), store.ErrLockLost)
	// The inbox still holds a and b; a redelivery of a finds the lock free.
	l2 := mustLease(t, s, k, item("a", 1), longTTL)
	if l2.Fence <= l.Fence {
		t.Fatalf("fence %d after %d", l2.Fence, l.Fence)
	}
	if got := inboxIDs(t, s, k, 0); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("Inbox = %v", got)
	}
}

func testTerminalExpires(t *testing.T, s store.Store) {
	k := store.Key{Tenant: "acme", Campaign: "ended"}
	l := mustLease(t, s, k, item("a", 1), longTTL)
	mustCommit(t, s, store.Write{Lease: l, Campaign: newCampaign(k, 1, fsm.Running), Applied: []string{"a"}, Dequeue: []string{"a"}})
	mustNoLease(t, s, k, item("b", 2))
	done := newCampaign(k, 2, fsm.Completed)
	mustCommit(t, s, store.Write{Lease: l, Campaign: done, Applied: []string{"b"}, Dequeue: []string{"b"},
		Outbox: []store.Message{[]byte("campaign.evt.acme.ended.completed")}})
	mustNoLease(t, s, k, item("late", 3)) // a command arriving after the end waits in the inbox
	if err := s.TrimOutbox(t.Context(), l, outbox(t, s, k)); err != nil {
		t.Fatal(err)
	}
	if err := s.Abandon(t.Context(), l); err != nil {
		t.Fatal(err)
	}
	// (On a very slow machine it may have expired already.)
	if got, err := s.Load(t.Context(), k); err == nil {
		sameCampaign(t, got, *done, l.Fence)
	} else if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Load: %v", err)
	}

	eventually(t, "an ended campaign expires", func() bool {
		_, err := s.Load(t.Context(), k)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Load: %v", err)
		}
		return err != nil
	})
	if applied(t, s, k, "a") || applied(t, s, k, "b") {
		t.Fatal("the ledger outlived the campaign")
	}
	page, err := s.List(t.Context(), k.Tenant, "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range page.Campaigns {
		if c.ID == k.Campaign {
			t.Fatal("List shows an expired campaign")
		}
	}
	// The inbox never expires: a waiting command is not lost.
	if got := inboxIDs(t, s, k, 0); !slices.Equal(got, []string{"late"}) {
		t.Fatalf("Inbox after expiry = %v, want [late]", got)
	}
	l2 := mustLease(t, s, k, item("late", 3), longTTL)
	mustCommit(t, s, store.Write{Lease: l2, Campaign: newCampaign(k, 1, fsm.Pending), Applied: []string{"late"}, Dequeue: []string{"late"}})
	expire(Retention)
	if c := mustLoad(t, s, k); c.Version != 1 {
		t.Fatalf("re-created campaign: version %d", c.Version)
	}
}

func testRetriedKept(t *testing.T, s store.Store) {
	// The retry must be committed before the failed campaign expires; on a
	// very slow machine that can miss, so try a few campaigns.
	for attempt := 1; ; attempt++ {
		k := store.Key{Tenant: "acme", Campaign: "retried-" + strconv.Itoa(attempt)}
		l := mustLease(t, s, k, item("a", 1), longTTL)
		mustCommit(t, s, store.Write{Lease: l, Campaign: newCampaign(k, 1, fsm.Running), Applied: []string{"a"}, Dequeue: []string{"a"}})
		mustCommit(t, s, store.Write{Lease: l, Campaign: newCampaign(k, 2, fsm.Failed)})
		err := s.Commit(t.Context(), store.Write{Lease: l, Campaign: newCampaign(k, 3, fsm.Running)})
		if errors.Is(err, store.ErrConflict) && attempt < 3 {
			t.Logf("attempt %d: the failed campaign expired before the retry: %v", attempt, err)
			continue
		}
		if err != nil {
			t.Fatalf("Commit of the retry: %v", err)
		}
		mustRelease(t, s, l, true)
		expire(2 * Retention)
		if c := mustLoad(t, s, k); c.Version != 3 || c.State != fsm.Running {
			t.Fatalf("retried campaign: version %d state %s", c.Version, c.State)
		}
		if !applied(t, s, k, "a") {
			t.Fatal("retried campaign lost its ledger")
		}
		l2 := mustLease(t, s, k, item("b", 2), longTTL)
		if l2.Fence <= l.Fence {
			t.Fatalf("fence %d after %d", l2.Fence, l.Fence)
		}
		return
	}
}

func testList(t *testing.T, s store.Store) {
	ctx := t.Context()
	type spec struct {
		id    string
		sec   int
		state fsm.State
	}
	// Created out of order; c3 and c3b share a creation time.
	specs := []spec{
		{"c5", 5, fsm.Running}, {"c1", 1, fsm.Pending}, {"c3b", 3, fsm.Running},
		{"c3", 3, fsm.Paused}, {"c2", 2, fsm.Running}, {"c7", 7, fsm.Pending}, {"c6", 6, fsm.Running},
	}
	create := func(tenant string, sp spec) {
		k := store.Key{Tenant: tenant, Campaign: sp.id}
		l := mustLease(t, s, k, item("create", 1), longTTL)
		c := newCampaign(k, 1, sp.state)
		c.CreatedAt = created().Add(time.Duration(sp.sec) * time.Second)
		mustCommit(t, s, store.Write{Lease: l, Campaign: c, Applied: []string{"create"}, Dequeue: []string{"create"}})
		mustRelease(t, s, l, true)
	}
	for _, sp := range specs {
		create("acme", sp)
	}
	create("other", spec{"c0", 0, fsm.Running})
	create("other", spec{"c4", 4, fsm.Running})

	all := func(tenant string, state fsm.State, limit int) []string {
		t.Helper()
		var ids []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 20 {
				t.Fatal("List does not end")
			}
			p, err := s.List(ctx, tenant, state, cursor, limit)
			if err != nil {
				t.Fatalf("List(%s, %q, %q, %d): %v", tenant, state, cursor, limit, err)
			}
			if limit > 0 && len(p.Campaigns) > limit {
				t.Fatalf("List: %d campaigns, limit %d", len(p.Campaigns), limit)
			}
			for _, c := range p.Campaigns {
				if c.Tenant != tenant || (state != "" && c.State != state) {
					t.Fatalf("List(%s, %q) returned %s/%s in %s", tenant, state, c.Tenant, c.ID, c.State)
				}
				ids = append(ids, c.ID)
			}
			if p.Next == "" {
				return ids
			}
			cursor = p.Next
		}
	}
	wantAll := []string{"c1", "c2", "c3", "c3b", "c5", "c6", "c7"}
	for _, limit := range []int{0, 1, 3, 7, 1000} {
		if got := all("acme", "", limit); !slices.Equal(got, wantAll) {
			t.Fatalf("List(acme, limit %d) = %v, want %v", limit, got, wantAll)
		}
	}
	if got, want := all("acme", fsm.Running, 2), []string{"c2", "c3b", "c5", "c6"}; !slices.Equal(got, want) {
		t.Fatalf("List(acme, running) = %v, want %v", got, want)
	}
	if got := all("acme", fsm.Completed, 2); len(got) != 0 {
		t.Fatalf("List(acme, completed) = %v", got)
	}
	if got, want := all("other", "", 0), []string{"c0", "c4"}; !slices.Equal(got, want) {
		t.Fatalf("List(other) = %v, want %v", got, want)
	}
	if got := all("nobody", "", 0); len(got) != 0 {
		t.Fatalf("List(nobody) = %v", got)
	}
	p, err := s.List(ctx, "acme", "", "", 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Campaigns) != 3 || p.Next == "" {
		t.Fatalf("first page of 3: %d campaigns, next %q", len(p.Campaigns), p.Next)
	}
	sameCampaign(t, p.Campaigns[0], func() fsm.Campaign {
		c := newCampaign(store.Key{Tenant: "acme", Campaign: "c1"}, 1, fsm.Pending)
		c.CreatedAt = created().Add(time.Second)
		return *c
	}(), p.Campaigns[0].Fence)
}

func testIdempotency(t *testing.T, s store.Store) {
	ctx := t.Context()
	first := store.IdemRecord{Fingerprint: "POST /api/v1/campaigns sha256:1"}
	got, found, err := s.ReserveIdem(ctx, "acme", "key-1", first, longTTL)
	if err != nil || found {
		t.Fatalf("first ReserveIdem = %+v, %v, %v; want not found", got, found, err)
	}
	other := store.IdemRecord{Fingerprint: "POST /api/v1/campaigns sha256:2"}
	got, found, err = s.ReserveIdem(ctx, "acme", "key-1", other, longTTL)
	if err != nil || !found || !reflect.DeepEqual(got, first) {
		t.Fatalf("second ReserveIdem = %+v, %v, %v; want %+v found", got, found, err, first)
	}
	if _, found, err := s.ReserveIdem(ctx, "other", "key-1", other, longTTL); err != nil || found {
		t.Fatalf("ReserveIdem in another tenant: found %v, %v", found, err)
	}

	final := first
	final.Status = 202
	final.Header = map[string]string{"Content-Type": "application/json"}
	final.Body = []byte(`{"status":"accepted"}`)
	if err := s.CompleteIdem(ctx, "acme", "key-1", final, longTTL); err != nil {
		t.Fatalf("CompleteIdem: %v", err)
	}
	got, found, err = s.ReserveIdem(ctx, "acme", "key-1", other, longTTL)
	if err != nil || !found || !reflect.DeepEqual(got, final) {
		t.Fatalf("ReserveIdem after completion = %+v, %v, %v; want %+v", got, found, err, final)
	}
	stolen := other
	stolen.Status = 400
	wantErr(t, "CompleteIdem with another fingerprint", s.CompleteIdem(ctx, "acme", "key-1", stolen, longTTL), store.ErrIdempotencyMismatch)
	if got, _, _ := s.ReserveIdem(ctx, "acme", "key-1", other, longTTL); !reflect.DeepEqual(got, final) {
		t.Fatalf("record after a refused completion = %+v", got)
	}

	if err := s.DeleteIdem(ctx, "acme", "key-1", ""); err != nil {
		t.Fatalf("DeleteIdem: %v", err)
	}
	if err := s.DeleteIdem(ctx, "acme", "key-1", ""); err != nil {
		t.Fatalf("DeleteIdem of nothing: %v", err)
	}
	if _, found, err := s.ReserveIdem(ctx, "acme", "key-1", other, longTTL); err != nil || found {
		t.Fatalf("ReserveIdem after delete: found %v, %v", found, err)
	}
	if _, found, _ := s.ReserveIdem(ctx, "other", "key-1", other, longTTL); !found {
		t.Fatal("DeleteIdem removed another tenant's record")
	}
	_, _, err = s.ReserveIdem(ctx, "acme", "key-2", first, 0)
	wantErr(t, "ReserveIdem with ttl 0", err, store.ErrInvalid)
}

func testIdempotencyTTL(t *testing.T, s store.Store) {
	ctx := t.Context()
	rec := store.IdemRecord{Fingerprint: "fp"}
	if _, found, err := s.ReserveIdem(ctx, "acme", "short", rec, shortTTL); err != nil || found {
		t.Fatalf("ReserveIdem: found %v, %v", found, err)
	}
	eventually(t, "a reservation expires", func() bool {
		_, found, err := s.ReserveIdem(ctx, "acme", "short", rec, shortTTL)
		if err != nil {
			t.Fatalf("ReserveIdem: %v", err)
		}
		return !found
	})
	// CompleteIdem restarts the TTL.
	done := rec
	done.Status = 201
	if err := s.CompleteIdem(ctx, "acme", "short", done, shortTTL); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a completed record expires", func() bool {
		got, found, err := s.ReserveIdem(ctx, "acme", "short", rec, longTTL)
		if err != nil {
			t.Fatalf("ReserveIdem: %v", err)
		}
		if found && got.Status != 201 {
			t.Fatalf("record = %+v", got)
		}
		return !found
	})
}

// testConcurrentHolders: workers enqueue for one campaign at once; whoever
// gets the lease drains the inbox (Load, Commit version+1, TrimOutbox) and
// releases. There is never more than one holder, versions have no gap, and
// every item is dequeued exactly once.
func testConcurrentHolders(t *testing.T, s store.Store) {
	const workers, rounds = 8, 150
	ctx := testCtx(t, 2*time.Minute)
	k := store.Key{Tenant: "acme", Campaign: "concurrent"}

	var (
		holders, violations, leases atomic.Int64
		seq                         atomic.Uint64
		mu                          sync.Mutex // guards the rest
		enqueued                    = map[string]bool{}
		dequeued                    = map[string]int{}
		versions                    []uint64
		lastFence                   uint64
	)
	enter := func() {
		if holders.Add(1) != 1 {
			violations.Add(1)
		}
	}
	drain := func(l store.Lease) error {
		enter()
		leases.Add(1)
		mu.Lock()
		if l.Fence <= lastFence {
			t.Errorf("lease fence %d after %d", l.Fence, lastFence)
		}
		lastFence = l.Fence
		mu.Unlock()
		for {
			items, err := s.Inbox(ctx, k, 4)
			if err != nil {
				return err
			}
			if len(items) == 0 {
				holders.Add(-1) // before Release: the next holder may come at once
				ok, err := s.Release(ctx, l, nil)
				if err != nil || ok {
					return err
				}
				enter()
				continue
			}
			c, err := s.Load(ctx, k)
			if errors.Is(err, store.ErrNotFound) {
				c, err = *newCampaign(k, 0, fsm.Running), nil
			}
			if err != nil {
				return err
			}
			c.Version++
			ids := make([]string, len(items))
			for i, it := range items {
				ids[i] = it.ID
				if string(it.Data) != "data of "+it.ID {
					t.Errorf("item %s: data %q", it.ID, it.Data)
				}
			}
			w := store.Write{Lease: l, Campaign: &c, Applied: ids, Dequeue: ids,
				Outbox: []store.Message{[]byte("v" + strconv.FormatUint(c.Version, 10))}}
			if err := s.Commit(ctx, w); err != nil {
				return err
			}
			mu.Lock()
			for _, id := range ids {
				dequeued[id]++
			}
			versions = append(versions, c.Version)
			mu.Unlock()
			msgs, err := s.Outbox(ctx, k)
			if err != nil {
				return err
			}
			if len(msgs) != 1 || string(msgs[0]) != "v"+strconv.FormatUint(c.Version, 10) {
				t.Errorf("outbox after commit of version %d: %+v", c.Version, msgs)
			}
			if err := s.TrimOutbox(ctx, l, msgs); err != nil {
				return err
			}
		}
	}
	enqueue := func(id string) error {
		res, err := s.Enqueue(ctx, k, item(id, seq.Add(1)), store.Claim{Token: store.NewToken(), TTL: longTTL})
		if err != nil {
			return err
		}
		if res.Lease != nil {
			return drain(*res.Lease)
		}
		return nil
	}

	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for r := range rounds {
				id := fmt.Sprintf("w%d-%d", g, r)
				mu.Lock()
				enqueued[id] = true
				mu.Unlock()
				if err := enqueue(id); err != nil {
					t.Errorf("worker %d, %s: %v", g, id, err)
					return
				}
				if r%5 == 4 { // a redelivery of an earlier item
					if err := enqueue(fmt.Sprintf("w%d-%d", g, r-2)); err != nil {
						t.Errorf("worker %d, redelivery: %v", g, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	if n := violations.Load(); n != 0 {
		t.Fatalf("%d times two lease holders at once", n)
	}
	for id := range enqueued {
		if dequeued[id] != 1 {
			t.Errorf("item %s dequeued %d times", id, dequeued[id])
		}
	}
	if len(dequeued) != len(enqueued) {
		t.Errorf("%d items dequeued, %d enqueued", len(dequeued), len(enqueued))
	}
	slices.Sort(versions)
	for i, v := range versions {
		if v != uint64(i+1) {
			t.Fatalf("versions committed: %v, want 1..%d without gaps", versions, len(versions))
		}
	}
	if c := mustLoad(t, s, k); c.Version != uint64(len(versions)) {
		t.Fatalf("stored version %d, %d commits", c.Version, len(versions))
	}
	if ids := inboxIDs(t, s, k, 0); len(ids) != 0 {
		t.Fatalf("inbox left with %v", ids)
	}
	if msgs := outbox(t, s, k); len(msgs) != 0 {
		t.Fatalf("outbox left with %d messages", len(msgs))
	}
	for id := range enqueued {
		if !applied(t, s, k, id) {
			t.Fatalf("%s not in the ledger", id)
		}
	}
	t.Logf("%d items, %d leases, %d commits", len(enqueued), leases.Load(), len(versions))
}

// testCountByState: every state is counted, a campaign moves between counts
// with its state changes (retry out of failed included), refused writes and
// writes without a campaign change nothing, and an ended campaign stops
// counting when it expires, then counts again once re-created.
func testCountByState(t *testing.T, s store.Store) {
	count := func() map[fsm.State]int64 {
		t.Helper()
		got, err := s.CountByState(t.Context())
		if err != nil {
			t.Fatalf("CountByState: %v", err)
		}
		return got
	}
	want := func(what string, w map[fsm.State]int64) {
		t.Helper()
		got := count()
		if len(got) != len(fsm.States) {
			t.Fatalf("%s: CountByState = %v, want a count for each of %v", what, got, fsm.States)
		}
		for _, st := range fsm.States {
			if got[st] != w[st] {
				t.Fatalf("%s: CountByState = %v, want %v", what, got, w)
			}
		}
	}
	want("empty store", nil)

	// Each campaign: a lease, then its states in order, one version each.
	leases := map[string]store.Lease{}
	versions := map[string]uint64{}
	write := func(id string, st fsm.State) {
		t.Helper()
		k := store.Key{Tenant: "acme", Campaign: id}
		if _, ok := leases[id]; !ok {
			leases[id] = mustLease(t, s, k, item(id+"-cmd", 1), longTTL)
		}
		versions[id]++
		mustCommit(t, s, store.Write{Lease: leases[id], Campaign: newCampaign(k, versions[id], st)})
	}
	write("a", fsm.Pending)
	write("b", fsm.Running)
	write("c", fsm.Running)
	write("c", fsm.Running) // a step succeeded: same state
	write("c", fsm.Paused)
	write("d", fsm.Running)
	write("d", fsm.Failed)
	write("d", fsm.Running) // retry
	write("e", fsm.Running)
	write("e", fsm.Cancelled)
	write("e", fsm.Cancelled) // a command rejected on an ended campaign
	// Other tenants count too.
	leases["z"] = mustLease(t, s, store.Key{Tenant: "other", Campaign: "z"}, item("z-cmd", 1), longTTL)
	mustCommit(t, s, store.Write{Lease: leases["z"], Campaign: newCampaign(store.Key{Tenant: "other", Campaign: "z"}, 1, fsm.Pending)})
	want("after the writes", map[fsm.State]int64{fsm.Pending: 2, fsm.Running: 2, fsm.Paused: 1, fsm.Cancelled: 1})

	// Refused writes and writes without a campaign change nothing.
	ka := store.Key{Tenant: "acme", Campaign: "a"}
	wantErr(t, "Commit of a stale version", s.Commit(t.Context(), store.Write{Lease: leases["a"], Campaign: newCampaign(ka, 1, fsm.Completed)}), store.ErrConflict)
	stale := leases["a"]
	stale.Token = "not-the-token"
	wantErr(t, "Commit with a wrong token", s.Commit(t.Context(), store.Write{Lease: stale, Campaign: newCampaign(ka, 2, fsm.Completed)}), store.ErrLockLost)
	mustCommit(t, s, store.Write{Lease: leases["a"], Dequeue: []string{"a-cmd"}})
	want("after refused writes", map[fsm.State]int64{fsm.Pending: 2, fsm.Running: 2, fsm.Paused: 1, fsm.Cancelled: 1})

	write("b", fsm.Completed)
	want("b completed", map[fsm.State]int64{fsm.Pending: 2, fsm.Running: 1, fsm.Paused: 1, fsm.Completed: 1, fsm.Cancelled: 1})

	// Ended campaigns stop counting when they expire.
	eventually(t, "ended campaigns leave the count", func() bool {
		got := count()
		return got[fsm.Completed] == 0 && got[fsm.Cancelled] == 0
	})
	want("after expiry", map[fsm.State]int64{fsm.Pending: 2, fsm.Running: 1, fsm.Paused: 1})

	// Re-created after expiry: counted again, from version 1. The count
	// leaves a campaign at its expiry time by the store's clock; Redis
	// expires the key itself a moment later (its TTL counts from the
	// write): wait until it is gone.
	kb := store.Key{Tenant: "acme", Campaign: "b"}
	eventually(t, "b expired", func() bool {
		_, err := s.Load(t.Context(), kb)
		return errors.Is(err, store.ErrNotFound)
	})
	mustCommit(t, s, store.Write{Lease: leases["b"], Campaign: newCampaign(kb, 1, fsm.Pending)})
	want("b re-created", map[fsm.State]int64{fsm.Pending: 3, fsm.Running: 1, fsm.Paused: 1})
}

// testRetriedCalls: every operation called twice with the same arguments
// (what a client does after a lost reply) has the effect of one call.
func testRetriedCalls(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := store.Key{Tenant: "acme", Campaign: "retried"}
	c := claim(longTTL)
	first, err := s.Enqueue(ctx, k, item("a", 7), c)
	if err != nil || first.Lease == nil {
		t.Fatalf("Enqueue = %+v, %v; want a lease", first, err)
	}
	again, err := s.Enqueue(ctx, k, item("a", 7), c)
	if err != nil || again.Lease == nil || *again.Lease != *first.Lease {
		t.Fatalf("Enqueue retried = %+v, %v; want the same lease %+v", again, err, *first.Lease)
	}
	l := *first.Lease
	if l.Seq != 7 {
		t.Fatalf("lease backed by %d, want 7", l.Seq)
	}
	mustNoLease(t, s, k, item("b", 8))
	if got := inboxIDs(t, s, k, 0); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("inbox = %v", got)
	}

	m := store.Message(`{"subject":"campaign.evt.acme.retried.created","data":"MQ=="}`)
	w := store.Write{ID: store.NewToken(), Lease: l, Campaign: newCampaign(k, 1, fsm.Running),
		Outbox: []store.Message{m}, Applied: []string{"a"}, Dequeue: []string{"a"}}
	mustCommit(t, s, w)
	mustCommit(t, s, w) // the same write again: no conflict, no second message
	if got := outbox(t, s, k); !reflect.DeepEqual(got, []store.Message{m}) {
		t.Fatalf("outbox after a retried commit = %+v", got)
	}
	if got := mustLoad(t, s, k); got.Version != 1 {
		t.Fatalf("version %d after a retried commit", got.Version)
	}
	// Another write of the same version is still a conflict.
	other := w
	other.ID = store.NewToken()
	wantErr(t, "Commit of another write of version 1", s.Commit(ctx, other), store.ErrConflict)
	// A retried write whose lock was lost meanwhile is refused.
	mustCommit(t, s, store.Write{ID: store.NewToken(), Lease: l, Campaign: newCampaign(k, 2, fsm.Running), Applied: []string{"b"}, Dequeue: []string{"b"}})

	published := outbox(t, s, k)
	for range 2 {
		if err := s.TrimOutbox(ctx, l, published); err != nil {
			t.Fatalf("TrimOutbox: %v", err)
		}
	}
	if got := outbox(t, s, k); len(got) != 0 {
		t.Fatalf("outbox after a retried trim = %+v", got)
	}
	mustRelease(t, s, l, true)
	mustRelease(t, s, l, true) // retried: nothing left to do
	if err := s.Extend(ctx, l, longTTL); !errors.Is(err, store.ErrLockLost) {
		t.Fatalf("Extend after Release: %v, want ErrLockLost", err)
	}
	// A retried Release whose lock is free but has items waiting says so:
	// the caller must drain them.
	if res, err := s.Enqueue(ctx, k, item("c", 9), store.Claim{}); err != nil || res.Lease != nil {
		t.Fatalf("park-only Enqueue = %+v, %v", res, err)
	}
	_, err = s.Release(ctx, l, nil)
	wantErr(t, "Release retried with items waiting under a free lock", err, store.ErrLockLost)

	// A retried reservation is the caller's own; another caller's is not.
	rec := store.IdemRecord{Fingerprint: "POST /x sha256:1", Owner: store.NewToken()}
	for i := range 2 {
		if got, found, err := s.ReserveIdem(ctx, "acme", "retried", rec, longTTL); err != nil || found {
			t.Fatalf("ReserveIdem #%d = %+v, %v, %v; want reserved", i+1, got, found, err)
		}
	}
	rival := rec
	rival.Owner = store.NewToken()
	if got, found, err := s.ReserveIdem(ctx, "acme", "retried", rival, longTTL); err != nil || !found || got.Owner != rec.Owner {
		t.Fatalf("ReserveIdem by another request = %+v, %v, %v; want the first's record", got, found, err)
	}
	final := rec
	final.Status = 202
	for range 2 {
		if err := s.CompleteIdem(ctx, "acme", "retried", final, longTTL); err != nil {
			t.Fatalf("CompleteIdem: %v", err)
		}
	}
	// Once completed, even the same owner gets the stored answer.
	if got, found, err := s.ReserveIdem(ctx, "acme", "retried", rec, longTTL); err != nil || !found || got.Status != 202 {
		t.Fatalf("ReserveIdem after completion = %+v, %v, %v; want the stored 202", got, found, err)
	}
	// Another request's delete (late, or retried after the record changed
	// hands) leaves the record; the owner's, retried, removes it once.
	if err := s.DeleteIdem(ctx, "acme", "retried", rival.Owner); err != nil {
		t.Fatalf("DeleteIdem by another owner: %v", err)
	}
	if _, found, _ := s.ReserveIdem(ctx, "acme", "retried", rival, longTTL); !found {
		t.Fatal("DeleteIdem by another owner removed the record")
	}
	for range 2 {
		if err := s.DeleteIdem(ctx, "acme", "retried", rec.Owner); err != nil {
			t.Fatalf("DeleteIdem: %v", err)
		}
	}
	if _, found, _ := s.ReserveIdem(ctx, "acme", "retried", rival, longTTL); found {
		t.Fatal("DeleteIdem by its owner left the record")
	}
}

// testHolderSeq: the lock tells which message backs its holder, and a
// park-only Enqueue (zero Claim) never takes the lock.
func testHolderSeq(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := store.Key{Tenant: "acme", Campaign: "holder"}
	res, err := s.Enqueue(ctx, k, item("ahead", 3), store.Claim{})
	if err != nil || res.Lease != nil || res.HolderSeq != 0 || res.Held {
		t.Fatalf("park-only Enqueue on a free campaign = %+v, %v; want no lease, not held", res, err)
	}
	if got := inboxIDs(t, s, k, 0); !slices.Equal(got, []string{"ahead"}) {
		t.Fatalf("inbox = %v", got)
	}
	l := mustLease(t, s, k, item("a", 5), longTTL)
	if l.Seq != 5 {
		t.Fatalf("lease backed by %d, want 5", l.Seq)
	}
	// The same message again (a redelivery to another handler) sees itself
	// backing the holder; another message sees the holder's.
	for _, it := range []store.Item{item("a", 5), item("b", 6)} {
		res := mustEnqueue(t, s, k, it, longTTL)
		if res.Lease != nil || res.HolderSeq != 5 || !res.Held {
			t.Fatalf("Enqueue(%s) while held = %+v; want no lease, held, holder 5", it.ID, res)
		}
	}
	if _, err := s.Enqueue(ctx, k, item("bad", 7), store.Claim{Token: "a|b", TTL: longTTL}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Enqueue with a '|' token: %v, want ErrInvalid", err)
	}
	if _, err := s.Enqueue(ctx, k, item("bad", 7), store.Claim{Token: store.NewToken()}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Enqueue with a token and no TTL: %v, want ErrInvalid", err)
	}
	// Nothing of the lease works with another backing sequence.
	moved := l
	moved.Seq = 6
	wantErr(t, "Extend(another sequence)", s.Extend(ctx, moved, longTTL), store.ErrLockLost)
	if err := s.Extend(ctx, l, longTTL); err != nil {
		t.Fatalf("Extend: %v", err)
	}
}

func testSecret(t *testing.T, s store.Store) {
	ctx := t.Context()
	got, err := s.Secret(ctx, "idempotency", []byte("first-candidate"))
	if err != nil || string(got) != "first-candidate" {
		t.Fatalf("Secret = %q, %v; want the first candidate", got, err)
	}
	for range 2 {
		got, err = s.Secret(ctx, "idempotency", []byte("second-candidate"))
		if err != nil || string(got) != "first-candidate" {
			t.Fatalf("Secret again = %q, %v; want the stored one", got, err)
		}
	}
	if got, err := s.Secret(ctx, "other", []byte("x")); err != nil || string(got) != "x" {
		t.Fatalf("Secret(other) = %q, %v", got, err)
	}
	if _, err := s.Secret(ctx, "", []byte("x")); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Secret(empty name): %v, want ErrInvalid", err)
	}
	if _, err := s.Secret(ctx, "empty", nil); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Secret(empty candidate): %v, want ErrInvalid", err)
	}
}

// testLostReply: each operation whose reply is lost after it took effect,
// and which the client then retries, has the effect of one call and leaves
// nothing nobody owns (CONTRACT guarantee 7). Each operation runs once
// before on another campaign, so that a script is known to the server and
// the reply lost is that of a run that took effect.
func testLostReply(t *testing.T, s store.Store) {
	r, ok := s.(ReplyLoser)
	if !ok {
		t.Skip("the store cannot lose a reply")
	}
	ctx := t.Context()
	// lose runs op twice: on warm (unarmed), then on the real campaign with
	// the reply of its script lost.
	lose := func(what string, op func(k store.Key) error, warm, k store.Key) {
		t.Helper()
		if err := op(warm); err != nil {
			t.Fatalf("%s (warm-up): %v", what, err)
		}
		lost := r.LoseNextReply(t)
		if err := op(k); err != nil {
			t.Fatalf("%s with its reply lost: %v", what, err)
		}
		if lost() != 1 {
			t.Fatalf("%s: no reply was lost", what)
		}
	}
	k := store.Key{Tenant: "acme", Campaign: "lost"}
	warm := store.Key{Tenant: "acme", Campaign: "lost-warm"}
	leases := map[store.Key]store.Lease{}

	// Enqueue on a free campaign: the retry finds its own lock.
	lose("Enqueue", func(k store.Key) error {
		res, err := s.Enqueue(ctx, k, item("a", 7), claim(longTTL))
		if err == nil && res.Lease == nil {
			err = fmt.Errorf("no lease (held by the message of sequence %d): the lock is nobody's", res.HolderSeq)
		}
		if err == nil {
			leases[k] = *res.Lease
		}
		return err
	}, warm, k)
	l := leases[k]
	if res := mustEnqueue(t, s, k, item("b", 8), longTTL); res.Lease != nil || res.HolderSeq != 7 {
		t.Fatalf("Enqueue by another = %+v; want the lock held, backed by 7", res)
	}

	// Commit: the retry finds its own write, no conflict, one message.
	m := func(k store.Key, n int) store.Message {
		return store.Message("campaign.evt." + k.Tenant + "." + k.Campaign + ".x " + strconv.Itoa(n))
	}
	lose("Commit", func(k store.Key) error {
		return s.Commit(ctx, store.Write{ID: store.NewToken(), Lease: leases[k], Campaign: newCampaign(k, 1, fsm.Running),
			Outbox: []store.Message{m(k, 1), m(k, 2), m(k, 3)}, Applied: []string{"a"}, Dequeue: []string{"a"}})
	}, warm, k)
	if got := outbox(t, s, k); !reflect.DeepEqual(got, []store.Message{m(k, 1), m(k, 2), m(k, 3)}) {
		t.Fatalf("outbox after a commit with a lost reply = %+v", got)
	}
	if c := mustLoad(t, s, k); c.Version != 1 || !applied(t, s, k, "a") {
		t.Fatalf("after a commit with a lost reply: version %d, a applied %v", c.Version, applied(t, s, k, "a"))
	}

	// TrimOutbox: the retry removes nothing more than was published.
	lose("TrimOutbox", func(k store.Key) error {
		return s.TrimOutbox(ctx, leases[k], outbox(t, s, k)[:2])
	}, warm, k)
	if got := outbox(t, s, k); !reflect.DeepEqual(got, []store.Message{m(k, 3)}) {
		t.Fatalf("outbox after a trim with a lost reply = %+v, want the unpublished message", got)
	}

	// Extend, then Release once the inbox and the outbox are empty.
	lose("Extend", func(k store.Key) error { return s.Extend(ctx, leases[k], longTTL) }, warm, k)
	for _, key := range []store.Key{warm, k} {
		mustCommit(t, s, store.Write{Lease: leases[key], Campaign: newCampaign(key, 2, fsm.Running), Applied: []string{"b"}, Dequeue: []string{"b"}})
		if err := s.TrimOutbox(ctx, leases[key], outbox(t, s, key)); err != nil {
			t.Fatal(err)
		}
	}
	lose("Release", func(k store.Key) error {
		done, err := s.Release(ctx, leases[k], nil)
		if err == nil && !done {
			err = errors.New("not released")
		}
		return err
	}, warm, k)
	next := mustLease(t, s, k, item("c", 9), longTTL) // the lock is free again
	if next.Fence <= l.Fence {
		t.Fatalf("fence %d after %d", next.Fence, l.Fence)
	}
	leases[k] = next
	leases[warm] = mustLease(t, s, warm, item("c", 9), longTTL)

	// Abandon: the retry finds the lock free; the next Enqueue takes it.
	lose("Abandon", func(k store.Key) error { return s.Abandon(ctx, leases[k]) }, warm, k)
	mustLease(t, s, k, item("d", 10), longTTL)

	// ReserveIdem: the retry finds the caller's own reservation.
	owner := store.NewToken()
	lose("ReserveIdem", func(k store.Key) error {
		got, found, err := s.ReserveIdem(ctx, "acme", k.Campaign, store.IdemRecord{Fingerprint: "POST /x", Owner: owner}, longTTL)
		if err == nil && found {
			err = fmt.Errorf("found %+v: the request waits on its own reservation", got)
		}
		return err
	}, warm, k)
	final := store.IdemRecord{Fingerprint: "POST /x", Owner: owner, Status: 202, Body: []byte("ok")}
	lose("CompleteIdem", func(k store.Key) error {
		return s.CompleteIdem(ctx, "acme", k.Campaign, final, longTTL)
	}, warm, k)
	if got, found, err := s.ReserveIdem(ctx, "acme", k.Campaign, store.IdemRecord{Fingerprint: "POST /x", Owner: store.NewToken()}, longTTL); err != nil || !found || !reflect.DeepEqual(got, final) {
		t.Fatalf("record after a completion with a lost reply = %+v, %v, %v", got, found, err)
	}

	lose("DeleteIdem", func(k store.Key) error { return s.DeleteIdem(ctx, "acme", k.Campaign, owner) }, warm, k)
	if _, found, err := s.ReserveIdem(ctx, "acme", k.Campaign, store.IdemRecord{Fingerprint: "POST /x", Owner: store.NewToken()}, longTTL); err != nil || found {
		t.Fatalf("record after a delete with a lost reply: found %v, %v", found, err)
	}

	// Secret: the retry returns what the first run stored.
	lose("Secret", func(k store.Key) error {
		got, err := s.Secret(ctx, k.Campaign, []byte("first"))
		if err == nil && string(got) != "first" {
			err = fmt.Errorf("secret %q", got)
		}
		return err
	}, warm, k)
}

// testReleaseAfterTakeover: a holder that stalled until its lock expired,
// while another took the lock, wrote an outbox and died, is not told that
// it released: the outbox still waits for someone to publish it.
func testReleaseAfterTakeover(t *testing.T, s store.Store) {
	k := store.Key{Tenant: "acme", Campaign: "takeover"}
	l1 := mustLease(t, s, k, item("a", 1), shortTTL)
	expire(shortTTL)
	l2 := mustLease(t, s, k, item("b", 2), shortTTL)
	mustCommit(t, s, store.Write{ID: store.NewToken(), Lease: l2, Campaign: newCampaign(k, 1, fsm.Cancelled),
		Outbox:  []store.Message{[]byte("campaign.evt.acme.takeover.cancelled {}")},
		Applied: []string{"a", "b"}, Dequeue: []string{"a", "b"}})
	expire(shortTTL) // l2 dies before publishing
	_, err := s.Release(t.Context(), l1, nil)
	wantErr(t, "Release by the stalled holder with an outbox waiting", err, store.ErrLockLost)
	if res := mustEnqueue(t, s, k, item("a", 1), longTTL); res.Lease == nil || !res.Duplicate {
		t.Fatalf("Enqueue of the stalled holder's item again = %+v; want a duplicate with the lock, to publish the outbox", res)
	}
}

// testStrandedAndTake: a campaign with work waiting and no holder is found
// by Stranded and taken by Take, backed by no message.
func testStrandedAndTake(t *testing.T, s store.Store) {
	ctx := t.Context()
	stranded := store.Key{Tenant: "acme", Campaign: "stranded"}
	held := store.Key{Tenant: "acme", Campaign: "held"}
	idle := store.Key{Tenant: "acme", Campaign: "idle"}
	if _, err := s.Enqueue(ctx, stranded, item("a", 1), store.Claim{}); err != nil {
		t.Fatal(err)
	}
	mustLease(t, s, held, item("b", 2), longTTL)
	l := mustLease(t, s, idle, item("c", 3), longTTL)
	mustCommit(t, s, store.Write{Lease: l, Dequeue: []string{"c"}})
	mustRelease(t, s, l, true)

	all := func() []store.Key {
		t.Helper()
		var out []store.Key
		cursor := ""
		for range 1000 {
			keys, next, err := s.Stranded(ctx, cursor, 2)
			if err != nil {
				t.Fatalf("Stranded: %v", err)
			}
			out = append(out, keys...)
			if cursor = next; cursor == "" {
				return out
			}
		}
		t.Fatal("Stranded never ends")
		return nil
	}
	if got := all(); !slices.Equal(got, []store.Key{stranded}) {
		t.Fatalf("Stranded = %v, want [%s]", got, stranded)
	}
	if got, err := s.Take(ctx, idle, claim(longTTL)); err != nil || got != nil {
		t.Fatalf("Take of an idle campaign = %+v, %v; want nothing to take", got, err)
	}
	if got, err := s.Take(ctx, held, claim(longTTL)); err != nil || got != nil {
		t.Fatalf("Take of a held campaign = %+v, %v; want nil", got, err)
	}
	c := claim(longTTL)
	first, err := s.Take(ctx, stranded, c)
	if err != nil || first == nil || first.Seq != 0 || first.Fence == 0 {
		t.Fatalf("Take of a stranded campaign = %+v, %v; want a lease backed by no message", first, err)
	}
	if again, err := s.Take(ctx, stranded, c); err != nil || again == nil || *again != *first {
		t.Fatalf("Take retried = %+v, %v; want the same lease", again, err)
	}
	if got := all(); len(got) != 0 {
		t.Fatalf("Stranded after Take = %v", got)
	}
	// The lease drains like any other.
	mustCommit(t, s, store.Write{Lease: *first, Dequeue: []string{"a"}})
	mustRelease(t, s, *first, true)
	if _, err := s.Take(ctx, stranded, store.Claim{TTL: longTTL}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Take without a token: %v, want ErrInvalid", err)
	}
}

// testSnapshotAndHead: the lease comes with the campaign as its holder
// finds it; CommitRead returns the inbox after the write, refuses a write
// whose Head is no longer first, and trims what the holder published;
// Release trims too.
func testSnapshotAndHead(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := store.Key{Tenant: "acme", Campaign: "snapshot"}
	res := mustEnqueue(t, s, k, item("b", 5), longTTL)
	if res.Lease == nil || res.Snapshot == nil || res.Snapshot.Campaign != nil || len(res.Snapshot.Outbox) != 0 ||
		!slices.Equal(itemIDs(res.Snapshot.Inbox), []string{"b"}) || string(res.Snapshot.Inbox[0].Data) != "data of b" || res.Snapshot.Inbox[0].Seq != 5 {
		t.Fatalf("Enqueue on a new campaign = %+v; want the lease and a snapshot of b alone", res)
	}
	l := *res.Lease
	m1 := store.Message("snapshot 1")
	items, err := s.CommitRead(ctx, store.Write{ID: store.NewToken(), Lease: l, Head: "b", Campaign: newCampaign(k, 1, fsm.Pending),
		Outbox: []store.Message{m1}, Applied: []string{"b"}, Dequeue: []string{"b"}})
	if err != nil || len(items) != 0 {
		t.Fatalf("CommitRead = %v, %v; want an empty inbox", items, err)
	}
	// An earlier command parked meanwhile (seq 3 < 6): a write acting on 6
	// is refused and told what is first now.
	mustNoLease(t, s, k, item("d", 6))
	mustNoLease(t, s, k, item("c", 3))
	items, err = s.CommitRead(ctx, store.Write{ID: store.NewToken(), Lease: l, Head: "d", Campaign: newCampaign(k, 2, fsm.Running), Dequeue: []string{"d"}})
	if !errors.Is(err, store.ErrNotHead) || !slices.Equal(itemIDs(items), []string{"c", "d"}) {
		t.Fatalf("CommitRead on a head that moved = %v, %v; want ErrNotHead and [c d]", itemIDs(items), err)
	}
	if got := mustLoad(t, s, k); got.Version != 1 {
		t.Fatalf("a refused write wrote version %d", got.Version)
	}
	// The write on c, with m1 published: trimmed in the same step.
	m2 := store.Message("snapshot 2")
	w := store.Write{ID: store.NewToken(), Lease: l, Head: "c", Campaign: newCampaign(k, 2, fsm.Running),
		Outbox: []store.Message{m2}, Applied: []string{"c"}, Dequeue: []string{"c"}, Trim: []store.Message{m1}}
	for range 2 { // the second time a retry: same effect, same answer
		items, err = s.CommitRead(ctx, w)
		if err != nil || !slices.Equal(itemIDs(items), []string{"d"}) {
			t.Fatalf("CommitRead = %v, %v; want [d]", itemIDs(items), err)
		}
		if got := outbox(t, s, k); !reflect.DeepEqual(got, []store.Message{m2}) {
			t.Fatalf("outbox = %+v, want m2 alone", got)
		}
	}
	// A new holder's snapshot holds what a lost one left.
	if err := s.Abandon(ctx, l); err != nil {
		t.Fatal(err)
	}
	res = mustEnqueue(t, s, k, item("d", 6), longTTL)
	if res.Lease == nil || res.Snapshot == nil || res.Snapshot.Campaign == nil || res.Snapshot.Campaign.Version != 2 ||
		!reflect.DeepEqual(res.Snapshot.Outbox, []store.Message{m2}) || !slices.Equal(itemIDs(res.Snapshot.Inbox), []string{"d"}) {
		t.Fatalf("snapshot after a lost holder = %+v", res.Snapshot)
	}
	l = *res.Lease
	mustCommit(t, s, store.Write{Lease: l, Dequeue: []string{"d"}})
	for range 2 {
		if done, err := s.Release(ctx, l, []store.Message{m2}); err != nil || !done {
			t.Fatalf("Release with the outbox published = %v, %v", done, err)
		}
	}
	if got := outbox(t, s, k); len(got) != 0 {
		t.Fatalf("outbox after Release = %+v", got)
	}
}

// testPark: a holder parks its own next step in its write (behind every
// stream message, or first), and a write on it waits for its turn as head.
func testPark(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := store.Key{Tenant: "acme", Campaign: "park"}
	l := mustLease(t, s, k, item("start", 4), longTTL)
	mustCommit(t, s, store.Write{Lease: l, Campaign: newCampaign(k, 1, fsm.Pending), Applied: []string{"create"}})
	adv1 := store.Item{ID: "adv-1", Seq: store.SeqInternal, Data: []byte("advance 1")}
	w := store.Write{ID: store.NewToken(), Lease: l, Head: "start", Campaign: newCampaign(k, 2, fsm.Running),
		Applied: []string{"start"}, Dequeue: []string{"start"}, Park: []store.Item{adv1}}
	for range 2 { // the second time a retry: same effect, same answer
		items, err := s.CommitRead(ctx, w)
		if err != nil || len(items) != 1 || items[0].ID != "adv-1" || items[0].Seq != store.SeqInternal || string(items[0].Data) != "advance 1" {
			t.Fatalf("CommitRead parking adv-1 = %+v, %v; want adv-1 alone", items, err)
		}
	}
	// A pause parked while the step runs sorts before the holder's advance.
	mustNoLease(t, s, k, item("pause", 9))
	if got := inboxIDs(t, s, k, 0); !slices.Equal(got, []string{"pause", "adv-1"}) {
		t.Fatalf("inbox = %v, want [pause adv-1]", got)
	}
	// A write acting on adv-1 is refused: it is no longer first. Nothing is
	// written or parked.
	adv2 := store.Item{ID: "adv-2", Seq: store.SeqInternal, Data: []byte("advance 2")}
	items, err := s.CommitRead(ctx, store.Write{ID: store.NewToken(), Lease: l, Head: "adv-1", Campaign: newCampaign(k, 3, fsm.Running),
		Dequeue: []string{"adv-1"}, Park: []store.Item{adv2}})
	if !errors.Is(err, store.ErrNotHead) || !slices.Equal(itemIDs(items), []string{"pause", "adv-1"}) {
		t.Fatalf("write on adv-1 behind a pause = %v, %v; want ErrNotHead and [pause adv-1]", itemIDs(items), err)
	}
	if got := mustLoad(t, s, k); got.Version != 2 {
		t.Fatalf("a refused write wrote version %d", got.Version)
	}
	mustCommit(t, s, store.Write{Lease: l, Dequeue: []string{"adv-1"}, Park: []store.Item{adv2}})
	mustNoLease(t, s, k, item("resume", 10))
	// Parking an id already there keeps the first.
	mustCommit(t, s, store.Write{Lease: l, Park: []store.Item{{ID: "adv-2", Seq: 3, Data: []byte("other")}}})
	inbox, err := s.Inbox(ctx, k, 0)
	if err != nil || !slices.Equal(itemIDs(inbox), []string{"pause", "resume", "adv-2"}) || string(inbox[2].Data) != "advance 2" {
		t.Fatalf("inbox = %+v, %v; want [pause resume adv-2] with adv-2's first data", inbox, err)
	}
	// Dequeued and parked again in one write, at the front (Seq 0): its
	// step is in flight, what waits comes after it.
	items, err = s.CommitRead(ctx, store.Write{ID: store.NewToken(), Lease: l, Dequeue: []string{"adv-2"}, Park: []store.Item{{ID: "adv-2", Seq: 0, Data: []byte("advance 2")}}})
	if err != nil || !slices.Equal(itemIDs(items), []string{"adv-2", "pause", "resume"}) || items[0].Seq != 0 {
		t.Fatalf("inbox after parking adv-2 first = %+v, %v; want [adv-2 pause resume]", items, err)
	}
	// Bad parked items are refused as invalid.
	for _, bad := range []store.Write{
		{Lease: l, Park: []store.Item{{ID: "", Seq: 1}}},
		{Lease: l, Park: []store.Item{{ID: "x", Seq: store.SeqInternal + 1}}},
	} {
		wantErr(t, "invalid write", s.Commit(ctx, bad), store.ErrInvalid)
	}
}

// testExtendAll: one call renews many locks; each lease gets its own answer.
func testExtendAll(t *testing.T, s store.Store) {
	ctx := t.Context()
	const ttl = 400 * time.Millisecond
	a, b := store.Key{Tenant: "acme", Campaign: "ext-a"}, store.Key{Tenant: "acme", Campaign: "ext-b"}
	la, lb := mustLease(t, s, a, item("a1", 1), ttl), mustLease(t, s, b, item("b1", 2), ttl)
	lost := lb
	lost.Token = store.NewToken() // not the holder
	bad := store.Lease{Key: store.Key{Tenant: "", Campaign: "x"}}
	errs := s.ExtendAll(ctx, []store.Lease{la, lost, lb, bad}, 10*ttl)
	if len(errs) != 4 || errs[0] != nil || !errors.Is(errs[1], store.ErrLockLost) || errs[2] != nil || !errors.Is(errs[3], store.ErrInvalid) {
		t.Fatalf("ExtendAll = %v; want nil, ErrLockLost, nil, ErrInvalid", errs)
	}
	expire(ttl) // past the first TTL: both still held
	mustNoLease(t, s, a, item("a2", 3))
	mustNoLease(t, s, b, item("b2", 4))
	if errs := s.ExtendAll(ctx, nil, ttl); len(errs) != 0 {
		t.Fatalf("ExtendAll of nothing = %v", errs)
	}
	if errs := s.ExtendAll(ctx, []store.Lease{la}, 0); len(errs) != 1 || !errors.Is(errs[0], store.ErrInvalid) {
		t.Fatalf("ExtendAll with TTL 0 = %v; want ErrInvalid", errs)
	}
}

func itemIDs(items []store.Item) []string {
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.ID
	}
	return ids
}

// rebuilt is a campaign as internal/rebuild returns it: version, fence
// floor and all, for Install.
func rebuilt(k store.Key, version, floor uint64, state fsm.State) fsm.Campaign {
	c := *newCampaign(k, version, state)
	c.Fence = floor
	if state.Terminal() {
		ended := time.Now().UTC()
		c.EndedAt = &ended
	}
	return c
}

// testInstall: a campaign rebuilt from its history is written only where
// no state exists, with its ledger, its trigger and a fencing counter
// above the floor; a retry finds its own install.
func testInstall(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := store.Key{Tenant: "acme", Campaign: "rebuilt"}
	c := rebuilt(k, 9, 40, fsm.Running)
	trigger := store.Item{ID: "acme.rebuilt.advance.9.00", Seq: store.SeqInternal, Data: []byte("advance")}
	in := store.Install{ID: store.NewToken(), Campaign: c, Applied: []string{"create-1", "pause-2"}, Park: []store.Item{trigger}}
	res, err := s.Install(ctx, in)
	if err != nil || !res.Installed || res.Expired || res.Fence != 0 {
		t.Fatalf("Install on a campaign with no state = %+v, %v; want installed", res, err)
	}
	sameCampaign(t, mustLoad(t, s, k), c, 40)
	for _, id := range in.Applied {
		if !applied(t, s, k, id) {
			t.Errorf("%s not in the ledger after the install", id)
		}
	}
	if got := inboxIDs(t, s, k, 0); !slices.Equal(got, []string{trigger.ID}) {
		t.Errorf("inbox after the install = %v, want the trigger", got)
	}
	if res, err := s.Enqueue(ctx, k, item("pause-2", 3), store.Claim{}); err != nil || !res.Duplicate {
		t.Errorf("a command id of the history enqueued again: %+v, %v; want a duplicate", res, err)
	}

	// Retried after a lost reply: its own install.
	if res, err := s.Install(ctx, in); err != nil || !res.Installed {
		t.Fatalf("Install retried = %+v, %v; want installed", res, err)
	}
	// Another install never overwrites the state.
	other := in
	other.ID = store.NewToken()
	other.Campaign = rebuilt(k, 3, 1, fsm.Paused)
	other.Applied = []string{"x"}
	if res, err := s.Install(ctx, other); err != nil || res.Installed || res.Expired {
		t.Fatalf("Install over a state = %+v, %v; want not installed", res, err)
	}
	sameCampaign(t, mustLoad(t, s, k), c, 40)
	if applied(t, s, k, "x") {
		t.Error("a refused install wrote its ledger")
	}

	// The next lock's fence is above the floor; the trigger drains.
	l, err := s.Take(ctx, k, claim(longTTL))
	if err != nil || l == nil {
		t.Fatalf("Take after the install: %v, %v", l, err)
	}
	if l.Fence <= 40 {
		t.Fatalf("fence %d after an install with floor 40", l.Fence)
	}
	next := c
	next.Version++
	mustCommit(t, s, store.Write{Lease: *l, Campaign: &next, Dequeue: []string{trigger.ID}})
	mustRelease(t, s, *l, true)

	counts, err := s.CountByState(ctx)
	if err != nil || counts[fsm.Running] < 1 {
		t.Errorf("CountByState after the install = %v, %v", counts, err)
	}
	page, err := s.List(ctx, k.Tenant, "", "", 0)
	if err != nil || !slices.ContainsFunc(page.Campaigns, func(x fsm.Campaign) bool { return x.ID == k.Campaign }) {
		t.Errorf("List after the install: %+v, %v", page, err)
	}

	bad := c
	bad.Version = 0
	_, err = s.Install(ctx, store.Install{Campaign: bad})
	wantErr(t, "Install of version 0", err, store.ErrInvalid)
	bad = c
	bad.ID = ""
	_, err = s.Install(ctx, store.Install{Campaign: bad})
	wantErr(t, "Install without an id", err, store.ErrInvalid)
}

// testInstallUnderLease: a worker that took a campaign's lock while its
// state was missing installs the rebuilt state under that lock: commands
// parked meanwhile whose ids the history shows applied leave the inbox, and
// the lease's fence rises above the floor (the old one is refused).
func testInstallUnderLease(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := store.Key{Tenant: "acme", Campaign: "rebuilt-held"}
	l := mustLease(t, s, k, item("pause-2", 5), longTTL) // an old command, redelivered
	mustNoLease(t, s, k, item("resume-3", 6))            // a new one
	if l.Fence >= 40 {
		t.Fatalf("fence %d on an empty store", l.Fence)
	}
	c := rebuilt(k, 9, 40, fsm.Paused)
	in := store.Install{ID: store.NewToken(), Campaign: c, Applied: []string{"create-1", "pause-2"}, Lease: &l}

	stranger := l
	stranger.Token = store.NewToken()
	_, err := s.Install(ctx, store.Install{ID: store.NewToken(), Campaign: c, Lease: &stranger})
	wantErr(t, "Install under a lock not held", err, store.ErrLockLost)
	wantNotFound(t, s, k)

	res, err := s.Install(ctx, in)
	if err != nil || !res.Installed || res.Fence <= 40 {
		t.Fatalf("Install under the lease = %+v, %v; want installed with a fence above 40", res, err)
	}
	if got := inboxIDs(t, s, k, 0); !slices.Equal(got, []string{"resume-3"}) {
		t.Errorf("inbox after the install = %v, want only the command the history does not show", got)
	}
	if again, err := s.Install(ctx, in); err != nil || !again.Installed || again.Fence != res.Fence {
		t.Fatalf("Install retried = %+v, %v; want installed, fence %d", again, err, res.Fence)
	}
	next := c
	next.Version++
	err = s.Commit(ctx, store.Write{Lease: l, Campaign: &next, Dequeue: []string{"resume-3"}})
	wantErr(t, "Commit with the fence from before the install", err, store.ErrLockLost)
	l.Fence = res.Fence
	mustCommit(t, s, store.Write{Lease: l, Campaign: &next, Applied: []string{"resume-3"}, Dequeue: []string{"resume-3"}})
	sameCampaign(t, mustLoad(t, s, k), next, res.Fence)
	mustRelease(t, s, l, true)
	if l2 := mustLease(t, s, k, item("cancel-4", 7), longTTL); l2.Fence <= res.Fence {
		t.Fatalf("fence %d after %d", l2.Fence, res.Fence)
	}
}

// testInstallTerminal: an ended campaign is installed to expire when it
// would have (the retention after its end); one that ended longer ago than
// that had expired, not been lost, and is not written.
func testInstallTerminal(t *testing.T, s store.Store) {
	ctx := t.Context()
	old := store.Key{Tenant: "acme", Campaign: "rebuilt-old"}
	c := rebuilt(old, 5, 3, fsm.Completed)
	ended := time.Now().Add(-2 * Retention)
	c.EndedAt = &ended
	res, err := s.Install(ctx, store.Install{Campaign: c, Applied: []string{"create-1"}})
	if err != nil || res.Installed || !res.Expired {
		t.Fatalf("Install of a campaign ended 2 retentions ago = %+v, %v; want expired", res, err)
	}
	wantNotFound(t, s, old)
	if applied(t, s, old, "create-1") {
		t.Error("an expired install wrote its ledger")
	}

	k := store.Key{Tenant: "acme", Campaign: "rebuilt-ended"}
	c = rebuilt(k, 5, 3, fsm.Cancelled)
	res, err = s.Install(ctx, store.Install{Campaign: c, Applied: []string{"create-1"}})
	if err != nil || !res.Installed {
		t.Fatalf("Install of a campaign just ended = %+v, %v", res, err)
	}
	sameCampaign(t, mustLoad(t, s, k), c, 3)
	eventually(t, "the installed ended campaign expires", func() bool {
		_, err := s.Load(ctx, k)
		return errors.Is(err, store.ErrNotFound)
	})
	if applied(t, s, k, "create-1") {
		t.Error("the ledger outlived the installed campaign")
	}
}

// testInstallRetriedAfterLeaseLost: a retry of an install made under a
// lease (its reply lost) answers the lease's fence while the lease holds
// the lock, and ErrLockLost once it does not: never success with fence 0,
// which would leave the caller writing with a fence below the floor.
func testInstallRetriedAfterLeaseLost(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := store.Key{Tenant: "acme", Campaign: "rebuilt-retried"}
	l := mustLease(t, s, k, item("pause-2", 5), longTTL)
	in := store.Install{ID: store.NewToken(), Campaign: rebuilt(k, 4, 40, fsm.Paused), Lease: &l}
	res, err := s.Install(ctx, in)
	if err != nil || !res.Installed || res.Fence <= 40 {
		t.Fatalf("Install under the lease = %+v, %v; want installed with a fence above 40", res, err)
	}
	if again, err := s.Install(ctx, in); err != nil || !again.Installed || again.Fence != res.Fence {
		t.Fatalf("Install retried under the lease = %+v, %v; want installed, fence %d", again, err, res.Fence)
	}
	if err := s.Abandon(ctx, l); err != nil {
		t.Fatal(err)
	}
	again, err := s.Install(ctx, in)
	wantErr(t, fmt.Sprintf("Install retried after its lease was lost (answered %+v)", again), err, store.ErrLockLost)
	l2 := mustLease(t, s, k, item("resume-3", 6), longTTL)
	if l2.Fence <= res.Fence {
		t.Fatalf("fence %d after the install's %d", l2.Fence, res.Fence)
	}
	again, err = s.Install(ctx, in)
	wantErr(t, fmt.Sprintf("Install retried while another holds the lock (answered %+v)", again), err, store.ErrLockLost)
	// Without a lease, a retry is its own install, fence 0.
	k2 := store.Key{Tenant: "acme", Campaign: "rebuilt-retried-nolease"}
	in2 := store.Install{ID: store.NewToken(), Campaign: rebuilt(k2, 4, 40, fsm.Paused)}
	for i := range 2 {
		if res, err := s.Install(ctx, in2); err != nil || !res.Installed || res.Fence != 0 {
			t.Fatalf("Install without a lease, attempt %d = %+v, %v; want installed, fence 0", i+1, res, err)
		}
	}
}

// testInstallNotWrittenKeepsList: an install that writes nothing (a state
// exists, the campaign expired, the lock is lost) leaves the tenant's list
// as it was: an existing campaign keeps its place (the refused install's
// creation time is not its), no campaign appears.
func testInstallNotWrittenKeepsList(t *testing.T, s store.Store) {
	ctx := t.Context()
	const tenant = "acme-install-list"
	create := func(id string, sec int) fsm.Campaign {
		k := store.Key{Tenant: tenant, Campaign: id}
		l := mustLease(t, s, k, item("create", 1), longTTL)
		c := newCampaign(k, 1, fsm.Pending)
		c.CreatedAt = created().Add(time.Duration(sec) * time.Second)
		mustCommit(t, s, store.Write{Lease: l, Campaign: c, Applied: []string{"create"}, Dequeue: []string{"create"}})
		mustRelease(t, s, l, true)
		return *c
	}
	create("a", 1)
	b := create("b", 2)
	list := func() []string {
		t.Helper()
		page, err := s.List(ctx, tenant, "", "", 0)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		var ids []string
		for _, c := range page.Campaigns {
			ids = append(ids, c.ID)
		}
		return ids
	}
	want := []string{"a", "b"}

	// A state exists: a history whose creation time is another (the
	// refused install's) must not move b.
	over := b
	over.Version, over.CreatedAt = 5, created()
	if res, err := s.Install(ctx, store.Install{ID: store.NewToken(), Campaign: over}); err != nil || res.Installed {
		t.Fatalf("Install over b = %+v, %v; want not installed", res, err)
	}
	if got := list(); !slices.Equal(got, want) {
		t.Errorf("List after an install over b = %v, want %v", got, want)
	}
	// Expired.
	gone := rebuilt(store.Key{Tenant: tenant, Campaign: "gone"}, 5, 3, fsm.Completed)
	ended := time.Now().Add(-2 * Retention)
	gone.CreatedAt, gone.EndedAt = ended.Add(-time.Second), &ended
	if res, err := s.Install(ctx, store.Install{Campaign: gone}); err != nil || !res.Expired {
		t.Fatalf("Install of an expired campaign = %+v, %v; want expired", res, err)
	}
	// Lock lost.
	held := store.Key{Tenant: tenant, Campaign: "held"}
	l := mustLease(t, s, held, item("x", 1), longTTL)
	stranger := l
	stranger.Token = store.NewToken()
	_, err := s.Install(ctx, store.Install{ID: store.NewToken(), Campaign: rebuilt(held, 2, 1, fsm.Pending), Lease: &stranger})
	wantErr(t, "Install under a lock not held", err, store.ErrLockLost)
	if got := list(); !slices.Equal(got, want) {
		t.Errorf("List after installs that wrote nothing = %v, want %v", got, want)
	}
}
