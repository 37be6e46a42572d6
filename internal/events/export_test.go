package events

// LeaderMsgGet exposes the leader-only read of NextCommandLinearizable (on
// one server, every stream has a single replica and the exported function
// takes the direct get).
var LeaderMsgGet = leaderMsgGet

// DecodeOutboxForTest decodes an outbox entry.
var DecodeOutboxForTest = decodeOutbox
