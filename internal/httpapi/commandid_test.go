package httpapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/httpapi"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
)

// Command ids behind an Idempotency-Key (CONTRACT section 7): an HMAC under
// the server's secret, and a PubAck reporting Duplicate answered 202 only
// when the message JetStream kept under the id is this request's command.
//
// The embedded NATS server of the tests has no accounts: the messages "of
// tenant evil" below are published on evil's own subjects, which is all a
// publisher allowed only campaign.cmd.evil.> can do.

var testSecret = []byte("test-idempotency-secret-0123456789")

func withSecret(secret []byte) envOption {
	return withConfig(func(c *httpapi.Config) { c.IdempotencySecret = secret })
}

// probe sends one request to an ingress of its own (its own NATS server and
// memory store, prepared by prepare when not nil) configured with secret,
// and returns the 202's command id and the command it stored: what every
// ingress with that secret publishes for the same request.
func probe(t *testing.T, secret []byte, prepare func(store.Store), method, path string, body []byte, hdr ...string) (string, *jetstream.RawStreamMsg) {
	t.Helper()
	st := storeKinds[0].open(t)
	if prepare != nil {
		prepare(st)
	}
	p := newEnv(t, st, withSecret(secret))
	_, id := accepted(t, p.do(method, path, body, hdr...))
	msgs := p.commands()
	if len(msgs) != 1 || msgs[0].Header.Get(jetstream.MsgIDHeader) != id {
		t.Fatalf("probe: %d commands stored, want the one with id %s", len(msgs), id)
	}
	return id, msgs[0]
}

// publishRaw stores a message in CAMPAIGN_COMMANDS with msgID as its
// Nats-Msg-Id and returns its sequence; it fails the test if JetStream took
// it for a duplicate.
func (e *env) publishRaw(subject, msgID string, data []byte, hdr ...string) uint64 {
	e.t.Helper()
	m := nats.NewMsg(subject)
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	for i := 0; i+1 < len(hdr); i += 2 {
		m.Header.Set(hdr[i], hdr[i+1])
	}
	m.Data = data
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := e.js.PublishMsg(ctx, m)
	if err != nil || ack.Duplicate {
		e.t.Fatalf("publish on %s: %+v %v", subject, ack, err)
	}
	return ack.Sequence
}

// republish stores m again, as the ingress published it: same subject, id,
// traceparent and body.
func (e *env) republish(m *jetstream.RawStreamMsg) uint64 {
	e.t.Helper()
	return e.publishRaw(m.Subject, m.Header.Get(jetstream.MsgIDHeader), m.Data, events.HdrTraceparent, m.Header.Get(events.HdrTraceparent))
}

// deleteCommand removes a message from CAMPAIGN_COMMANDS, as a worker's ack
// does on the work queue.
func (e *env) deleteCommand(seq uint64) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, events.StreamCommands)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := s.DeleteMsg(ctx, seq); err != nil {
		e.t.Fatalf("delete %d: %v", seq, err)
	}
}

// The attack the old scheme allowed: tenant evil computes the command id of
// acme's keyed request from what it knows (the key and the body) as an
// unkeyed SHA-256, and publishes junk under it on its own subject first.
// Now the id is keyed by the server's secret: acme's command is stored.
func TestPredictedCommandIDDoesNotSuppress(t *testing.T) {
	e := newEnv(t, storeKinds[0].open(t))
	body := []byte(`{"campaign_id":"spring","name":"spring sale","tenant_id":"acme"}`)
	const key = "order-42"
	bodySum := sha256.Sum256(body)
	fp := "POST /api/v1/campaigns " + hex.EncodeToString(bodySum[:])
	sum := sha256.Sum256([]byte("campaign-orchestrator/idempotency\x00acme\x00" + key + "\x00" + fp))
	oldID := "idem-" + hex.EncodeToString(sum[:16])
	e.publishRaw("campaign.cmd.evil.x.start", oldID, []byte(`{"junk":true}`))

	r := e.do("POST", "/api/v1/campaigns", body, "Idempotency-Key", key)
	_, cmdID := accepted(t, r)
	if cmdID == oldID {
		t.Fatal("the command id is still the unkeyed hash of the request")
	}
	stored := false
	for _, m := range e.commands() {
		if m.Subject == "campaign.cmd.acme.spring.create" && m.Header.Get(jetstream.MsgIDHeader) == cmdID && commandEnvelope(t, m).ID == cmdID {
			stored = true
		}
	}
	if !stored {
		t.Fatalf("202 for command %s, but it is not in the stream", cmdID)
	}
}

// Whoever knows the id anyway (here the test, which configures the secret)
// and publishes under it first on another tenant's subject makes acme's
// command vanish in JetStream's deduplication: acme gets an error that says
// so, never a 202, and the same key does not replay one either.
func TestCommandIDCollisionIsAnError(t *testing.T) {
	eachStore(t, func(t *testing.T, k storeKind) {
		body := []byte(`{"campaign_id":"c1","name":"n","tenant_id":"acme"}`)
		cmdID, _ := probe(t, testSecret, nil, "POST", "/api/v1/campaigns", body, "Idempotency-Key", "k-coll")

		e := newEnv(t, k.open(t), withSecret(testSecret))
		e.publishRaw("campaign.cmd.evil.x.start", cmdID, []byte(`{"junk":true}`))
		r := e.do("POST", "/api/v1/campaigns", body, "Idempotency-Key", "k-coll")
		wantError(t, r, http.StatusConflict, httpapi.HeaderIdempotencyKey)
		if code, _, msg := r.errorCode(); code != "conflict" || !strings.Contains(msg, cmdID) || !strings.Contains(msg, "not stored") {
			t.Fatalf("want a conflict naming command id %s, got %s", cmdID, r)
		}
		again := e.do("POST", "/api/v1/campaigns", body, "Idempotency-Key", "k-coll")
		if again.status == http.StatusAccepted || again.status != r.status || !bytes.Equal(again.body, r.body) {
			t.Fatalf("repeat: %s, want the 409 again", again)
		}
		msgs := e.commands()
		if len(msgs) != 1 || msgs[0].Subject != "campaign.cmd.evil.x.start" {
			t.Fatalf("%d commands stored, want only the foreign one", len(msgs))
		}
	})
}

// A legitimate retry: the ingress's first attempt was stored but its PubAck
// lost (simulated by storing the very message the ingress publishes); the
// retry with the same key is a duplicate of its own command: 202. When that
// message is gone (a worker acked it), the campaign's ledger decides: the id
// applied to this campaign is a 202; otherwise it cannot be told from a
// foreign message that was consumed (its id lands in another campaign's
// ledger), so 503, not kept.
func TestDuplicateOfOwnCommand(t *testing.T) {
	t.Run("stored", func(t *testing.T) {
		body := []byte(`{"campaign_id":"c1","name":"n","tenant_id":"acme","start":true}`)
		cmdID, first := probe(t, testSecret, nil, "POST", "/api/v1/campaigns", body, "Idempotency-Key", "k-own")
		e := newEnv(t, storeKinds[0].open(t), withSecret(testSecret))
		time.Sleep(2 * time.Millisecond) // the retry's issued_at differs from the first attempt's
		e.republish(first)
		r := e.do("POST", "/api/v1/campaigns", body, "Idempotency-Key", "k-own")
		if _, id := accepted(t, r); id != cmdID || r.header.Get(httpapi.HeaderReplayed) != "" {
			t.Fatalf("retry: %s %v, want 202 for %s", r, r.header, cmdID)
		}
		if msgs := e.commands(); len(msgs) != 1 {
			t.Fatalf("%d commands stored, want 1", len(msgs))
		}
	})
	t.Run("other body under the id", func(t *testing.T) {
		// Same subject and id, another body: not this command.
		body := []byte(`{"campaign_id":"c1","name":"n","tenant_id":"acme"}`)
		cmdID, first := probe(t, testSecret, nil, "POST", "/api/v1/campaigns", body, "Idempotency-Key", "k-body")
		e := newEnv(t, storeKinds[0].open(t), withSecret(testSecret))
		e.publishRaw(first.Subject, cmdID, bytes.Replace(first.Data, []byte(`"name":"n"`), []byte(`"name":"m"`), 1))
		wantError(t, e.do("POST", "/api/v1/campaigns", body, "Idempotency-Key", "k-body"), http.StatusConflict, httpapi.HeaderIdempotencyKey)
	})
	eachStore(t, func(t *testing.T, k storeKind) {
		verb := func(id string) string { return "/api/v1/campaigns/" + id + "/start" }
		seeder := func(id string) func(store.Store) {
			return func(st store.Store) { seed(t, st, "acme", id, fsm.Pending) }
		}
		appliedID, appliedMsg := probe(t, testSecret, seeder("applied"), "POST", verb("applied"), nil, "X-Tenant-ID", "acme", "Idempotency-Key", "k-a")
		_, pendingMsg := probe(t, testSecret, seeder("pending"), "POST", verb("pending"), nil, "X-Tenant-ID", "acme", "Idempotency-Key", "k-p")
		foreignID, _ := probe(t, testSecret, seeder("foreign"), "POST", verb("foreign"), nil, "X-Tenant-ID", "acme", "Idempotency-Key", "k-f")

		e := newEnv(t, k.open(t), withSecret(testSecret))
		seed(t, e.st, "acme", "applied", fsm.Pending, appliedID)
		seed(t, e.st, "acme", "pending", fsm.Pending)
		seed(t, e.st, "acme", "foreign", fsm.Pending)
		seed(t, e.st, "evil", "x", fsm.Pending, foreignID) // evil's message was applied to evil's campaign
		e.deleteCommand(e.republish(appliedMsg))
		e.deleteCommand(e.republish(pendingMsg))
		e.deleteCommand(e.publishRaw("campaign.cmd.evil.x.start", foreignID, []byte(`{}`)))

		r := e.do("POST", verb("applied"), nil, "X-Tenant-ID", "acme", "Idempotency-Key", "k-a")
		if _, id := accepted(t, r); id != appliedID {
			t.Fatalf("applied: command id %s, want %s", id, appliedID)
		}
		for _, c := range []struct{ id, key string }{{"pending", "k-p"}, {"foreign", "k-f"}} {
			for range 2 { // not kept: asked again, not replayed
				r := e.do("POST", verb(c.id), nil, "X-Tenant-ID", "acme", "Idempotency-Key", c.key)
				wantError(t, r, http.StatusServiceUnavailable, "")
				if code, _, _ := r.errorCode(); code != "unavailable" || r.header.Get(httpapi.HeaderReplayed) != "" {
					t.Fatalf("%s: %s %v", c.id, r, r.header)
				}
			}
		}
		if msgs := e.commands(); len(msgs) != 0 {
			t.Fatalf("%d commands stored, want none", len(msgs))
		}
	})
}

// Every ingress with the same secret derives the same id; another secret,
// another id; without a configured secret, the ingresses sharing a store
// share the one the first of them stored.
func TestIdempotencySecret(t *testing.T) {
	body := []byte(`{"campaign_id":"c1","name":"n","tenant_id":"acme"}`)
	do := func(e *env) string {
		t.Helper()
		r := e.do("POST", "/api/v1/campaigns", body, "Idempotency-Key", "k-secret")
		_, id := accepted(t, r)
		if r.header.Get(httpapi.HeaderReplayed) != "" {
			t.Fatalf("replayed: %s", r)
		}
		return id
	}
	t.Run("configured", func(t *testing.T) {
		a, _ := probe(t, testSecret, nil, "POST", "/api/v1/campaigns", body, "Idempotency-Key", "k-secret")
		b, _ := probe(t, bytes.Clone(testSecret), nil, "POST", "/api/v1/campaigns", body, "Idempotency-Key", "k-secret")
		c, _ := probe(t, []byte("another-secret-of-some-length"), nil, "POST", "/api/v1/campaigns", body, "Idempotency-Key", "k-secret")
		if a != b || a == c || !strings.HasPrefix(a, "idem-") || len(a) != len("idem-")+32 {
			t.Fatalf("ids %s, %s (same secret), %s (another)", a, b, c)
		}
	})
	eachStore(t, func(t *testing.T, k storeKind) {
		st := k.open(t)
		first := do(newEnv(t, st)) // each env: its own NATS server
		if err := st.DeleteIdem(context.Background(), "acme", "k-secret", ""); err != nil {
			t.Fatal(err)
		}
		if second := do(newEnv(t, st)); second != first {
			t.Fatalf("two ingresses over one store: ids %s and %s", first, second)
		}
		if other := do(newEnv(t, k.open(t))); other == first {
			t.Fatalf("another store, another generated secret: same id %s", other)
		}
	})
	t.Run("too short", func(t *testing.T) {
		e := newEnv(t, storeKinds[0].open(t))
		secret := "fifteen-bytes!!"
		_, err := httpapi.New(httpapi.Config{IdempotencySecret: []byte(secret)},
			httpapi.Deps{JS: e.js, NC: e.nc, Store: e.st, Workflows: workflows, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err == nil || !strings.Contains(err.Error(), "IDEMPOTENCY_SECRET") || strings.Contains(err.Error(), secret) {
			t.Fatalf("want an error naming IDEMPOTENCY_SECRET (not quoting it), got %v", err)
		}
	})
	t.Run("never logged", func(t *testing.T) {
		cmdID, _ := probe(t, testSecret, nil, "POST", "/api/v1/campaigns", body, "Idempotency-Key", "k-log")
		var log lockedBuffer
		e := newEnv(t, storeKinds[0].open(t), withSecret(testSecret), func(_ *httpapi.Config, d *httpapi.Deps) {
			d.Logger = slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))
		})
		e.publishRaw("campaign.cmd.evil.x.start", cmdID, nil)
		wantError(t, e.do("POST", "/api/v1/campaigns", body, "Idempotency-Key", "k-log"), http.StatusConflict, "")
		if s := log.String(); !strings.Contains(s, "collision") || strings.Contains(s, string(testSecret)) || strings.Contains(s, hex.EncodeToString(testSecret)) {
			t.Fatalf("log (with the collision warning, without the secret):\n%s", s)
		}
	})
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// retryingStore runs ReserveIdem twice and answers the second run, as the
// Redis client does when the reply to the first was lost; it records the
// owners it was given.
type retryingStore struct {
	store.Store
	mu     sync.Mutex
	owners []string
}

func (s *retryingStore) ReserveIdem(ctx context.Context, tenant, key string, rec store.IdemRecord, ttl time.Duration) (store.IdemRecord, bool, error) {
	s.mu.Lock()
	s.owners = append(s.owners, rec.Owner)
	s.mu.Unlock()
	if _, _, err := s.Store.ReserveIdem(ctx, tenant, key, rec, ttl); err != nil {
		return store.IdemRecord{}, false, err
	}
	return s.Store.ReserveIdem(ctx, tenant, key, rec, ttl)
}

// A reservation made although its reply was lost is the request's own (its
// owner nonce, one per request): the request goes on at once instead of
// waiting on itself and answering 409 "still in progress".
func TestIdempotencyReservationLostReply(t *testing.T) {
	body := []byte(`{"name":"n","tenant_id":"acme"}`)
	eachStore(t, func(t *testing.T, k storeKind) {
		st := &retryingStore{Store: k.open(t)}
		e := newEnv(t, st)
		for _, key := range []string{"k-lost-1", "k-lost-2"} {
			start := time.Now()
			accepted(t, e.do("POST", "/api/v1/campaigns", body, "Idempotency-Key", key))
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("answered after %s: the request waited on its own reservation", d)
			}
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		if len(st.owners) != 2 || len(st.owners[0]) != 32 || st.owners[0] == st.owners[1] {
			t.Fatalf("owners %q: want one random nonce per request", st.owners)
		}
		if _, err := hex.DecodeString(st.owners[0]); err != nil {
			t.Fatalf("owner %q: %v", st.owners[0], err)
		}
	})
}
