package events

import (
	"bytes"
	"encoding/json"

	"github.com/nats-io/nats.go/jetstream"
)

// SameCommand reports whether stored (read back from CAMPAIGN_COMMANDS under
// a PubAck's sequence) is the command env makes on subject: same subject,
// same Nats-Msg-Id, and the same body once stored's issued_at is put in env
// (each attempt at publishing stamps its own). A PubAck that reports a
// duplicate only says that the stream has seen the id, on any subject.
func SameCommand(stored *jetstream.RawStreamMsg, env CommandEnvelope, subject string) bool {
	if stored.Subject != subject || stored.Header.Get(jetstream.MsgIDHeader) != env.ID {
		return false
	}
	var got CommandEnvelope
	if err := json.Unmarshal(stored.Data, &got); err != nil {
		return false
	}
	env.IssuedAt = got.IssuedAt
	return bytes.Equal(NewCommandMsg(env, "").Data, stored.Data)
}
