package events_test

// Fuzz targets of the command decoding, the subject parsing and the DLQ copy
// (issue 9, part 3). Their seed corpora are in testdata/fuzz/<Name>/; the
// seeds too large for a corpus file (400 KB of 0xff in a field, a 900 KB
// header) are added with f.Add below, in a plain `go test` only (see
// fuzzAddHuge). Every seed runs in a plain `go test`; `make fuzz` fuzzes
// each target for a bounded time.

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// fuzzCmdPrefix is the prefix of every command subject.
const fuzzCmdPrefix = "campaign.cmd."

// fuzzCommandSubjectRE is the oracle of a usable command subject (CONTRACT
// section 2), written independently of subjects.go.
var fuzzCommandSubjectRE = regexp.MustCompile(`^campaign\.cmd\.([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{1,64})\.(create|start|pause|resume|cancel|retry|advance)$`)

// fuzzDLQSubjectRE is what every DLQ subject must look like.
var fuzzDLQSubjectRE = regexp.MustCompile(`^campaign\.dlq\.([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{1,64})$`)

// fuzzSplitSubject returns the three tokens after campaign.cmd. when the
// subject has exactly that shape (whatever the tokens hold), and false
// otherwise.
func fuzzSplitSubject(subject string) ([3]string, bool) {
	rest, ok := strings.CutPrefix(subject, fuzzCmdPrefix)
	if !ok {
		return [3]string{}, false
	}
	toks := strings.Split(rest, ".")
	if len(toks) != 3 {
		return [3]string{}, false
	}
	return [3]string{toks[0], toks[1], toks[2]}, true
}

// fuzzHostile is 400 KB of 0xff: invalid UTF-8 that %q blows up fourfold.
var fuzzHostile = strings.Repeat("\xff", 400_000)

// fuzzAddHuge reports whether to add the seeds of hundreds of kilobytes
// with f.Add: in every plain `go test`, but not while fuzzing, where the
// mutator grows such inputs without bound and the run stalls.
func fuzzAddHuge() bool {
	fl := flag.Lookup("test.fuzz")
	return fl == nil || fl.Value.String() == ""
}

// fuzzHostiles are the runs of 0xff to seed hostile fields with: a short
// one always, fuzzHostile too in a plain `go test`.
func fuzzHostiles() []string {
	if fuzzAddHuge() {
		return []string{strings.Repeat("\xff", 64), fuzzHostile}
	}
	return []string{strings.Repeat("\xff", 64)}
}

// fuzzEnvelope is a command body with the given fields and payload.
func fuzzEnvelope(id, typ, tenant, campaign, payload string) []byte {
	m := map[string]any{"id": id, "type": typ, "tenant_id": tenant, "campaign_id": campaign}
	if payload != "" {
		m["payload"] = json.RawMessage(payload)
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// FuzzDecodeCommand: DecodeCommand of any subject, Nats-Msg-Id and body
// never panics. A rejection is an *InvalidCommand whose reason is bounded
// valid UTF-8 and whose tokens are the subject's valid ones (or ""), and its
// DLQ copy is publishable; an accepted command carries the subject's tokens
// and survives a round trip through NewCommandMsg.
func FuzzDecodeCommand(f *testing.F) {
	const subj = "campaign.cmd.acme.spring."
	f.Add(subj+"start", "01HDR", fuzzEnvelope("", "start", "acme", "spring", ""))
	f.Add(subj+"create", "01HDR", fuzzEnvelope("", "create", "acme", "spring", `{"name":"`+strings.Repeat("n", 256)+`"}`))
	for _, hostile := range fuzzHostiles() {
		f.Add(subj+"create", "", fuzzEnvelope(hostile, "create", "acme", "spring", `{"name":"x"}`))
		f.Add(subj+"create", "01HDR", []byte(`{"type":"create","tenant_id":"acme","campaign_id":"spring","payload":{"name":"`+hostile+`"}}`))
		f.Add(subj+"start", "01HDR", []byte(`{"type":"start","tenant_id":"acme","campaign_id":"spring","`+hostile+`":1}`))
		f.Add(subj+"start", "01HDR", []byte(`{"type":"start","tenant_id":"`+hostile+`","campaign_id":"spring"}`))
		f.Add(subj+"advance", "01HDR", []byte(`{"type":"advance","tenant_id":"acme","campaign_id":"spring","payload":{"step":`+strings.Repeat("9", len(hostile)/4)+`,"run":1,"version":1}}`))
		f.Add("campaign.cmd."+hostile+".spring.start", hostile, []byte(hostile))
		f.Add(subj+hostile, "01HDR", []byte(`{}`))
	}
	f.Fuzz(func(t *testing.T, subject, msgID string, body []byte) {
		h := nats.Header{}
		if msgID != "" {
			h.Set(jetstream.MsgIDHeader, msgID)
		}
		cmd, err := events.DecodeCommand(subject, h, body, testWorkflows)
		toks, shaped := fuzzSplitSubject(subject)
		if err != nil {
			var inv *events.InvalidCommand
			if !errors.As(err, &inv) {
				t.Fatalf("err = %.200v (%T), want an *InvalidCommand", err, err)
			}
			if !reflect.DeepEqual(cmd, fsm.Command{}) {
				t.Errorf("a rejected command comes with a command: %+v", cmd)
			}
			fuzzCheckInvalid(t, inv, err, subject, msgID, toks, shaped)
			fuzzCheckDeadLetter(t, &nats.Msg{Subject: subject, Header: h, Data: body}, inv, 7)
			return
		}

		// Accepted: only on a usable subject, with its tokens.
		if !fuzzCommandSubjectRE.MatchString(subject) {
			t.Fatalf("accepted a command on subject %.200q", subject)
		}
		if cmd.Tenant != toks[0] || cmd.Campaign != toks[1] || string(cmd.Verb) != toks[2] {
			t.Fatalf("command %s/%s %s, want the subject's %q", cmd.Tenant, cmd.Campaign, cmd.Verb, toks)
		}
		switch {
		case cmd.ID == "" || len(cmd.ID) > events.MaxCommandIDBytes:
			t.Fatalf("accepted command id of %d bytes", len(cmd.ID))
		case msgID != "" && cmd.ID != msgID:
			t.Fatalf("id %.100q, want the Nats-Msg-Id %.100q", cmd.ID, msgID)
		case !fuzzSurvivesJSON(cmd.ID):
			// The inbox and the ledger keep it in JSON: a redelivery
			// must find it there.
			t.Fatalf("accepted id %.100q does not survive JSON unchanged", cmd.ID)
		}
		switch cmd.Verb {
		case fsm.Create:
			if cmd.Create == nil || cmd.Workflow == nil || strings.TrimSpace(cmd.Create.Name) == "" ||
				utf8.RuneCountInString(cmd.Create.Name) > events.MaxNameLength || cmd.Create.Workflow == "" {
				t.Fatalf("accepted create: %+v workflow %+v", cmd.Create, cmd.Workflow)
			}
			if w, ok := testWorkflows.Get(cmd.Create.Workflow); !ok || !reflect.DeepEqual(w, *cmd.Workflow) {
				t.Fatalf("create resolved workflow %+v for %q", cmd.Workflow, cmd.Create.Workflow)
			}
			if p := cmd.Create.Params; p != nil && (!json.Valid(p) || bytes.TrimSpace(p)[0] != '{') {
				t.Fatalf("create params %.100q are not a JSON object", p)
			}
		case fsm.Advance:
			if a := cmd.Advance; a == nil || a.Version == 0 || a.Step < 0 || a.Run < 0 {
				t.Fatalf("accepted advance payload %+v", a)
			}
		}
		if cmd.Verb != fsm.Create && (cmd.Create != nil || cmd.Workflow != nil) || cmd.Verb != fsm.Advance && cmd.Advance != nil {
			t.Fatalf("payload of another verb: %+v", cmd)
		}

		// Round trip: the message the service would publish for this
		// command decodes to the same command.
		env := events.CommandEnvelope{ID: cmd.ID, Type: string(cmd.Verb), TenantID: cmd.Tenant, CampaignID: cmd.Campaign}
		switch cmd.Verb {
		case fsm.Create:
			env.Payload, _ = json.Marshal(cmd.Create)
		case fsm.Advance:
			env.Payload, _ = json.Marshal(cmd.Advance)
		}
		msg := events.NewCommandMsg(env, "")
		if msg.Subject != subject {
			t.Fatalf("re-encoded on %q, received on %q", msg.Subject, subject)
		}
		again, err := events.DecodeCommand(msg.Subject, msg.Header, msg.Data, testWorkflows)
		if err != nil {
			t.Fatalf("re-encoded command rejected: %v\nbody %.300s", err, msg.Data)
		}
		if !fuzzSameCommand(cmd, again) {
			t.Fatalf("round trip changed the command:\n got %+v\nwant %+v", again, cmd)
		}
	})
}

// fuzzCheckInvalid checks an InvalidCommand from DecodeCommand.
func fuzzCheckInvalid(t *testing.T, inv *events.InvalidCommand, err error, subject, msgID string, toks [3]string, shaped bool) {
	t.Helper()
	switch r := inv.Reason; {
	case r == "":
		t.Errorf("empty reason")
	case len(r) > events.MaxReasonBytes:
		t.Errorf("reason of %d bytes, want at most %d: %.200q…", len(r), events.MaxReasonBytes, r)
	case !utf8.ValidString(r):
		t.Errorf("reason is not valid UTF-8: %.200q…", r)
	}
	if msg := err.Error(); len(msg) > 2*events.MaxReasonBytes || !utf8.ValidString(msg) {
		t.Errorf("Error() is %d bytes (valid UTF-8: %t)", len(msg), utf8.ValidString(msg))
	}
	for what, tok := range map[string]string{"tenant": inv.Tenant, "campaign": inv.Campaign} {
		if tok != "" && !events.ValidToken(tok) {
			t.Errorf("InvalidCommand %s %.100q is not a valid token", what, tok)
		}
	}
	// The tokens are the subject's, when it has the shape and they are valid.
	wantTenant, wantCampaign := "", ""
	if shaped && events.ValidToken(toks[0]) {
		wantTenant = toks[0]
	}
	if shaped && events.ValidToken(toks[1]) {
		wantCampaign = toks[1]
	}
	if inv.Tenant != wantTenant || inv.Campaign != wantCampaign {
		t.Errorf("InvalidCommand tokens %q/%q, want %q/%q from subject %.200q", inv.Tenant, inv.Campaign, wantTenant, wantCampaign, subject)
	}
	switch v := inv.Verb; {
	case len(v) > 64 || !utf8.ValidString(v):
		t.Errorf("InvalidCommand verb of %d bytes (valid UTF-8: %t)", len(v), utf8.ValidString(v))
	case !shaped && v != "":
		t.Errorf("InvalidCommand verb %q from an unusable subject", v)
	case shaped && len(toks[2]) <= 64 && utf8.ValidString(toks[2]) && v != toks[2]:
		t.Errorf("InvalidCommand verb %q, want the subject's %q", v, toks[2])
	}
	// The id is the Nats-Msg-Id when usable, and none otherwise; a plain
	// short ASCII id is always usable.
	switch {
	case len(inv.ID) > events.MaxCommandIDBytes:
		t.Errorf("InvalidCommand id of %d bytes", len(inv.ID))
	case inv.ID != "" && !fuzzSurvivesJSON(inv.ID):
		t.Errorf("InvalidCommand id %.100q does not survive JSON unchanged", inv.ID)
	case msgID != "" && inv.ID != "" && inv.ID != msgID:
		t.Errorf("InvalidCommand id %.100q, want the Nats-Msg-Id %.100q or none", inv.ID, msgID)
	case fuzzPlainID(msgID) && inv.ID != msgID:
		t.Errorf("InvalidCommand id %.100q, want the Nats-Msg-Id %.100q", inv.ID, msgID)
	}
	if !strings.HasPrefix(subject, fuzzCmdPrefix) && !strings.Contains(inv.Reason, "not a command subject") {
		t.Errorf("reason %q does not say the subject is not a command subject", inv.Reason)
	}
}

// fuzzSurvivesJSON reports whether s comes back unchanged from JSON.
func fuzzSurvivesJSON(s string) bool {
	b, err := json.Marshal(s)
	var back string
	return err == nil && json.Unmarshal(b, &back) == nil && back == s
}

// fuzzPlainID reports whether id is an id every version of the decoder must
// take: 1 to 64 letters, digits, '-', '_' or '.'.
func fuzzPlainID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range []byte(id) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// fuzzSameCommand compares two commands, create params by their JSON value.
func fuzzSameCommand(a, b fsm.Command) bool {
	if a.Create != nil && b.Create != nil {
		ac, bc := *a.Create, *b.Create
		if !fuzzSameJSON(ac.Params, bc.Params) {
			return false
		}
		ac.Params, bc.Params = nil, nil
		a.Create, b.Create = &ac, &bc
	}
	return reflect.DeepEqual(a, b)
}

// fuzzSameJSON reports whether a and b hold the same JSON value (numbers
// compared by their text).
func fuzzSameJSON(a, b json.RawMessage) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	decode := func(m json.RawMessage) (any, bool) {
		dec := json.NewDecoder(bytes.NewReader(m))
		dec.UseNumber()
		var v any
		return v, dec.Decode(&v) == nil
	}
	va, oka := decode(a)
	vb, okb := decode(b)
	return oka && okb && reflect.DeepEqual(va, vb)
}

// fuzzHeaderKeyOK is nats.go's rule for a header key it publishes
// (isHeaderKeyValid): printable ASCII but `"(),/:;<=>?@[\]{}`.
func fuzzHeaderKeyOK(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < 33 || c > 126 || strings.IndexByte(`"()/,:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// fuzzCheckDeadLetter checks NewDeadLetterMsg(orig, inv, seq): always
// publishable (every key sendable, headers under 64 KiB, at most
// MaxDeadLetterBytes in all), on the DLQ subject of inv's tokens, with a
// one-line bounded reason, the id when usable, and a prefix of the body.
func fuzzCheckDeadLetter(t *testing.T, orig *nats.Msg, inv *events.InvalidCommand, seq uint64) {
	t.Helper()
	m := events.NewDeadLetterMsg(orig, inv, seq)
	for k := range m.Header {
		if !fuzzHeaderKeyOK(k) {
			t.Fatalf("DLQ copy has header key %.100q that nats.go cannot publish", k)
		}
	}
	hdrSize := m.Size() - len(m.Subject) - len(m.Reply) - len(m.Data)
	if wire := m.Size() - len(m.Subject) - len(m.Reply); wire > events.MaxDeadLetterBytes {
		t.Errorf("DLQ copy is %d bytes on the wire, want at most %d", wire, events.MaxDeadLetterBytes)
	}
	if hdrSize >= 64<<10 {
		t.Errorf("DLQ copy headers are %d bytes, JetStream refuses 64 KiB", hdrSize)
	}
	if m.Subject != events.DLQSubject(inv.Tenant, inv.Campaign) || !fuzzDLQSubjectRE.MatchString(m.Subject) || !server.IsValidLiteralSubject(m.Subject) {
		t.Errorf("DLQ subject %.200q for tokens %.100q/%.100q", m.Subject, inv.Tenant, inv.Campaign)
	}
	if events.ValidToken(inv.Tenant) && events.ValidToken(inv.Campaign) && m.Subject != "campaign.dlq."+inv.Tenant+"."+inv.Campaign {
		t.Errorf("DLQ subject %q, want the tokens %s/%s", m.Subject, inv.Tenant, inv.Campaign)
	}
	switch vs := m.Header.Values(events.HdrReason); {
	case len(vs) != 1:
		t.Errorf("DLQ copy has %d Reason values", len(vs))
	case len(vs[0]) > events.MaxReasonBytes || !utf8.ValidString(vs[0]) || strings.ContainsAny(vs[0], "\r\n"):
		t.Errorf("DLQ Reason of %d bytes, valid UTF-8 %t, one line %t", len(vs[0]), utf8.ValidString(vs[0]), !strings.ContainsAny(vs[0], "\r\n"))
	case len(inv.Reason) <= events.MaxReasonBytes && utf8.ValidString(inv.Reason) && !strings.ContainsAny(inv.Reason, "\r\n") && vs[0] != inv.Reason:
		t.Errorf("DLQ Reason %q, want %q unchanged", vs[0], inv.Reason)
	}
	wantID := ""
	if inv.ID != "" && len(inv.ID) <= events.MaxCommandIDBytes && !strings.ContainsAny(inv.ID, "\r\n") {
		wantID = inv.ID
	}
	if got := m.Header.Get(events.HdrCommandID); got != wantID {
		t.Errorf("DLQ Command-Id %.100q, want %.100q", got, wantID)
	}
	if got, want := m.Header.Get(events.HdrOriginalSequence), strconv.FormatUint(seq, 10); seq > 0 && got != want {
		t.Errorf("DLQ Original-Sequence %q, want %q", got, want)
	}
	if !bytes.HasPrefix(orig.Data, m.Data) {
		t.Errorf("DLQ body (%d bytes) is not a prefix of the command's (%d bytes)", len(m.Data), len(orig.Data))
	}
	if n := m.Header.Get(events.HdrBodyTruncated); (n != "") != (len(m.Data) < len(orig.Data)) || n != "" && n != strconv.Itoa(len(orig.Data)) {
		t.Errorf("DLQ Body-Truncated %q with %d of %d bytes", n, len(m.Data), len(orig.Data))
	}
	for k := range m.Header {
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			t.Errorf("DLQ copy carries the reserved header %q", k)
		}
	}
}

// FuzzParseSubject: the command subject parsing, reached through
// DecodeCommand with a body that agrees with the subject's tokens, accepts
// exactly the subjects of CONTRACT section 2; the subject helpers build, for
// those tokens, subjects that parse back and filters that match only them.
func FuzzParseSubject(f *testing.F) {
	for _, hostile := range fuzzHostiles() {
		f.Add("campaign.cmd." + hostile + ".c1.start")
		f.Add("campaign.cmd.acme." + strings.Repeat("c", len(hostile)/4) + ".start")
	}
	f.Fuzz(func(t *testing.T, subject string) {
		rest := strings.TrimPrefix(subject, fuzzCmdPrefix)
		toks := strings.SplitN(rest, ".", 3)
		for len(toks) < 3 {
			toks = append(toks, "")
		}
		tenant, campaign, verb := toks[0], toks[1], toks[2]
		payload := ""
		switch fsm.Verb(verb) {
		case fsm.Create:
			payload = `{"name":"n"}`
		case fsm.Advance:
			payload = `{"step":0,"run":1,"version":1}`
		}
		body := fuzzEnvelope("01SUBJ", verb, tenant, campaign, payload)
		cmd, err := events.DecodeCommand(subject, nats.Header{}, body, testWorkflows)
		want := fuzzCommandSubjectRE.MatchString(subject)
		if (err == nil) != want {
			t.Fatalf("subject %.200q: DecodeCommand err = %.300v, want accepted = %t", subject, err, want)
		}
		if err != nil {
			var inv *events.InvalidCommand
			if !errors.As(err, &inv) || inv.Reason == "" || len(inv.Reason) > events.MaxReasonBytes || !utf8.ValidString(inv.Reason) {
				t.Fatalf("subject %.200q: rejection %.300v", subject, err)
			}
			if dlq := events.DLQSubject(inv.Tenant, inv.Campaign); !fuzzDLQSubjectRE.MatchString(dlq) {
				t.Fatalf("DLQ subject %q", dlq)
			}
			return
		}
		if cmd.Tenant != tenant || cmd.Campaign != campaign || string(cmd.Verb) != verb {
			t.Fatalf("parsed %s/%s %s from %q", cmd.Tenant, cmd.Campaign, cmd.Verb, subject)
		}
		if got := events.CommandSubject(tenant, campaign, cmd.Verb); got != subject {
			t.Fatalf("CommandSubject = %q, want %q", got, subject)
		}
		if !server.IsValidLiteralSubject(subject) ||
			!server.SubjectMatchesFilter(subject, "campaign.cmd.>") ||
			!server.SubjectMatchesFilter(subject, events.CampaignCommands(tenant, campaign)) {
			t.Fatalf("subject %q is not a literal matched by the command filters", subject)
		}
		if got := events.DLQSubject(tenant, campaign); got != "campaign.dlq."+tenant+"."+campaign {
			t.Fatalf("DLQSubject = %q", got)
		}
		// Another campaign of the tenant, and the same campaign id under
		// another tenant: their filters never match this campaign's subjects.
		other := campaign + "x"
		if len(other) > 64 {
			other = "x" + campaign[1:]
		}
		if server.SubjectMatchesFilter(subject, events.CampaignCommands(tenant, other)) ||
			server.SubjectMatchesFilter(subject, events.CampaignCommands(other, campaign)) {
			t.Fatalf("subject %q matches another campaign's filter", subject)
		}
		for _, typ := range []string{fsm.EvCreated, fsm.EvStepSucceeded, fsm.EvRejected} {
			evt := events.EventSubject(tenant, campaign, typ)
			if !server.IsValidLiteralSubject(evt) || !server.SubjectMatchesFilter(evt, events.CampaignEvents(tenant, campaign)) ||
				server.SubjectMatchesFilter(evt, events.CampaignEvents(tenant, other)) || server.SubjectMatchesFilter(evt, events.CampaignEvents(other, campaign)) {
				t.Fatalf("event subject %q and the campaign filters disagree", evt)
			}
			if want := "campaign.evt." + tenant + "." + campaign + "." + strings.TrimPrefix(typ, "campaign."); evt != want {
				t.Fatalf("EventSubject = %q, want %q", evt, want)
			}
		}
		if id := events.EventID(tenant, campaign, 42); id != tenant+"."+campaign+".42" {
			t.Fatalf("EventID = %q", id)
		}
	})
}

// FuzzNewDeadLetterMsg: the DLQ copy of any message, with any
// InvalidCommand (one built elsewhere included), many headers and a body of
// any size (grow repeats it, to over a megabyte), is always publishable and
// bounded.
func FuzzNewDeadLetterMsg(f *testing.F) {
	f.Add("campaign.cmd.acme.c1.start", "X-Long", strings.Repeat("h", 4097), uint16(9), []byte("b"), uint16(0),
		"01CMD", "acme", "c1", strings.Repeat("r", 1025), uint64(9))
	for _, hostile := range fuzzHostiles() {
		f.Add("campaign.cmd.acme.c1.start", "X-Bad-Utf8", hostile, uint16(20), []byte(hostile), uint16(3),
			hostile, hostile, "a.>", hostile, uint64(0))
	}
	if fuzzAddHuge() {
		f.Add("campaign.cmd.acme.c1.start", "X-Huge", strings.Repeat("h", 900_000), uint16(1), []byte("b"), uint16(0),
			"01CMD", "acme", "c1", fuzzHostile, uint64(9))
	}
	f.Fuzz(func(t *testing.T, subject, hkey, hval string, nhdr uint16, body []byte, grow uint16,
		id, tenant, campaign, reason string, seq uint64) {
		orig := nats.NewMsg(subject)
		n := int(nhdr % 3000)
		for i := range n {
			k := hkey
			if i > 0 {
				k = hkey + "-" + strconv.Itoa(i)
			}
			orig.Header.Add(k, hval)
		}
		orig.Header.Set(jetstream.MsgIDHeader, id)
		orig.Header.Set(events.HdrReason, "forged")
		if g := int(grow % 8); g > 0 && len(body) > 0 {
			// Up to 2.5 MiB, so the body cut is exercised.
			reps := min(1+g*(1<<18)/len(body), (5<<19)/len(body)+1)
			body = bytes.Repeat(body, reps)
		}
		orig.Data = body
		inv := &events.InvalidCommand{ID: id, Tenant: tenant, Campaign: campaign, Verb: "start", Reason: reason}
		fuzzCheckDeadLetter(t, orig, inv, seq)
		if msg := inv.Error(); len(msg) > 2*events.MaxReasonBytes || !utf8.ValidString(msg) {
			t.Errorf("InvalidCommand.Error() is %d bytes (valid UTF-8: %t)", len(msg), utf8.ValidString(msg))
		}
		m := events.NewDeadLetterMsg(orig, inv, seq)
		if got := m.Header.Get(events.HdrReason); got == "forged" && reason != "forged" {
			t.Errorf("the command's own Reason header was copied")
		}
		if tp := orig.Header.Get(events.HdrTraceparent); tp != "" && len(tp) <= 4096 && m.Header.Get(events.HdrTraceparent) != tp {
			t.Errorf("traceparent %q not copied first", tp)
		}
	})
}
