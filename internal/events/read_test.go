package events_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// setAllowDirect switches a stream's allow_direct, so that the jetstream
// client reads it with direct gets ($JS.API.DIRECT.GET) or with the stream
// API ($JS.API.STREAM.MSG.GET).
func setAllowDirect(t *testing.T, js jetstream.JetStream, name string, on bool) {
	t.Helper()
	cfg := mustStream(t, js, name).CachedInfo().Config
	cfg.AllowDirect = on
	if _, err := js.UpdateStream(testCtx(t), cfg); err != nil {
		t.Fatalf("set allow_direct %v on %s: %v", on, name, err)
	}
}

func TestHistoryAndLast(t *testing.T) {
	js := mustJetStream(t)
	ctx := testCtx(t)
	for _, direct := range []bool{true, false} {
		name := "direct get, empty"
		if !direct {
			name = "stream msg get, empty"
		}
		t.Run(name, func(t *testing.T) {
			setAllowDirect(t, js, events.StreamEvents, direct)
			if _, ok, err := events.NewPublisher(js).Last(ctx, "acme", "nobody"); ok || err != nil {
				t.Errorf("Last of an unknown campaign: ok %v, err %v", ok, err)
			}
			if hist, err := events.History(ctx, js, "acme", "nobody"); len(hist) != 0 || err != nil {
				t.Errorf("History of an unknown campaign: %v, %v", hist, err)
			}
		})
	}

	// "c" is a prefix of "c2" and of "c-2"; "acme2" a prefix neighbour tenant.
	mustPublish(t, js, "acme", "c", outbox(t, "acme", "c", 1, 2), 2)
	mustPublish(t, js, "acme", "c2", outbox(t, "acme", "c2", 1, 4), 4)
	mustPublish(t, js, "acme", "c-2", outbox(t, "acme", "c-2", 1, 1), 1)
	mustPublish(t, js, "acme2", "c", outbox(t, "acme2", "c", 1, 1), 1)
	mustPublish(t, js, "acme", "c", outbox(t, "acme", "c", 1, 3), 1)

	for _, direct := range []bool{true, false} {
		name := "direct get, events"
		if !direct {
			name = "stream msg get, events"
		}
		t.Run(name, func(t *testing.T) {
			setAllowDirect(t, js, events.StreamEvents, direct)
			wantSequences(t, js, "acme", "c", 3)
			wantSequences(t, js, "acme", "c2", 4)
			hist, err := events.History(ctx, js, "acme", "c")
			if err != nil {
				t.Fatal(err)
			}
			if hist[0].Type != fsm.EvCreated || hist[0].ID != "acme.c.1" || hist[2].ID != "acme.c.3" {
				t.Errorf("history = %+v", hist)
			}

			p := events.NewPublisher(js)
			seq, ok, err := p.Last(ctx, "acme", "c")
			if err != nil || !ok || seq != 3 {
				t.Errorf("Last(c) = %d, %v, %v; want 3", seq, ok, err)
			}
			seq, ok, err = p.Last(ctx, "acme", "c2")
			if err != nil || !ok || seq != 4 {
				t.Errorf("Last(c2) = %d, %v, %v; want 4", seq, ok, err)
			}
		})
	}
	if _, err := events.History(ctx, js, "acme", "c.>"); !errors.Is(err, events.ErrInvalidEvent) {
		t.Errorf("History with a wildcard token: err = %v", err)
	}
	if _, _, err := events.NewPublisher(js).Last(ctx, "*", "c"); !errors.Is(err, events.ErrInvalidEvent) {
		t.Errorf("Last with a wildcard token: err = %v", err)
	}
}

// TestHistoryFromLeader: LeaderHistory and LastEvent (the rebuild's reads)
// read CAMPAIGN_EVENTS through its leader (STREAM.MSG.GET), never a direct
// get that a replica behind the leader may answer short, even where the
// stream allows direct gets; History (the API's and trace's) takes the
// direct gets, which any replica answers, off the JetStream API's queue.
// The requests are watched on the JetStream API subjects.
func TestHistoryFromLeader(t *testing.T) {
	js := mustJetStream(t)
	nc := js.Conn()
	ctx := testCtx(t)
	setAllowDirect(t, js, events.StreamEvents, true)
	mustPublish(t, js, "acme", "c", outbox(t, "acme", "c", 1, 3), 3)
	var mu sync.Mutex
	seen := map[string]int{}
	for _, subj := range []string{"$JS.API.DIRECT.GET.>", "$JS.API.STREAM.MSG.GET.>"} {
		sub, err := nc.Subscribe(subj, func(m *nats.Msg) {
			mu.Lock()
			defer mu.Unlock()
			seen[strings.Join(strings.Split(m.Subject, ".")[:4], ".")]++
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	hist, err := events.LeaderHistory(ctx, js, "acme", "c")
	if err != nil || len(hist) != 3 {
		t.Fatalf("LeaderHistory = %d events, %v", len(hist), err)
	}
	if hist, err = events.NewPublisher(js).LeaderHistory(ctx, "acme", "c"); err != nil || len(hist) != 3 {
		t.Fatalf("Publisher.LeaderHistory = %d events, %v", len(hist), err)
	}
	last, ok, err := events.LastEvent(ctx, js, "acme", "c")
	if err != nil || !ok || last.Seq() != 3 || last.ID != "acme.c.3" {
		t.Fatalf("LastEvent = %+v, %v, %v", last, ok, err)
	}
	if _, ok, err := events.LastEvent(ctx, js, "acme", "nobody"); ok || err != nil {
		t.Fatalf("LastEvent of an unknown campaign = %v, %v", ok, err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["$JS.API.DIRECT.GET"] != 0 || seen["$JS.API.STREAM.MSG"] < 10 {
		t.Errorf("requests seen %v: want every read through STREAM.MSG.GET, none through DIRECT.GET", seen)
	}
	clear(seen)
	mu.Unlock()
	if hist, err = events.History(ctx, js, "acme", "c"); err != nil || len(hist) != 3 {
		t.Fatalf("History = %d events, %v", len(hist), err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if seen["$JS.API.DIRECT.GET"] < 4 || seen["$JS.API.STREAM.MSG"] != 0 {
		t.Errorf("History's requests %v: want direct gets only", seen)
	}
}

// TestNextCommand checks next_by_subj with a wildcard filter on the
// work-queue stream, by direct get and by the stream API.
func TestNextCommand(t *testing.T) {
	js := mustJetStream(t)
	ctx := testCtx(t)
	publish := func(tenant, campaign string, verb fsm.Verb, id string) uint64 {
		t.Helper()
		m := events.NewCommandMsg(events.CommandEnvelope{ID: id, Type: string(verb), TenantID: tenant, CampaignID: campaign}, "")
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
		return ack.Sequence
	}
	s1 := publish("acme", "c", fsm.Start, "1")  // 1: acked below
	s2 := publish("acme", "c2", fsm.Start, "2") // 2
	s3 := publish("acme", "c", fsm.Pause, "3")  // 3: acked below
	s4 := publish("acme2", "c", fsm.Start, "4") // 4
	s5 := publish("acme", "c", fsm.Resume, "5") // 5
	s6 := publish("acme", "c", fsm.Cancel, "6") // 6
	if s1 != 1 || s6 != 6 {
		t.Fatalf("stream sequences %d..%d, want 1..6", s1, s6)
	}

	// Consume and ack 1 and 3 (work queue: they leave the stream).
	cons, err := js.Consumer(ctx, events.StreamCommands, events.ConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(6)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		got++
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		if md.Sequence.Stream == s1 || md.Sequence.Stream == s3 {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatalf("ack: %v", err)
			}
		}
	}
	if got != 6 || batch.Error() != nil {
		t.Fatalf("fetched %d messages (%v), want 6", got, batch.Error())
	}

	for _, direct := range []bool{true, false} {
		name := "direct get"
		if !direct {
			name = "stream msg get"
		}
		t.Run(name, func(t *testing.T) {
			setAllowDirect(t, js, events.StreamCommands, direct)
			stream := mustStream(t, js, events.StreamCommands)
			if stream.CachedInfo().Config.AllowDirect != direct {
				t.Fatalf("allow_direct = %v", !direct)
			}
			tests := []struct {
				tenant, campaign string
				from             uint64
				want             uint64 // 0: none
				verb             fsm.Verb
			}{
				{"acme", "c", 0, s5, fsm.Resume},
				{"acme", "c", 1, s5, fsm.Resume},
				{"acme", "c", s3, s5, fsm.Resume},
				{"acme", "c", s5, s5, fsm.Resume},
				{"acme", "c", s5 + 1, s6, fsm.Cancel},
				{"acme", "c", s6 + 1, 0, ""},
				{"acme", "c2", 1, s2, fsm.Start},
				{"acme", "c2", s2 + 1, 0, ""},
				{"acme2", "c", 1, s4, fsm.Start},
				{"acme", "nobody", 1, 0, ""},
			}
			for _, tt := range tests {
				msg, ok, err := events.NextCommand(ctx, stream, tt.tenant, tt.campaign, tt.from)
				if err != nil {
					t.Fatalf("NextCommand(%s/%s, %d): %v", tt.tenant, tt.campaign, tt.from, err)
				}
				if tt.want == 0 {
					if ok {
						t.Errorf("NextCommand(%s/%s, %d) = %d, want none", tt.tenant, tt.campaign, tt.from, msg.Sequence)
					}
					continue
				}
				if !ok || msg.Sequence != tt.want || msg.Subject != events.CommandSubject(tt.tenant, tt.campaign, tt.verb) {
					t.Errorf("NextCommand(%s/%s, %d) = %v %v, want %d", tt.tenant, tt.campaign, tt.from, msg, ok, tt.want)
					continue
				}
				if _, err := events.DecodeCommand(msg.Subject, msg.Header, msg.Data, testWorkflows); err != nil {
					t.Errorf("decode the read-ahead command: %v", err)
				}
			}
			// The leader's STREAM.MSG.GET (NextCommandLinearizable on a
			// replicated stream) answers the same, headers included.
			for _, tt := range tests {
				from := max(tt.from, 1)
				msg, err := events.LeaderMsgGet(ctx, js, events.StreamCommands, from, events.CampaignCommands(tt.tenant, tt.campaign))
				if tt.want == 0 {
					if !errors.Is(err, jetstream.ErrMsgNotFound) {
						t.Errorf("LeaderMsgGet(%s/%s, %d) = %v, %v, want ErrMsgNotFound", tt.tenant, tt.campaign, from, msg, err)
					}
					continue
				}
				if err != nil || msg.Sequence != tt.want || msg.Subject != events.CommandSubject(tt.tenant, tt.campaign, tt.verb) ||
					msg.Header.Get(jetstream.MsgIDHeader) == "" || msg.Time.IsZero() {
					t.Errorf("LeaderMsgGet(%s/%s, %d) = %+v, %v, want %d", tt.tenant, tt.campaign, from, msg, err, tt.want)
					continue
				}
				if _, err := events.DecodeCommand(msg.Subject, msg.Header, msg.Data, testWorkflows); err != nil {
					t.Errorf("decode the leader's command: %v", err)
				}
				// One replica: the linearizable read is the direct one.
				lin, ok, err := events.NextCommandLinearizable(ctx, js, stream, tt.tenant, tt.campaign, tt.from)
				if err != nil || !ok || lin.Sequence != tt.want {
					t.Errorf("NextCommandLinearizable(%s/%s, %d) = %v %v %v, want %d", tt.tenant, tt.campaign, tt.from, lin, ok, err, tt.want)
				}
			}
		})
	}
	if _, _, err := events.NextCommand(ctx, mustStream(t, js, events.StreamCommands), "acme", "*", 1); err == nil {
		t.Errorf("NextCommand with a wildcard token: no error")
	}
}

// TestServerExpectLastSequenceForSubject pins what PublishEvents relies on
// in this nats-server: Nats-Expected-Last-Subject-Sequence with a wildcard
// Nats-Expected-Last-Subject-Sequence-Subject, exact tokens, 0 for "none",
// and the error code of a conflict.
func TestServerExpectLastSequenceForSubject(t *testing.T) {
	js := mustJetStream(t)
	ctx := testCtx(t)
	pub := func(campaign, typ string, expect uint64) (*jetstream.PubAck, error) {
		m := nats.NewMsg(events.EventSubject("acme", campaign, typ))
		m.Data = []byte("{}")
		return js.PublishMsg(ctx, m, jetstream.WithExpectLastSequenceForSubject(expect, events.CampaignEvents("acme", campaign)))
	}
	a1, err := pub("c", fsm.EvCreated, 0)
	if err != nil {
		t.Fatalf("first event, expect 0: %v", err)
	}
	// Another subject of the same campaign: the filter, not the subject, counts.
	a2, err := pub("c", fsm.EvStepSucceeded, a1.Sequence)
	if err != nil {
		t.Fatalf("second event, expect %d: %v", a1.Sequence, err)
	}
	_, err = pub("c", fsm.EvStarted, a1.Sequence)
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
		t.Fatalf("stale expectation: err = %v, want API error %d", err, jetstream.JSErrCodeStreamWrongLastSequence)
	}
	if _, err := pub("c", fsm.EvStarted, 0); err == nil {
		t.Fatalf("expect 0 on a campaign with events: no error")
	}
	// "c2" has none, though "c" (a prefix) has: exact tokens.
	if _, err := pub("c2", fsm.EvCreated, 0); err != nil {
		t.Fatalf("neighbour campaign, expect 0: %v", err)
	}
	if _, err := pub("c", fsm.EvStarted, a2.Sequence); err != nil {
		t.Fatalf("expect %d after the neighbour's event: %v", a2.Sequence, err)
	}
}
