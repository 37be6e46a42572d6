package events

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// LeaderMsgGet exposes the leader-only read of NextCommandLinearizable (on
// one server, every stream has a single replica and the exported function
// takes the direct get): the first message on subject from sequence seq.
func LeaderMsgGet(ctx context.Context, js jetstream.JetStream, stream string, seq uint64, subject string) (*jetstream.RawStreamMsg, error) {
	return leaderMsgGet(ctx, js, stream, msgGet{Seq: seq, NextFor: subject})
}

// DecodeOutboxForTest decodes an outbox entry.
var DecodeOutboxForTest = decodeOutbox
