// Package deadletter owns what happens to a command after it was
// dead-lettered, and to commands that never will be processed:
//
//   - reading CAMPAIGN_DLQ (List, Get) for `orchestrator dlq list`;
//   - replaying a dead letter to its original command subject with its
//     command id (Replay), for `orchestrator dlq replay`;
//   - turning poison messages, commands that reached the consumer's
//     max_deliver, into exactly one DLQ entry each and removing them from the
//     CAMPAIGN_COMMANDS work queue (Reaper, run by `orchestrator serve`).
//
// It talks to NATS only: it does not know the store, so a replayed command is
// applied once by the worker's ledger, not by anything here. Building the
// DLQ copy, subjects and header names belong to internal/events. List, Get
// and Replay return errors and never log; the Reaper, a long-running part of
// the service, logs what it does.
package deadletter
