// Package client publishes commands to Campaign Orchestrator and follows
// campaigns' events, over NATS JetStream or over the HTTP API.
//
// Commands are typed values (Create, Start, Pause, Resume, Cancel, Retry).
// Client.Publish sends one on campaign.cmd.<tenant>.<campaign>.<verb> and
// returns once JetStream has stored it (the PubAck): a command is never
// reported sent before it is durable. Its id, the Nats-Msg-Id header by
// which JetStream and the campaign's ledger deduplicate it, is a new ULID or
// the caller's (WithID); publishing the same command again with the same id
// applies it once, and the Receipt says Duplicate.
//
// Client.Watch yields a campaign's events, CloudEvents 1.0 (the CNCF
// sdk-go event.Event, with the campaign's extensions), history first, then
// live, from any sequence; Client.Wait returns when a campaign reaches one
// of the given states. HTTPClient does the same over the ingress, for
// callers outside NATS: the commands (POST /api/v1/campaigns…) with
// Idempotency-Key and typed API errors (*APIError), Watch and Wait over its
// event stream (server-sent events, resumed with Last-Event-ID), and it
// reads campaigns back.
//
// The subjects, ids and validation are the service's own (this package
// builds and checks every message with the code the service decodes it
// with): a command this package refuses is one the service would
// dead-letter, and one it accepts is decoded as sent. The messages are
// described in docs/asyncapi.yaml and docs/schemas, the HTTP API in
// docs/openapi.yaml.
//
// The package keeps no connection of its own: it uses the caller's
// jetstream.JetStream or *http.Client, never logs, and returns errors
// (compare with errors.Is / errors.As).
package client
