package httpapi_test

// Fuzz targets of the JSON bodies of the command endpoints (issue 9, part
// 3), driven through the real handler: one ingress per fuzzing process (an
// embedded NATS server with the streams applied, the in-process store),
// built once outside f.Fuzz with the helpers of helpers_test.go. Seed
// corpora are in testdata/fuzz/<Name>/; the bodies too large for a corpus
// file (400 KB of 0xff in a field, a body over the limit) are added with
// f.Add in a plain `go test` only (see fuzzAddHuge).

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
	"github.com/campaign-orchestrator/orchestrator/internal/httpapi"
	"github.com/campaign-orchestrator/orchestrator/internal/store"
)

// Flag bits of the fuzz targets' flags argument.
const (
	fuzzNoTenantHeader = 1 << 0 // no X-Tenant-ID: the body's tenant_id is the tenant
	fuzzContentType    = 3 << 1 // two bits: which Content-Type (fuzzContentTypes)
	fuzzKeyed          = 1 << 3 // an Idempotency-Key, and the request sent twice
	fuzzCampaignSel    = 3 << 4 // two bits, verbs only: which campaign (fuzzCampaigns)
)

var fuzzContentTypes = []string{"application/json", "application/json; charset=utf-8", "", "text/plain"}

// fuzzCampaigns are the campaign path segments of the verb target: the
// seeded campaign, an unknown one, an invalid id.
var fuzzCampaigns = []string{"c1", "nope", "bad!id", "c1"}

// fuzzVerbs are the {verb} path segments of the verb target.
var fuzzVerbs = []string{"start", "pause", "resume", "cancel", "retry", "create", "advance", "explode"}

// fuzzKeys makes Idempotency-Keys unique within the process and across
// processes.
var fuzzKeys atomic.Uint64

// fuzzAddHuge reports whether to add the seeds of hundreds of kilobytes:
// in a plain `go test`, not while fuzzing (the mutator grows them and the
// run stalls).
func fuzzAddHuge() bool {
	fl := flag.Lookup("test.fuzz")
	return fl == nil || fl.Value.String() == ""
}

// fuzzServer starts the ingress the target's inputs are sent to: an embedded
// NATS server and the in-process store, with campaign acme/c1 seeded.
func fuzzServer(f *testing.F) *env {
	st := store.NewMemory(store.Options{})
	f.Cleanup(func() { _ = st.Close() })
	e := newEnv(f, st)
	seed(f, st, "acme", "c1", fsm.Running)
	return e
}

// fuzzRequest sends one request as the fuzz input says; it returns the
// answer and the tenant the request is for ("" when none can be told).
func fuzzRequest(t *testing.T, base *env, path string, body []byte, flags uint8, key string) resp {
	e := *base
	e.t = t
	hdr := []string{"Content-Type", fuzzContentTypes[int(flags&fuzzContentType)>>1]}
	if flags&fuzzNoTenantHeader == 0 {
		hdr = append(hdr, httpapi.HeaderTenant, "acme")
	}
	if key != "" {
		hdr = append(hdr, httpapi.HeaderIdempotencyKey, key)
	}
	return e.do("POST", path, body, hdr...)
}

// fuzzCheckAnswer checks what every answer to a command request must be:
// 202, or a 4xx with a JSON error that names the field at fault in a
// bounded message. It returns the 202's campaign and command ids.
func fuzzCheckAnswer(t *testing.T, r resp) (campaignID, commandID string) {
	t.Helper()
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("answer %d with Content-Type %q: %.300s", r.status, ct, r.body)
	}
	if r.status == http.StatusAccepted {
		var a struct {
			CampaignID *string `json:"campaign_id"`
			CommandID  *string `json:"command_id"`
			Status     string  `json:"status"`
		}
		if err := json.Unmarshal(r.body, &a); err != nil || a.CampaignID == nil || a.CommandID == nil || a.Status != "accepted" {
			t.Fatalf(`202 body %.300s, want {"campaign_id","command_id","status":"accepted"}`, r.body)
		}
		if !events.ValidToken(*a.CampaignID) || *a.CommandID == "" || len(*a.CommandID) > events.MaxCommandIDBytes {
			t.Fatalf("202 with campaign_id %q, command_id %q", *a.CampaignID, *a.CommandID)
		}
		return *a.CampaignID, *a.CommandID
	}
	if r.status < 400 || r.status > 499 {
		t.Fatalf("answer %d to a client's body, want 202 or a 4xx: %.500s", r.status, r.body)
	}
	var eb struct {
		Error *struct {
			Code    string  `json:"code"`
			Message string  `json:"message"`
			Field   *string `json:"field"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.body, &eb); err != nil || eb.Error == nil {
		t.Fatalf("error answer %d is not {\"error\":{…}}: %.300s", r.status, r.body)
	}
	e := eb.Error
	switch {
	case e.Code == "" || e.Message == "":
		t.Fatalf("error answer %d without code or message: %.300s", r.status, r.body)
	case len(e.Message) > 1024 || !utf8.ValidString(e.Message):
		t.Fatalf("error message of %d bytes (valid UTF-8: %t), want at most 1 KiB", len(e.Message), utf8.ValidString(e.Message))
	case r.status == http.StatusRequestEntityTooLarge && e.Code == string(httpapi.CodeTooLarge):
		// The body as a whole is too large: no field to name.
	case e.Field == nil || *e.Field == "":
		t.Fatalf("error answer %d names no field: %.300s", r.status, r.body)
	case len(*e.Field) > events.MaxQuotedBytes+16 || !utf8.ValidString(*e.Field):
		t.Fatalf("error field of %d bytes", len(*e.Field))
	case !strings.HasPrefix(e.Message, *e.Field+": "):
		t.Fatalf("error message %q does not name its field %q", e.Message, *e.Field)
	}
	return "", ""
}

// fuzzStored returns the command the ingress stored last on subject, decoded
// as the worker decodes it: whatever the ingress accepted, the worker must
// take.
func fuzzStored(t *testing.T, e *env, subject, commandID string) fsm.Command {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, events.StreamCommands)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		t.Fatalf("202 but nothing stored on %s: %v", subject, err)
	}
	cmd, err := events.DecodeCommand(m.Subject, m.Header, m.Data, workflows)
	if err != nil {
		t.Fatalf("the ingress accepted a command the worker rejects: %v\nbody %.500s", err, m.Data)
	}
	if cmd.ID != commandID {
		t.Fatalf("stored command %q, the 202 says %q", cmd.ID, commandID)
	}
	return cmd
}

// fuzzReplay sends a keyed request again: the same answer comes back, marked
// replayed when it was a 202.
func fuzzReplay(t *testing.T, e *env, path string, body []byte, flags uint8, key string, first resp) {
	t.Helper()
	again := fuzzRequest(t, e, path, body, flags, key)
	if again.status != first.status || !bytes.Equal(again.body, first.body) {
		t.Fatalf("repeat with the same Idempotency-Key: %d %.300s, first %d %.300s", again.status, again.body, first.status, first.body)
	}
	if first.status == http.StatusAccepted && again.header.Get(httpapi.HeaderReplayed) != "true" {
		t.Fatalf("repeat of a 202 without %s: true", httpapi.HeaderReplayed)
	}
}

// fuzzTenant is the tenant a request is for, when it can be told: the
// X-Tenant-ID header, else the body's tenant_id.
func fuzzTenant(body []byte, flags uint8) string {
	if flags&fuzzNoTenantHeader == 0 {
		return "acme"
	}
	var v struct {
		TenantID string `json:"tenant_id"`
	}
	_ = json.Unmarshal(body, &v)
	return v.TenantID
}

// fuzzKey returns a new Idempotency-Key when the flags ask for one.
func fuzzKey(flags uint8) string {
	if flags&fuzzKeyed == 0 {
		return ""
	}
	return fmt.Sprintf("fuzz-%d-%d", time.Now().UnixNano(), fuzzKeys.Add(1))
}

// FuzzCreateCampaignBody: POST /api/v1/campaigns with any body answers 202
// or a 4xx naming the field, never a 5xx, never panics; a 202's command is
// stored, is what the body asked for, and is valid for the worker; a keyed
// repeat gets the same answer.
func FuzzCreateCampaignBody(f *testing.F) {
	e := fuzzServer(f)
	f.Add([]byte(`{"campaign_id":"spring","name":"Spring","workflow":"quick","params":{"a":1},"start":true}`), uint8(0))
	if fuzzAddHuge() {
		hostile := strings.Repeat("\xff", 400_000)
		f.Add([]byte(`{"name":"`+hostile+`"}`), uint8(0))
		f.Add([]byte(`{"name":"n","workflow":"`+hostile+`"}`), uint8(fuzzKeyed))
		f.Add([]byte(`{"name":"n","`+hostile+`":1}`), uint8(0))
		f.Add([]byte(`{"name":"n","campaign_id":"`+hostile+`"}`), uint8(0))
		f.Add([]byte(`{"name":"n","tenant_id":"`+hostile+`"}`), uint8(fuzzNoTenantHeader))
		f.Add([]byte(`{"name":"n","params":{"big":"`+strings.Repeat("p", 600_000)+`"}}`), uint8(fuzzKeyed))
		f.Add([]byte(`{"name":"n","params":{"big":"`+strings.Repeat("p", 1<<20)+`"}}`), uint8(0))
	}
	f.Fuzz(func(t *testing.T, body []byte, flags uint8) {
		key := fuzzKey(flags)
		const path = "/api/v1/campaigns"
		r := fuzzRequest(t, e, path, body, flags, key)
		id, cmdID := fuzzCheckAnswer(t, r)
		if key != "" {
			fuzzReplay(t, e, path, body, flags, key, r)
		}
		if r.status != http.StatusAccepted {
			return
		}
		var req struct {
			CampaignID *string         `json:"campaign_id"`
			Name       string          `json:"name"`
			Workflow   string          `json:"workflow"`
			Params     json.RawMessage `json:"params"`
			Start      bool            `json:"start"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			t.Fatalf("202 for a body that is not JSON: %v", err)
		}
		if req.CampaignID != nil && *req.CampaignID != id {
			t.Fatalf("202 for campaign %q, the body names %q", id, *req.CampaignID)
		}
		tenant := fuzzTenant(body, flags)
		cmd := fuzzStored(t, e, events.CommandSubject(tenant, id, fsm.Create), cmdID)
		if req.Workflow == "" {
			req.Workflow = fsm.DefaultWorkflow
		}
		if cmd.Tenant != tenant || cmd.Campaign != id || cmd.Create == nil ||
			cmd.Create.Name != req.Name || cmd.Create.Workflow != req.Workflow || cmd.Create.Start != req.Start {
			t.Fatalf("stored create %+v %+v, the body asked for %+v", cmd, cmd.Create, req)
		}
		if p := bytes.TrimSpace(req.Params); len(p) > 0 && string(p) != "null" {
			if !fuzzSameJSON(p, cmd.Create.Params) {
				t.Fatalf("stored params %.200s, the body's %.200s", cmd.Create.Params, p)
			}
		} else if cmd.Create.Params != nil {
			t.Fatalf("stored params %.200s for none", cmd.Create.Params)
		}
	})
}

// FuzzCampaignVerbBody: POST /api/v1/campaigns/{id}/{verb} with any body
// (empty allowed) answers 202 or a 4xx naming the field, never a 5xx; a
// 202's command is stored and valid for the worker; a keyed repeat gets the
// same answer.
func FuzzCampaignVerbBody(f *testing.F) {
	e := fuzzServer(f)
	f.Add(uint8(0), []byte(``), uint8(0))
	if fuzzAddHuge() {
		hostile := strings.Repeat("\xff", 400_000)
		f.Add(uint8(3), []byte(`{"tenant_id":"`+hostile+`"}`), uint8(0))
		f.Add(uint8(3), []byte(`{"`+hostile+`":1}`), uint8(fuzzKeyed))
		f.Add(uint8(1), bytes.Repeat([]byte(" "), 1<<20+1), uint8(0))
	}
	f.Fuzz(func(t *testing.T, verbSel uint8, body []byte, flags uint8) {
		verb := fuzzVerbs[int(verbSel)%len(fuzzVerbs)]
		campaign := fuzzCampaigns[int(flags&fuzzCampaignSel)>>4]
		path := "/api/v1/campaigns/" + campaign + "/" + verb
		key := fuzzKey(flags)
		r := fuzzRequest(t, e, path, body, flags, key)
		_, cmdID := fuzzCheckAnswer(t, r)
		if key != "" {
			fuzzReplay(t, e, path, body, flags, key, r)
		}
		if r.status != http.StatusAccepted {
			return
		}
		tenant := fuzzTenant(body, flags)
		if tenant != "acme" || campaign != "c1" {
			t.Fatalf("202 for %s/%s: only acme/c1 exists", tenant, campaign)
		}
		cmd := fuzzStored(t, e, events.CommandSubject(tenant, campaign, fsm.Verb(verb)), cmdID)
		want := fsm.Command{ID: cmdID, Verb: fsm.Verb(verb), Tenant: tenant, Campaign: campaign}
		if !reflect.DeepEqual(cmd, want) {
			t.Fatalf("stored %+v, want %+v", cmd, want)
		}
	})
}

// fuzzSameJSON reports whether a and b hold the same JSON value (numbers
// compared by their text).
func fuzzSameJSON(a, b []byte) bool {
	decode := func(m []byte) (any, bool) {
		dec := json.NewDecoder(bytes.NewReader(m))
		dec.UseNumber()
		var v any
		return v, dec.Decode(&v) == nil
	}
	va, oka := decode(a)
	vb, okb := decode(b)
	return oka && okb && reflect.DeepEqual(va, vb)
}
