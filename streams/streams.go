// Package streams holds the JetStream stream and consumer definitions of the
// orchestrator, in natscli format: each *.json file is the JetStream API
// configuration that `nats stream add --config` (or, for *.consumer.json,
// `nats consumer add CAMPAIGN_COMMANDS --config`) accepts as is. Durations are
// in nanoseconds.
//
// The files are the single source of the streams' configuration: the service
// and `orchestrator streams apply` load them from FS (internal/events.LoadSpecs)
// and apply only the configured overrides on top. This package holds data
// only; it has no code and imports nothing of the service.
package streams

import "embed"

// FS holds every *.json file of this directory: one stream configuration per
// stream (file named after the stream) and the orchestrator consumer's
// configuration (orchestrator.consumer.json).
//
//go:embed *.json
var FS embed.FS
