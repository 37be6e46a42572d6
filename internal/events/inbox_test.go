package events_test

import (
	"reflect"
	"testing"

	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

// TestInboxItemCodec: the inbox's format round-trips, keeps the field names
// that items already stored in Redis use, and gives back the command message.
func TestInboxItemCodec(t *testing.T) {
	it := events.InboxItem{Subject: "campaign.cmd.acme.c.pause", ID: "01J", Body: []byte(`{"id":"01J"}`),
		Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Invalid: "bad", Verb: "pause"}
	b, err := events.EncodeInbox(it)
	if err != nil {
		t.Fatal(err)
	}
	const stored = `{"subject":"campaign.cmd.acme.c.pause","id":"01J","body":"eyJpZCI6IjAxSiJ9","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","invalid":"bad","verb":"pause"}`
	if string(b) != stored {
		t.Errorf("EncodeInbox = %s\nwant %s", b, stored)
	}
	got, err := events.DecodeInbox([]byte(stored))
	if err != nil || !reflect.DeepEqual(got, it) {
		t.Errorf("DecodeInbox = %+v, %v; want %+v", got, err, it)
	}
	m := got.Msg()
	if m.Subject != it.Subject || string(m.Data) != string(it.Body) || m.Header.Get("Nats-Msg-Id") != "01J" || m.Header.Get("traceparent") != it.Traceparent {
		t.Errorf("Msg = %+v", m)
	}
	if h := (events.InboxItem{ID: "x"}).Header(); len(h.Values("traceparent")) != 0 {
		t.Errorf("a traceparent header without one: %v", h)
	}
	if _, err := events.DecodeInbox([]byte("{")); err == nil {
		t.Error("DecodeInbox of bad JSON: no error")
	}
}
