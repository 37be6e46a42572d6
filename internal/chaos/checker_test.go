//go:build chaos

package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
)

// TestChaosCheckerCatches proves the checker is not blind: after a small
// healthy run it tampers with what the checker reads — an event stored
// again, a sequence skipped, an event deleted, a command's event repeated,
// a downstream overlap, a step result from a stale fence, an inbox left
// non-empty, a DLQ entry nobody sent — and expects a finding of each kind.
func TestChaosCheckerCatches(t *testing.T) {
	s := newScenario(t)
	cfg := s.load.cfg
	cfg.Campaigns, cfg.Spread, cfg.Invalid = 12, 3*time.Second, 3
	s.load = NewLoad(cfg, s.js, s.cl.LiveAddrs, t.Logf)
	s.startOrchs("A", "B")
	ctx := context.Background()
	s.load.Run(ctx)
	if ok, last := WaitQuiet(ctx, s.js, s.rdb, s.cl.Down, 90*time.Second, t.Logf); !ok {
		t.Fatalf("not quiet: %s", last)
	}
	// The healthy run must be clean first.
	clean := &Summary{Counts: map[string]int{}}
	if err := (&Checker{JS: s.js, Redis: s.rdb, Addrs: s.cl.LiveAddrs, Down: s.cl.Down}).Run(ctx, s.load.Commands(), clean); err != nil {
		t.Fatal(err)
	}
	if clean.Failed() {
		t.Fatalf("the healthy run already has findings: %+v", clean.Findings)
	}

	msgs, err := readStream(ctx, s.js, streamEvents)
	if err != nil {
		t.Fatal(err)
	}
	byCampaign := map[string][]rawMsg{}
	for _, m := range msgs {
		toks := strings.SplitN(m.Subject, ".", 5)
		byCampaign[toks[2]+"/"+toks[3]] = append(byCampaign[toks[2]+"/"+toks[3]], m)
	}
	keys := sortedKeys(byCampaign)
	if len(keys) < 6 {
		t.Fatalf("only %d campaigns", len(keys))
	}
	publish := func(m rawMsg, mutate func(ev map[string]any, h nats.Header)) {
		t.Helper()
		var ev map[string]any
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		h := nats.Header{}
		for k, v := range m.Header {
			if !strings.HasPrefix(k, "Nats-") || k == "Nats-Msg-Id" {
				h[k] = append([]string(nil), v...)
			}
		}
		mutate(ev, h)
		data, _ := json.Marshal(ev)
		if _, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Header: h, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	setSeq := func(ev map[string]any, h nats.Header, key string, n uint64) {
		id := strings.ReplaceAll(key, "/", ".") + "." + strconv.FormatUint(n, 10)
		ev["id"], ev["sequence"] = id, fmt.Sprintf("%020d", n)
		h.Set("Nats-Msg-Id", id)
	}

	// 1. An event stored again under another message id: a repeat.
	k1 := keys[0]
	publish(byCampaign[k1][1], func(ev map[string]any, h nats.Header) { h.Set("Nats-Msg-Id", "tamper-repeat") })
	// 2. An event two ahead: a gap (and the store disagrees).
	k2 := keys[1]
	last2 := byCampaign[k2][len(byCampaign[k2])-1]
	publish(last2, func(ev map[string]any, h nats.Header) {
		setSeq(ev, h, k2, uint64(len(byCampaign[k2])+2))
	})
	// 3. The only event of an external command deleted: the command is lost
	// (and a gap).
	st, err := s.js.Stream(ctx, streamEvents)
	if err != nil {
		t.Fatal(err)
	}
	var k3 string
	for _, k := range keys[2:] {
		ids := map[string]int{}
		var evs []event
		for _, m := range byCampaign[k] {
			var e event
			_ = json.Unmarshal(m.Data, &e)
			e.streamSeq = m.Seq
			ids[e.CommandID]++
			evs = append(evs, e)
		}
		for _, e := range evs {
			if ids[e.CommandID] == 1 && !strings.Contains(e.CommandID, ".advance.") && e.Type != "campaign.created" {
				k3 = k
				if err := st.DeleteMsg(ctx, e.streamSeq); err != nil {
					t.Fatal(err)
				}
				break
			}
		}
		if k3 != "" {
			break
		}
	}
	if k3 == "" {
		t.Fatal("no external command with a single event to delete")
	}
	rest := []string{}
	for _, k := range keys {
		if k != keys[0] && k != keys[1] && k != k3 {
			rest = append(rest, k)
		}
	}
	// 4. A command's event again as the next sequence: applied twice.
	k4 := rest[0]
	first4 := byCampaign[k4][0] // created, by the create command
	publish(first4, func(ev map[string]any, h nats.Header) {
		setSeq(ev, h, k4, uint64(len(byCampaign[k4])+1))
		ev["type"] = "campaign.command.rejected"
	})

	// 5. Two calls at once from the same fence, and 6. a step result whose
	// call was not the highest fence of its run.
	var k5 string
	var base, succ Call
	for _, c := range s.cl.Down.Calls() {
		if ck := c.Tenant + "/" + c.Campaign; c.Status == 200 && ck != k1 && ck != k2 && ck != k3 && ck != k4 {
			base = c
			break
		}
	}
	k5 = base.Tenant + "/" + base.Campaign
	over := base
	over.Start, over.End = base.Start.Add(time.Millisecond), base.End.Add(time.Millisecond)
	s.cl.Down.inject(over)
	succ = base
	succ.Fence = base.Fence + 1000
	succ.Start, succ.End = time.Now(), time.Now().Add(time.Millisecond)
	s.cl.Down.inject(succ)

	// 7. An inbox left holding an item.
	k7 := rest[1]
	tc := strings.SplitN(k7, "/", 2)
	if err := s.rdb.ZAdd(ctx, stateKey(tc[0], tc[1], "inbox"), redis.Z{Score: 1, Member: "tamper"}).Err(); err != nil {
		t.Fatal(err)
	}
	// 9. A fence going backwards along a campaign's events: two events
	// after its last, written with fences 50 then 40.
	k9 := rest[2]
	last9 := byCampaign[k9][len(byCampaign[k9])-1]
	for i, f := range []string{"50", "40"} {
		publish(last9, func(ev map[string]any, h nats.Header) {
			setSeq(ev, h, k9, uint64(len(byCampaign[k9])+1+i))
			ev["type"], ev["fence"] = "campaign.command.rejected", f
		})
	}
	// 8. A DLQ entry nobody sent.
	dm := nats.NewMsg("campaign.dlq.acme.nobody")
	dm.Header.Set("Command-Id", "forged")
	dm.Header.Set("Reason", "made up")
	dm.Data = []byte("{}")
	if _, err := s.js.PublishMsg(ctx, dm); err != nil {
		t.Fatal(err)
	}

	sum := &Summary{Counts: map[string]int{}}
	if err := (&Checker{JS: s.js, Redis: s.rdb, Addrs: s.cl.LiveAddrs, Down: s.cl.Down}).Run(ctx, s.load.Commands(), sum); err != nil {
		t.Fatal(err)
	}
	for _, f := range sum.Findings {
		t.Logf("finding %s %s: %s", f.Kind, f.Campaign, f.Detail)
	}
	want := [][2]string{
		{KindRepeat, k1}, {KindGap, k2}, {KindLost, k3}, {KindAppliedTwice, k4},
		{KindOverlap, k5}, {KindStaleWrite, k5}, {KindLeftover, ""}, {KindDLQ, "acme.nobody"}, {KindMismatch, k2},
		{KindStaleWrite, k9},
	}
	for _, w := range want {
		kind, campaign := w[0], w[1]
		found := false
		for _, f := range sum.Findings {
			if f.Kind == kind && (campaign == "" || f.Campaign == campaign) {
				found = true
			}
		}
		if !found {
			t.Errorf("tampering meant to cause %s (campaign %q) was not found", kind, campaign)
		}
	}
	t.Logf("SUMMARY (tampered) %s", sum.Line())
}
