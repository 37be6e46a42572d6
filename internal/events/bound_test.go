package events_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// hostile is 400,000 bytes of 0xff: invalid UTF-8 that %q would blow up to
// 1.6 MB (\xff) and that encoding/json decodes to 1.2 MB of U+FFFD.
var hostile = strings.Repeat("\xff", 400_000)

// checkBoundedReason fails unless inv's reason is bounded, valid UTF-8 and
// still names what was wrong.
func checkBoundedReason(t *testing.T, err error, want ...string) *events.InvalidCommand {
	t.Helper()
	var inv *events.InvalidCommand
	if !errors.As(err, &inv) {
		t.Fatalf("err = %.200v (%T), want *InvalidCommand", err, err)
	}
	if n := len(inv.Reason); n > events.MaxReasonBytes {
		t.Errorf("Reason is %d bytes, want at most %d: %.300q…", n, events.MaxReasonBytes, inv.Reason)
	}
	if !utf8.ValidString(inv.Reason) {
		t.Errorf("Reason is not valid UTF-8: %.300q…", inv.Reason)
	}
	for _, w := range want {
		if !strings.Contains(inv.Reason, w) {
			t.Errorf("Reason = %.400q, want it to say %q", inv.Reason, w)
		}
	}
	if msg := err.Error(); len(msg) > 2*events.MaxReasonBytes || !utf8.ValidString(msg) {
		t.Errorf("Error() is %d bytes (valid UTF-8: %v), want a bounded, valid message", len(msg), utf8.ValidString(msg))
	}
	for _, f := range []string{inv.ID, inv.Tenant, inv.Campaign, inv.Verb} {
		if len(f) > 256 {
			t.Errorf("InvalidCommand field of %d bytes: %.100q…", len(f), f)
		}
	}
	return inv
}

func TestDecodeCommandBoundsReason(t *testing.T) {
	const subj = "campaign.cmd.acme.spring.start"
	const create = "campaign.cmd.acme.spring.create"
	idHdr := hdr("Nats-Msg-Id", "01HDR")
	longText := strings.Repeat("n", 400_000) // valid UTF-8
	tests := []struct {
		name    string
		subject string
		header  nats.Header
		body    string
		want    []string // substrings of the reason
		wantID  string   // InvalidCommand.ID
	}{
		{name: "huge invalid type", subject: subj, header: idHdr,
			body: `{"type":"` + hostile + `","tenant_id":"acme","campaign_id":"spring"}`,
			want: []string{"type ", "does not match the subject's verb", `"start"`, "(1200000 bytes)"}, wantID: "01HDR"},
		{name: "huge valid type", subject: subj, header: idHdr,
			body: `{"type":"` + longText + `","tenant_id":"acme","campaign_id":"spring"}`,
			want: []string{`type "nnn`, "(400000 bytes)", "does not match"}, wantID: "01HDR"},
		{name: "huge tenant_id", subject: subj, header: idHdr,
			body: `{"type":"start","tenant_id":"` + hostile + `","campaign_id":"spring"}`,
			want: []string{"tenant_id ", "does not match the subject's tenant", `"acme"`}, wantID: "01HDR"},
		{name: "huge campaign_id", subject: subj, header: idHdr,
			body: `{"type":"start","tenant_id":"acme","campaign_id":"` + hostile + `"}`,
			want: []string{"campaign_id ", "does not match the subject's campaign", `"spring"`}, wantID: "01HDR"},
		{name: "huge unknown field name", subject: subj, header: idHdr,
			body: `{"type":"start","tenant_id":"acme","campaign_id":"spring","` + hostile + `":1}`,
			want: []string{"unknown field "}, wantID: "01HDR"},
		{name: "huge valid unknown field name", subject: subj, header: idHdr,
			body: `{"type":"start","tenant_id":"acme","campaign_id":"spring","` + longText + `":1}`,
			want: []string{`unknown field "nnn`, "(400000 bytes)"}, wantID: "01HDR"},
		{name: "huge unknown field in create payload", subject: create, header: idHdr,
			body: `{"type":"create","tenant_id":"acme","campaign_id":"spring","payload":{"name":"n","` + hostile + `":1}}`,
			want: []string{"create: unknown field ", " in payload"}, wantID: "01HDR"},
		{name: "huge workflow name", subject: create, header: idHdr,
			body: `{"type":"create","tenant_id":"acme","campaign_id":"spring","payload":{"name":"n","workflow":"` + hostile + `"}}`,
			want: []string{"unknown workflow "}, wantID: "01HDR"},
		{name: "huge name and unknown workflow", subject: create, header: idHdr,
			body: `{"type":"create","tenant_id":"acme","campaign_id":"spring","payload":{"name":"` + longText + `","workflow":"nope"}}`,
			want: []string{`payload name is 400000 characters`}, wantID: "01HDR"},
		{name: "huge number in advance payload", subject: "campaign.cmd.acme.spring.advance", header: idHdr,
			body: `{"type":"advance","tenant_id":"acme","campaign_id":"spring","payload":{"step":0,"run":1,"version":` + strings.Repeat("9", 400_000) + `}}`,
			want: []string{"advance: bad JSON in payload", "version", "uint64"}, wantID: "01HDR"},
		{name: "huge issued_at", subject: subj, header: idHdr,
			body: `{"type":"start","tenant_id":"acme","campaign_id":"spring","issued_at":"` + hostile + `"}`,
			want: []string{"bad JSON", "issued_at"}, wantID: "01HDR"},
		{name: "huge invalid campaign token", subject: "campaign.cmd.acme." + hostile + ".start", header: idHdr, body: `{}`,
			want: []string{"invalid campaign token ", "(400000 bytes)", "(want "}, wantID: "01HDR"},
		{name: "huge tenant and campaign tokens", subject: "campaign.cmd." + hostile + "." + hostile + ".start", header: idHdr, body: `{}`,
			want: []string{"invalid tenant token ", "invalid campaign token ", "(want "}, wantID: "01HDR"},
		{name: "huge verb token", subject: "campaign.cmd.acme.spring." + hostile, header: idHdr,
			body: `{"type":"start","tenant_id":"acme","campaign_id":"spring"}`,
			want: []string{"unknown verb ", "(400000 bytes)"}, wantID: "01HDR"},
		{name: "huge subject", subject: "campaign.cmd." + hostile, header: idHdr, body: `{}`,
			want: []string{"not a command subject", "campaign.cmd."}, wantID: "01HDR"},
		{name: "huge verb token and type", subject: "campaign.cmd.acme.spring." + hostile, header: idHdr,
			body: `{"type":"` + hostile + `","tenant_id":"acme","campaign_id":"spring"}`,
			want: []string{"unknown verb "}, wantID: "01HDR"},
		// An over-long id is no usable id: not repeated anywhere.
		{name: "huge Nats-Msg-Id", subject: subj, header: hdr("Nats-Msg-Id", hostile),
			body: `{"type":"start","tenant_id":"acme","campaign_id":"spring"}`,
			want: []string{"command id longer than 256 bytes"}},
		{name: "huge body id", subject: subj,
			body: `{"id":"` + hostile + `","type":"start","tenant_id":"acme","campaign_id":"spring"}`,
			want: []string{"command id longer than 256 bytes"}},
		{name: "huge Nats-Msg-Id and bad JSON", subject: subj, header: hdr("Nats-Msg-Id", hostile), body: `{"type":`,
			want: []string{"bad JSON"}},
		// An id that is not printable ASCII would change in the inbox's
		// JSON, and its redelivery would not be found in the ledger.
		{name: "Nats-Msg-Id not ASCII", subject: subj, header: hdr("Nats-Msg-Id", "bad-\xff-id"),
			body: `{"type":"start","tenant_id":"acme","campaign_id":"spring"}`,
			want: []string{"command id must be printable ASCII"}},
		{name: "body id with a control character", subject: subj,
			body: `{"id":"a\u0007b","type":"start","tenant_id":"acme","campaign_id":"spring"}`,
			want: []string{"command id must be printable ASCII"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := events.DecodeCommand(tt.subject, tt.header, []byte(tt.body), testWorkflows)
			inv := checkBoundedReason(t, err, tt.want...)
			if inv.ID != tt.wantID {
				t.Errorf("ID = %.100q, want %q", inv.ID, tt.wantID)
			}
			if strings.Contains(inv.Reason, "nnnnnnnnnn") && !strings.Contains(tt.name, "valid") {
				t.Errorf("Reason copies the create's name: %.300q", inv.Reason)
			}
		})
	}
}

// A create with a huge (valid) name decodes: the name is never quoted in a
// reason, and a huge name is not a reason to reject it.
func TestDecodeCommandHugeName(t *testing.T) {
	decode := func(name string) (fsm.Command, error) {
		body := `{"type":"create","tenant_id":"acme","campaign_id":"spring","payload":{"name":"` + name + `"}}`
		return events.DecodeCommand("campaign.cmd.acme.spring.create", hdr("Nats-Msg-Id", "01HDR"), []byte(body), testWorkflows)
	}
	// The longest name is valid (in characters, not bytes)...
	longest := strings.Repeat("é", events.MaxNameLength)
	cmd, err := decode(longest)
	if err != nil || cmd.Create == nil || cmd.Create.Name != longest {
		t.Fatalf("DecodeCommand of a %d-character name: %+v, %v", events.MaxNameLength, cmd.Create, err)
	}
	// ...a longer one is invalid, with a bounded reason that does not copy it.
	_, err = decode(strings.Repeat("n", 400_000))
	var inv *events.InvalidCommand
	if !errors.As(err, &inv) || len(inv.Reason) > events.MaxReasonBytes || !strings.Contains(inv.Reason, "name") || strings.Contains(inv.Reason, "nnnnnnnn") {
		t.Fatalf("DecodeCommand of a 400,000-character name: %.300v", err)
	}
}

// Whatever builds it, an InvalidCommand says at most MaxReasonBytes in its
// Error and its DLQ copy.
func TestInvalidCommandErrorBounded(t *testing.T) {
	inv := &events.InvalidCommand{ID: hostile, Tenant: hostile, Campaign: "c1", Verb: hostile, Reason: "why: " + hostile}
	if msg := inv.Error(); len(msg) > 2*events.MaxReasonBytes || !utf8.ValidString(msg) || !strings.Contains(msg, "why: ") {
		t.Errorf("Error() is %d bytes (valid UTF-8: %v): %.200q", len(msg), utf8.ValidString(msg), msg)
	}
	m := events.NewDeadLetterMsg(nats.NewMsg("campaign.cmd.acme.c1.start"), inv, 3)
	if r := m.Header.Get(events.HdrReason); len(r) > events.MaxReasonBytes || !utf8.ValidString(r) || !strings.HasPrefix(r, "why: ") {
		t.Errorf("Reason header is %d bytes: %.200q", len(r), r)
	}
	if m.Header.Get(events.HdrCommandID) != "" {
		t.Errorf("Command-Id header set from an over-long id")
	}
}

func TestQuoteBounded(t *testing.T) {
	tests := []struct {
		name, in   string
		wantPrefix string
		wantExact  bool // the result is strconv.Quote(in)
	}{
		{name: "empty", in: "", wantExact: true},
		{name: "short", in: "cancel", wantExact: true},
		{name: "short invalid", in: "a\xffb", wantExact: true},
		{name: "short newline", in: "a\nb", wantExact: true},
		{name: "long ascii", in: strings.Repeat("a", 10_000), wantPrefix: `"aaaa`},
		{name: "long invalid", in: hostile, wantPrefix: `"\xff\xff`},
		{name: "long multibyte", in: strings.Repeat("é", 5_000), wantPrefix: `"éé`},
		{name: "long 4-byte runes", in: strings.Repeat("😀", 5_000), wantPrefix: `"😀`},
		{name: "long control characters", in: strings.Repeat("\x01", 5_000), wantPrefix: `"\x01`},
		{name: "just over", in: strings.Repeat("a", events.MaxQuotedBytes-1), wantPrefix: `"aaa`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := events.QuoteBounded(tt.in)
			if len(got) > events.MaxQuotedBytes || !utf8.ValidString(got) {
				t.Errorf("QuoteBounded = %d bytes (valid UTF-8: %v), want at most %d: %q", len(got), utf8.ValidString(got), events.MaxQuotedBytes, got)
			}
			if tt.wantExact {
				if want := strconv.Quote(tt.in); got != want {
					t.Errorf("QuoteBounded = %s, want %s", got, want)
				}
				return
			}
			if !strings.HasPrefix(got, tt.wantPrefix) {
				t.Errorf("QuoteBounded = %s, want prefix %s", got, tt.wantPrefix)
			}
			if want := `…" (` + strconv.Itoa(len(tt.in)) + " bytes)"; !strings.HasSuffix(got, want) {
				t.Errorf("QuoteBounded = %s, want suffix %s", got, want)
			}
			// What is quoted is a prefix of the input.
			q := strings.TrimSuffix(got, `…" (`+strconv.Itoa(len(tt.in))+" bytes)") + `"`
			if u, err := strconv.Unquote(q); err != nil || !strings.HasPrefix(tt.in, u) || u == "" {
				t.Errorf("QuoteBounded = %s: quoted part %s is not a prefix (%v)", got, q, err)
			}
		})
	}
}

func TestBoundReason(t *testing.T) {
	for _, in := range []string{"", "short reason", "a\xffb", hostile, strings.Repeat("é", 1000), strings.Repeat("x", events.MaxReasonBytes), strings.Repeat("x", events.MaxReasonBytes+1), strings.Repeat("a\xff", events.MaxReasonBytes/2)} {
		got := events.BoundReason(in)
		if len(got) > events.MaxReasonBytes || !utf8.ValidString(got) {
			t.Errorf("BoundReason(%d bytes) = %d bytes (valid UTF-8: %v)", len(in), len(got), utf8.ValidString(got))
		}
		if utf8.ValidString(in) && len(in) <= events.MaxReasonBytes && got != in {
			t.Errorf("BoundReason(%q) = %q, want it unchanged", in, got)
		}
		if len(in) > events.MaxReasonBytes && !strings.HasSuffix(got, "("+strconv.Itoa(len(in))+" bytes)") {
			t.Errorf("BoundReason(%d bytes) = …%q, want the original length", len(in), got[max(0, len(got)-40):])
		}
	}
	if len(events.ReasonTooLarge) > 64 || !utf8.ValidString(events.ReasonTooLarge) {
		t.Errorf("ReasonTooLarge = %q", events.ReasonTooLarge)
	}
}

// wireSize is what the server counts against its max payload: the encoded
// headers and the body.
func wireSize(m *nats.Msg) int { return m.Size() - len(m.Subject) - len(m.Reply) }

func TestNewDeadLetterMsgBounded(t *testing.T) {
	body := []byte(strings.Repeat("b", 1<<20))
	orig := nats.NewMsg("campaign.cmd.acme.c1.start")
	orig.Header.Set("Nats-Msg-Id", "01CMD")
	orig.Header.Set("traceparent", "tp-1")
	orig.Header.Set("X-Huge", strings.Repeat("h", 900_000))
	orig.Header.Set("X-Bad-Utf8", hostile)
	orig.Header.Set("Bad Key", "a key nats.go refuses to publish")
	orig.Header.Set(strings.Repeat("K", 10_000), "a huge key")
	for i := range 2000 {
		orig.Header.Set("X-Many-"+strconv.Itoa(i), strings.Repeat("m", 200))
	}
	orig.Header.Set("body-truncated", "forged")
	orig.Data = body
	inv := &events.InvalidCommand{ID: "01CMD", Tenant: "acme", Campaign: "c1", Verb: "start", Reason: "reason"}

	m := events.NewDeadLetterMsg(orig, inv, 9)
	if n := wireSize(m); n > events.MaxDeadLetterBytes {
		t.Errorf("DLQ copy is %d bytes (headers and body), want at most %d", n, events.MaxDeadLetterBytes)
	}
	if got := m.Header.Get(events.HdrBodyTruncated); got != strconv.Itoa(len(body)) {
		t.Errorf("%s = %q, want %d", events.HdrBodyTruncated, got, len(body))
	}
	if got := m.Header.Get("body-truncated"); got != "" {
		t.Errorf("a forged body-truncated header was copied: %q", got)
	}
	if n, _ := strconv.Atoi(m.Header.Get(events.HdrHeadersTruncated)); n == 0 {
		t.Errorf("%s = %q, want the number of header values cut or left out", events.HdrHeadersTruncated, m.Header.Get(events.HdrHeadersTruncated))
	}
	if len(m.Data) == 0 || len(m.Data) >= len(body) || string(m.Data) != string(body[:len(m.Data)]) {
		t.Errorf("DLQ body is %d bytes, want a prefix of the original's %d", len(m.Data), len(body))
	}
	for k, vs := range m.Header {
		if len(k) > 256 || strings.ContainsAny(k, " :") {
			t.Errorf("header key %.50q… copied", k)
		}
		for _, v := range vs {
			if len(v) > 4096 {
				t.Errorf("header %s is %d bytes", k, len(v))
			}
		}
	}
	for h, want := range map[string]string{"traceparent": "tp-1", "Reason": "reason", "Original-Subject": orig.Subject, "Original-Sequence": "9", "Command-Id": "01CMD"} {
		if got := m.Header.Get(h); got != want {
			t.Errorf("header %s = %q, want %q", h, got, want)
		}
	}
	if got := m.Header.Get("X-Huge"); got == "" || !strings.HasPrefix(got, "hhhh") {
		t.Errorf("X-Huge = %.40q, want it cut, not dropped", got)
	}
	if !utf8.ValidString(m.Header.Get("X-Bad-Utf8")) {
		t.Errorf("X-Bad-Utf8 cut but not valid UTF-8")
	}

	// Publishable for real: the server's max payload is 1 MiB, and the
	// publisher adds Nats-Msg-Id and Nats-Expected-Stream; redeliveries
	// store one copy.
	js := mustJetStream(t)
	ctx := testCtx(t)
	for range 2 {
		if err := events.DeadLetter(ctx, js, orig, inv, 9); err != nil {
			t.Fatalf("DeadLetter of a 1 MiB command with huge headers: %v", err)
		}
	}
	dlq := mustStream(t, js, events.StreamDLQ)
	got, err := dlq.GetLastMsgForSubject(ctx, "campaign.dlq.acme.c1")
	if err != nil {
		t.Fatalf("read DLQ: %v", err)
	}
	if got.Header.Get(events.HdrBodyTruncated) != strconv.Itoa(len(body)) || got.Header.Get(jetstream.MsgIDHeader) != "dlq.id.acme.c1.01CMD" {
		t.Errorf("stored copy: %s = %q, Nats-Msg-Id = %q", events.HdrBodyTruncated, got.Header.Get(events.HdrBodyTruncated), got.Header.Get(jetstream.MsgIDHeader))
	}
	if info, err := dlq.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Errorf("DLQ holds %v messages (%v), want 1", info.State.Msgs, err)
	}
}

// A small command is copied as it is: same body, same headers, no
// truncation marks.
func TestNewDeadLetterMsgSmallUnchanged(t *testing.T) {
	orig := nats.NewMsg("campaign.cmd.acme.c1.start")
	orig.Header.Set("Nats-Msg-Id", "01CMD")
	orig.Header.Set("traceparent", "tp-1")
	orig.Header.Add("X-Multi", "a")
	orig.Header.Add("X-Multi", "b")
	orig.Header.Set("X-Bytes", "a\xffb") // short: copied byte for byte
	orig.Data = []byte(`{"type":"start"}`)
	m := events.NewDeadLetterMsg(orig, &events.InvalidCommand{ID: "01CMD", Tenant: "acme", Campaign: "c1", Reason: "r"}, 0)
	if string(m.Data) != string(orig.Data) {
		t.Errorf("body = %q", m.Data)
	}
	if m.Header.Get(events.HdrBodyTruncated) != "" || m.Header.Get(events.HdrHeadersTruncated) != "" || m.Header.Get("Nats-Msg-Id") != "" {
		t.Errorf("headers = %v", m.Header)
	}
	if got := m.Header.Values("X-Multi"); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("X-Multi = %q", got)
	}
	if m.Header.Get("X-Bytes") != "a\xffb" || m.Header.Get("traceparent") != "tp-1" {
		t.Errorf("headers = %v", m.Header)
	}
}

// rawPublish publishes with the NATS protocol itself, as any client may:
// nats.go refuses to send some header keys that it parses when it receives
// them.
func rawPublish(t *testing.T, url, subject, hdrBlock string, body []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "nats://"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil { // INFO
		t.Fatalf("read INFO: %v", err)
	}
	msg := fmt.Sprintf("CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"protocol\":1}\r\nHPUB %s %d %d\r\n%s%s\r\nPING\r\n",
		subject, len(hdrBlock), len(hdrBlock)+len(body), hdrBlock, body)
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "PONG") {
		t.Fatalf("publish: %q, %v", line, err)
	}
}

// A command as stored, with a header key nats.go cannot send and nearly
// JetStream's 64 KiB of headers, still gets its one DLQ copy.
func TestDeadLetterOfRawCommand(t *testing.T) {
	js := mustJetStream(t)
	ctx := testCtx(t)
	var hb strings.Builder
	hb.WriteString("NATS/1.0\r\nNats-Msg-Id: 01RAW\r\nBad Key: nats.go parses this, and refuses to send it\r\ntraceparent: tp-raw\r\n")
	for i := 0; hb.Len() < 60_000; i++ {
		fmt.Fprintf(&hb, "X-Pad-%d: %s\r\n", i, strings.Repeat("p", 1000))
	}
	hb.WriteString("\r\n")
	body := []byte(`{"type":"` + strings.Repeat("\xff", 400_000) + `","tenant_id":"acme","campaign_id":"c1"}`)
	rawPublish(t, js.Conn().ConnectedUrl(), "campaign.cmd.acme.c1.start", hb.String(), body)

	// The raw publish waits for no acknowledgement: wait until it is stored.
	var raw *jetstream.RawStreamMsg
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		raw, err = mustStream(t, js, events.StreamCommands).GetMsg(ctx, 1)
		if err == nil {
			break
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) || time.Now().After(deadline) {
			t.Fatalf("read the command: %v", err)
		}
	}
	if raw.Header.Get("Bad Key") == "" {
		t.Fatalf("the stored command has no %q header: %v", "Bad Key", raw.Header)
	}
	orig := &nats.Msg{Subject: raw.Subject, Header: raw.Header, Data: raw.Data}
	_, err = events.DecodeCommand(orig.Subject, orig.Header, orig.Data, testWorkflows)
	inv := checkBoundedReason(t, err, "type ", "does not match")
	for range 2 { // a redelivery: one copy
		if err := events.DeadLetter(ctx, js, orig, inv, raw.Sequence); err != nil {
			t.Fatalf("DeadLetter: %v", err)
		}
	}
	dlq := mustStream(t, js, events.StreamDLQ)
	got, err := dlq.GetLastMsgForSubject(ctx, "campaign.dlq.acme.c1")
	if err != nil {
		t.Fatalf("read DLQ: %v", err)
	}
	if string(got.Data) != string(raw.Data) || got.Header.Get("traceparent") != "tp-raw" || got.Header.Get(events.HdrReason) != inv.Reason ||
		got.Header.Get(events.HdrCommandID) != "01RAW" || got.Header.Get(events.HdrHeadersTruncated) == "" {
		t.Errorf("DLQ copy: %d bytes, headers traceparent=%q Reason=%.80q Command-Id=%q Headers-Truncated=%q", len(got.Data),
			got.Header.Get("traceparent"), got.Header.Get(events.HdrReason), got.Header.Get(events.HdrCommandID), got.Header.Get(events.HdrHeadersTruncated))
	}
	if info, err := dlq.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Errorf("DLQ holds %v messages (%v), want 1", info.State.Msgs, err)
	}
}
