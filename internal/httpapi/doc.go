// Package httpapi is the HTTP ingress of the orchestrator (CONTRACT section
// 7): an Echo v5 server that turns requests into commands on JetStream and
// reads campaigns back from the store and their events from JetStream.
//
// It owns the HTTP surface only: routing, validation, tenants and bearer
// tokens, the CORS whitelist, Idempotency-Key records, the server-sent
// events stream, health and readiness, the HTTP metrics and the OpenAPI
// document. It never changes a campaign itself: every change is a command
// published to CAMPAIGN_COMMANDS and applied by the worker, and a 202 means
// JetStream has stored that command.
//
// It talks to the rest of the service only through internal/events (subjects,
// envelopes, history), internal/store (campaign state, the per-tenant index,
// idempotency records), internal/deadletter (reading CAMPAIGN_DLQ) and the
// fsm domain types.
package httpapi
