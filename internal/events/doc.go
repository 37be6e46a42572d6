// Package events owns everything of the orchestrator that is on the wire in
// NATS: subjects and their tokens, the command and CloudEvents envelopes,
// stream and consumer provisioning from streams/*.json, publishing events
// exactly once per sequence, dead letters, and reading a campaign's history
// and pending commands back from JetStream.
//
// Whatever it repeats of a message anyone may publish (a reason, a DLQ copy)
// is bounded: see MaxReasonBytes, QuoteBounded and MaxDeadLetterBytes.
//
// It returns errors and never logs; it does not know the store or HTTP.
package events
