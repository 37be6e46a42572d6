package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

var _ Store = (*Memory)(nil)

// janitorEvery is how often Memory frees expired data. Expired data is
// invisible before that: every read checks the clock.
const janitorEvery = time.Minute

// Memory is the in-process Store: one process only, nothing survives it. It
// follows the Redis store's rules exactly (same fencing counter, same
// expiries), under one mutex, with TTLs read from Options.Now.
type Memory struct {
	retention time.Duration
	now       func() time.Time

	mu      sync.Mutex
	camps   map[Key]*memCampaign
	idem    map[idemKey]memIdem
	secrets map[string][]byte

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// memCampaign is everything stored about one campaign.
type memCampaign struct {
	// data is the JSON of the campaign, nil when it does not exist.
	data    []byte
	version uint64
	fence   uint64 // the fence that last wrote data
	wid     string // the Write.ID that last wrote data
	state   fsm.State
	created int64 // CreatedAt in Unix ms, for List

	// expires, when not zero, ends data, ledger and fenceCtr.
	expires  time.Time
	ledger   map[string]struct{}
	fenceCtr uint64 // like the Redis INCR counter

	inbox  map[string]Item
	outbox []Message

	lockToken   string // lockValue of the holder
	lockExpires time.Time
}

type idemKey struct{ tenant, key string }

type memIdem struct {
	rec     IdemRecord
	expires time.Time
}

// NewMemory returns an in-process Store. Close stops its janitor goroutine.
func NewMemory(opts Options) *Memory {
	opts = opts.withDefaults()
	m := &Memory{
		retention: opts.Retention,
		now:       opts.Now,
		camps:     map[Key]*memCampaign{},
		idem:      map[idemKey]memIdem{},
		secrets:   map[string][]byte{},
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	go m.janitor()
	return m
}

func (m *Memory) janitor() {
	defer close(m.done)
	t := time.NewTicker(janitorEvery)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.sweep()
		}
	}
}

// sweep frees expired data.
func (m *Memory) sweep() {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for k := range m.camps {
		m.get(k, now)
	}
	for k, r := range m.idem {
		if !now.Before(r.expires) {
			delete(m.idem, k)
		}
	}
}

// get returns k's campaign record after dropping what expired, or nil when
// nothing of it remains. The caller holds m.mu.
func (m *Memory) get(k Key, now time.Time) *memCampaign {
	c := m.camps[k]
	if c == nil {
		return nil
	}
	if !c.expires.IsZero() && !now.Before(c.expires) {
		c.data, c.version, c.fence, c.wid, c.state, c.created = nil, 0, 0, "", "", 0
		c.ledger, c.fenceCtr, c.expires = nil, 0, time.Time{}
	}
	if c.lockToken != "" && !now.Before(c.lockExpires) {
		c.lockToken = ""
	}
	if c.data == nil && len(c.ledger) == 0 && c.fenceCtr == 0 && len(c.inbox) == 0 && len(c.outbox) == 0 && c.lockToken == "" {
		delete(m.camps, k)
		return nil
	}
	return c
}

// getOrNew is get, creating an empty record when there is none.
func (m *Memory) getOrNew(k Key, now time.Time) *memCampaign {
	if c := m.get(k, now); c != nil {
		return c
	}
	c := &memCampaign{}
	m.camps[k] = c
	return c
}

// held returns k's record if l holds its lock, else nil.
func (m *Memory) held(l Lease, now time.Time) *memCampaign {
	c := m.get(l.Key, now)
	if c == nil || c.lockToken == "" || c.lockToken != lockValue(l.Token, l.Seq) {
		return nil
	}
	return c
}

// Enqueue implements Store.
func (m *Memory) Enqueue(ctx context.Context, k Key, item Item, claim Claim) (Enqueued, error) {
	if err := checkEnqueue(k, item, claim); err != nil {
		return Enqueued{}, err
	}
	var lock string
	if claim.Token != "" {
		lock = lockValue(claim.Token, item.Seq)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	c := m.getOrNew(k, now)
	var res Enqueued
	if _, dup := c.ledger[item.ID]; dup {
		res.Duplicate = true
	} else if _, ok := c.inbox[item.ID]; !ok {
		if c.inbox == nil {
			c.inbox = map[string]Item{}
		}
		if len(item.Data) == 0 {
			item.Data = nil // as Redis gives it back
		}
		item.Data = slices.Clone(item.Data)
		c.inbox[item.ID] = item
	}
	switch {
	case c.lockToken != "" && c.lockToken == lock:
		res.Lease = &Lease{Key: k, Token: claim.Token, Fence: c.fenceCtr, Seq: item.Seq}
		res.Snapshot = c.snapshot()
	case c.lockToken != "":
		res.HolderSeq, res.Held = lockSeq(c.lockToken), true
	case lock != "" && (len(c.inbox) > 0 || len(c.outbox) > 0):
		c.fenceCtr++
		if c.fenceCtr <= c.fence {
			c.fenceCtr = c.fence + 1
		}
		if c.data == nil {
			c.expires = now.Add(m.retention)
		}
		c.lockToken, c.lockExpires = lock, now.Add(time.Duration(ttlMillis(claim.TTL))*time.Millisecond)
		res.Lease = &Lease{Key: k, Token: claim.Token, Fence: c.fenceCtr, Seq: item.Seq}
		res.Snapshot = c.snapshot()
	}
	m.get(k, now) // drop the record if a duplicate left nothing in it
	return res, nil
}

// snapshot copies what a new holder starts from. The caller holds m.mu.
func (c *memCampaign) snapshot() *Snapshot {
	s := &Snapshot{Inbox: c.inboxHead(InboxHead), Outbox: cloneMessages(c.outbox)}
	if c.data != nil {
		var camp fsm.Campaign
		if json.Unmarshal(c.data, &camp) == nil { // written by Commit: always valid
			s.Campaign = &camp
		}
	}
	return s
}

// inboxHead returns copies of the first n inbox items in Seq order (ties by
// ID); n <= 0: all.
func (c *memCampaign) inboxHead(n int) []Item {
	items := slices.SortedFunc(maps.Values(c.inbox), func(a, b Item) int {
		if a.Seq != b.Seq {
			if a.Seq < b.Seq {
				return -1
			}
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
	if n > 0 && len(items) > n {
		items = items[:n]
	}
	for i := range items {
		items[i].Data = slices.Clone(items[i].Data)
	}
	if len(items) == 0 {
		return nil
	}
	return items
}

func cloneMessages(msgs []Message) []Message {
	if len(msgs) == 0 {
		return nil
	}
	out := make([]Message, len(msgs))
	for i, msg := range msgs {
		out[i] = slices.Clone(msg)
	}
	return out
}

// trim removes published from the head of the outbox if they are there
// (see TrimOutbox). The caller holds m.mu.
func (c *memCampaign) trim(published []Message) {
	if n := len(published); n > 0 && n <= len(c.outbox) && bytes.Equal(c.outbox[n-1], published[n-1]) {
		clear(c.outbox[:n])
		c.outbox = c.outbox[n:]
		if len(c.outbox) == 0 {
			c.outbox = nil
		}
	}
}

// Take implements Store.
func (m *Memory) Take(ctx context.Context, k Key, claim Claim) (*Lease, error) {
	if err := checkTake(k, claim); err != nil {
		return nil, err
	}
	lock := lockValue(claim.Token, 0)
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	c := m.get(k, now)
	switch {
	case c == nil:
		return nil, nil
	case c.lockToken == lock:
		return &Lease{Key: k, Token: claim.Token, Fence: c.fenceCtr}, nil
	case c.lockToken != "" || (len(c.inbox) == 0 && len(c.outbox) == 0):
		return nil, nil
	}
	c.fenceCtr++
	if c.fenceCtr <= c.fence {
		c.fenceCtr = c.fence + 1
	}
	c.lockToken, c.lockExpires = lock, now.Add(time.Duration(ttlMillis(claim.TTL))*time.Millisecond)
	return &Lease{Key: k, Token: claim.Token, Fence: c.fenceCtr}, nil
}

// Stranded implements Store: one page of every campaign (the map is walked
// in key order).
func (m *Memory) Stranded(ctx context.Context, cursor string, limit int) ([]Key, string, error) {
	if limit <= 0 {
		limit = DefaultListLimit
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	var keys []Key
	for k := range m.camps {
		if k.String() <= cursor && cursor != "" {
			continue
		}
		if c := m.get(k, now); c != nil && c.lockToken == "" && (len(c.inbox) > 0 || len(c.outbox) > 0) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b Key) int { return strings.Compare(a.String(), b.String()) })
	if len(keys) > limit {
		return keys[:limit], keys[limit-1].String(), nil
	}
	return keys, "", nil
}

// Inbox implements Store.
func (m *Memory) Inbox(ctx context.Context, k Key, limit int) ([]Item, error) {
	if err := k.check(); err != nil {
		return nil, fmt.Errorf("inbox %s: %w", k, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.get(k, m.now())
	if c == nil {
		return nil, nil
	}
	return c.inboxHead(limit), nil
}

// Extend implements Store.
func (m *Memory) Extend(ctx context.Context, l Lease, ttl time.Duration) error {
	if err := l.Key.check(); err != nil {
		return fmt.Errorf("extend %s: %w", l.Key, err)
	}
	if err := checkTTL("extend "+l.Key.String(), ttl); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	c := m.held(l, now)
	if c == nil {
		return fmt.Errorf("extend %s: %w", l.Key, ErrLockLost)
	}
	c.lockExpires = now.Add(time.Duration(ttlMillis(ttl)) * time.Millisecond)
	return nil
}

// ExtendAll implements Store.
func (m *Memory) ExtendAll(ctx context.Context, leases []Lease, ttl time.Duration) []error {
	errs := make([]error, len(leases))
	for i, l := range leases {
		errs[i] = m.Extend(ctx, l, ttl)
	}
	return errs
}

// Release implements Store.
func (m *Memory) Release(ctx context.Context, l Lease, published []Message) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	c := m.held(l, now)
	if c == nil {
		if o := m.get(l.Key, now); o != nil && (o.lockToken != "" || len(o.inbox) > 0 || len(o.outbox) > 0) {
			return false, fmt.Errorf("release %s: %w", l.Key, ErrLockLost)
		}
		return true, nil
	}
	c.trim(published)
	if len(c.inbox) > 0 {
		return false, nil
	}
	c.lockToken = ""
	m.get(l.Key, now)
	return true, nil
}

// Abandon implements Store.
func (m *Memory) Abandon(ctx context.Context, l Lease) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if c := m.held(l, now); c != nil {
		c.lockToken = ""
		m.get(l.Key, now)
	}
	return nil
}

// Load implements Store.
func (m *Memory) Load(ctx context.Context, k Key) (fsm.Campaign, error) {
	m.mu.Lock()
	var data []byte
	if c := m.get(k, m.now()); c != nil {
		data = c.data
	}
	m.mu.Unlock()
	if data == nil {
		return fsm.Campaign{}, fmt.Errorf("load %s: %w", k, ErrNotFound)
	}
	var c fsm.Campaign
	if err := json.Unmarshal(data, &c); err != nil {
		return fsm.Campaign{}, fmt.Errorf("load %s: decode: %w", k, err)
	}
	return c, nil
}

// Commit implements Store.
func (m *Memory) Commit(ctx context.Context, w Write) error {
	_, err := m.commit(w, false)
	return err
}

// CommitRead implements Store.
func (m *Memory) CommitRead(ctx context.Context, w Write) ([]Item, error) {
	return m.commit(w, true)
}

func (m *Memory) commit(w Write, read bool) (items []Item, err error) {
	k := w.Lease.Key
	if err := checkWrite(w); err != nil {
		return nil, fmt.Errorf("commit %s: %w", k, err)
	}
	var data []byte
	if w.Campaign != nil {
		c := *w.Campaign
		c.Fence = w.Lease.Fence
		if data, err = json.Marshal(c); err != nil {
			return nil, fmt.Errorf("commit %s: encode: %w", k, err)
		}
	}
	outbox := cloneMessages(w.Outbox)

	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	c := m.held(w.Lease, now)
	if c == nil {
		return nil, fmt.Errorf("commit %s: %w", k, ErrLockLost)
	}
	if read {
		defer func() {
			if err == nil || errors.Is(err, ErrNotHead) {
				items = c.inboxHead(InboxHead)
			}
		}()
	}
	if w.Campaign != nil && w.ID != "" && c.wid == w.ID {
		return nil, nil // this write, retried
	}
	if w.Head != "" {
		if head := c.inboxHead(1); len(head) == 0 || head[0].ID != w.Head {
			return nil, fmt.Errorf("commit %s: %s: %w", k, w.Head, ErrNotHead)
		}
	}
	if c.fence > w.Lease.Fence {
		return nil, fmt.Errorf("commit %s: %w", k, ErrLockLost)
	}
	if w.Campaign != nil && c.version != w.Campaign.Version-1 {
		return nil, fmt.Errorf("commit %s: version %d stored, %d written: %w", k, c.version, w.Campaign.Version, ErrConflict)
	}
	c.trim(w.Trim)
	if w.Campaign != nil {
		c.data, c.version, c.fence, c.wid = data, w.Campaign.Version, w.Lease.Fence, w.ID
		c.state, c.created = w.Campaign.State, w.Campaign.CreatedAt.UnixMilli()
	}
	c.outbox = append(c.outbox, outbox...)
	for _, id := range w.Applied {
		if c.ledger == nil {
			c.ledger = map[string]struct{}{}
		}
		c.ledger[id] = struct{}{}
	}
	for _, id := range w.Dequeue {
		delete(c.inbox, id)
	}
	for _, it := range w.Park {
		if _, ok := c.inbox[it.ID]; !ok {
			if c.inbox == nil {
				c.inbox = map[string]Item{}
			}
			c.inbox[it.ID] = Item{ID: it.ID, Seq: it.Seq, Data: slices.Clone(it.Data)}
		}
	}
	switch {
	case w.Campaign != nil && w.Campaign.State.Terminal():
		c.expires = now.Add(m.retention)
	case w.Campaign != nil:
		c.expires = time.Time{}
	case c.data == nil:
		c.expires = now.Add(m.retention)
	}
	return nil, nil
}

// Outbox implements Store.
func (m *Memory) Outbox(ctx context.Context, k Key) ([]Message, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.get(k, m.now())
	if c == nil || len(c.outbox) == 0 {
		return nil, nil
	}
	return cloneMessages(c.outbox), nil
}

// TrimOutbox implements Store.
func (m *Memory) TrimOutbox(ctx context.Context, l Lease, published []Message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.held(l, m.now())
	if c == nil {
		return fmt.Errorf("trim outbox %s: %w", l.Key, ErrLockLost)
	}
	c.trim(published)
	return nil
}

// Applied implements Store.
func (m *Memory) Applied(ctx context.Context, k Key, id string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.get(k, m.now())
	if c == nil {
		return false, nil
	}
	_, ok := c.ledger[id]
	return ok, nil
}

// List implements Store.
func (m *Memory) List(ctx context.Context, tenant string, state fsm.State, cursor string, limit int) (Page, error) {
	if err := checkTenant(tenant); err != nil {
		return Page{}, fmt.Errorf("list: %w", err)
	}
	if state != "" && !state.Valid() {
		return Page{}, fmt.Errorf("list %s: state %q: %w", tenant, state, ErrInvalid)
	}
	var cms int64
	var cid string
	if cursor != "" {
		var err error
		if cms, cid, err = decodeCursor(cursor); err != nil {
			return Page{}, fmt.Errorf("list %s: %w", tenant, err)
		}
	}
	limit = listLimit(limit)

	type entry struct {
		ms   int64
		id   string
		data []byte
	}
	var entries []entry
	m.mu.Lock()
	now := m.now()
	for k := range m.camps {
		if k.Tenant != tenant {
			continue
		}
		c := m.get(k, now)
		if c == nil || c.data == nil || (state != "" && c.state != state) {
			continue
		}
		if cursor != "" && !after(c.created, k.Campaign, cms, cid) {
			continue
		}
		entries = append(entries, entry{c.created, k.Campaign, c.data})
	}
	m.mu.Unlock()

	slices.SortFunc(entries, func(a, b entry) int {
		if a.ms != b.ms {
			if a.ms < b.ms {
				return -1
			}
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	var p Page
	for i, e := range entries {
		if i == limit {
			last := entries[i-1]
			p.Next = encodeCursor(last.ms, last.id)
			break
		}
		var c fsm.Campaign
		if err := json.Unmarshal(e.data, &c); err != nil {
			return Page{}, fmt.Errorf("list %s: decode %s: %w", tenant, e.id, err)
		}
		p.Campaigns = append(p.Campaigns, c)
	}
	return p, nil
}

// CountByState implements Store: one pass over the campaigns under the
// store's mutex, exact.
func (m *Memory) CountByState(ctx context.Context) (map[fsm.State]int64, error) {
	out := make(map[fsm.State]int64, len(fsm.States))
	for _, s := range fsm.States {
		out[s] = 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for k := range m.camps {
		if c := m.get(k, now); c != nil && c.data != nil {
			out[c.state]++
		}
	}
	return out, nil
}

// ReserveIdem implements Store.
func (m *Memory) ReserveIdem(ctx context.Context, tenant, key string, rec IdemRecord, ttl time.Duration) (IdemRecord, bool, error) {
	if err := checkTTL("reserve idempotency key", ttl); err != nil {
		return IdemRecord{}, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	ik := idemKey{tenant, key}
	if r, ok := m.idem[ik]; ok && now.Before(r.expires) {
		if rec.Owner != "" && r.rec.Owner == rec.Owner && r.rec.Status == 0 {
			return IdemRecord{}, false, nil // our own reservation
		}
		return cloneIdem(r.rec), true, nil
	}
	m.idem[ik] = memIdem{rec: cloneIdem(rec), expires: now.Add(time.Duration(ttlMillis(ttl)) * time.Millisecond)}
	return IdemRecord{}, false, nil
}

// CompleteIdem implements Store.
func (m *Memory) CompleteIdem(ctx context.Context, tenant, key string, rec IdemRecord, ttl time.Duration) error {
	if err := checkTTL("complete idempotency key", ttl); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	ik := idemKey{tenant, key}
	if r, ok := m.idem[ik]; ok && now.Before(r.expires) && r.rec.Fingerprint != rec.Fingerprint {
		return fmt.Errorf("complete idempotency key %s/%s: %w", tenant, key, ErrIdempotencyMismatch)
	}
	m.idem[ik] = memIdem{rec: cloneIdem(rec), expires: now.Add(time.Duration(ttlMillis(ttl)) * time.Millisecond)}
	return nil
}

// DeleteIdem implements Store.
func (m *Memory) DeleteIdem(ctx context.Context, tenant, key, owner string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ik := idemKey{tenant, key}
	if r, ok := m.idem[ik]; ok && (owner == "" || r.rec.Owner == owner) {
		delete(m.idem, ik)
	}
	return nil
}

// Secret implements Store.
func (m *Memory) Secret(ctx context.Context, name string, candidate []byte) ([]byte, error) {
	if name == "" || len(candidate) == 0 {
		return nil, fmt.Errorf("secret %q: empty name or candidate: %w", name, ErrInvalid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.secrets[name]; ok {
		return slices.Clone(cur), nil
	}
	m.secrets[name] = slices.Clone(candidate)
	return slices.Clone(candidate), nil
}

func cloneIdem(r IdemRecord) IdemRecord {
	r.Header = maps.Clone(r.Header)
	r.Body = slices.Clone(r.Body)
	return r
}

// errClosed is Ping's answer once the store is closed.
var errClosed = errors.New("store: closed")

// Ping implements Store: it fails only once the store is closed.
func (m *Memory) Ping(ctx context.Context) error {
	select {
	case <-m.stop:
		return errClosed
	default:
		return nil
	}
}

// Close stops the janitor. The data stays readable; Ping fails.
func (m *Memory) Close() error {
	m.closeOnce.Do(func() {
		close(m.stop)
		<-m.done
	})
	return nil
}

// Install implements Store.
func (m *Memory) Install(ctx context.Context, in Install) (Installed, error) {
	k := Key{Tenant: in.Campaign.Tenant, Campaign: in.Campaign.ID}
	if err := checkInstall(in); err != nil {
		return Installed{}, fmt.Errorf("install %s: %w", k, err)
	}
	data, err := json.Marshal(in.Campaign)
	if err != nil {
		return Installed{}, fmt.Errorf("install %s: encode: %w", k, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	var lock string
	if in.Lease != nil {
		lock = lockValue(in.Lease.Token, in.Lease.Seq)
	}
	c := m.get(k, now)
	if c != nil && c.data != nil {
		if in.ID != "" && c.wid == in.ID { // this install, retried
			switch {
			case lock == "":
				return Installed{Installed: true}, nil
			case c.lockToken != lock:
				return Installed{}, fmt.Errorf("install %s (retried): %w", k, ErrLockLost)
			}
			return Installed{Installed: true, Fence: c.fenceCtr}, nil
		}
		return Installed{}, nil
	}
	if lock != "" && (c == nil || c.lockToken != lock) {
		return Installed{}, fmt.Errorf("install %s: %w", k, ErrLockLost)
	}
	expires, ends := ExpiresAt(in.Campaign, m.retention)
	if ends && !now.Before(expires) {
		return Installed{Expired: true}, nil
	}
	if c == nil {
		c = m.getOrNew(k, now)
	}
	if in.ID == "" {
		in.ID = NewToken()
	}
	c.data, c.version, c.fence, c.wid = data, in.Campaign.Version, in.Campaign.Fence, in.ID
	c.state, c.created = in.Campaign.State, in.Campaign.CreatedAt.UnixMilli()
	c.expires = expires
	for _, id := range in.Applied {
		if c.ledger == nil {
			c.ledger = map[string]struct{}{}
		}
		c.ledger[id] = struct{}{}
		delete(c.inbox, id)
	}
	for _, it := range in.Park {
		if _, ok := c.inbox[it.ID]; !ok {
			if c.inbox == nil {
				c.inbox = map[string]Item{}
			}
			c.inbox[it.ID] = Item{ID: it.ID, Seq: it.Seq, Data: slices.Clone(it.Data)}
		}
	}
	c.fenceCtr = max(c.fenceCtr, in.Campaign.Fence)
	res := Installed{Installed: true}
	if lock != "" {
		c.fenceCtr++
		res.Fence = c.fenceCtr
	}
	return res, nil
}
