// Package chaos is the fault-injection suite of issue 9: it drives real
// processes — the built orchestrator binary (2–3 instances of `orchestrator
// serve`), nats-server processes built from the module in go.mod (one, or a
// 3-node JetStream cluster) and a redis-server — under a load of campaigns
// with random pause, resume, cancel and retry sent over NATS and HTTP, injects
// faults (kill -9, SIGSTOP past the consumer's ack wait, stream and consumer
// leaders killed, Redis and network faults, floods of duplicate, invalid and
// backlogged commands), and checks everything afterwards with a checker that
// reads CAMPAIGN_EVENTS, CAMPAIGN_DLQ, CAMPAIGN_COMMANDS, Redis and the HTTP
// API directly rather than through the service's own code paths.
//
// Everything but this file is behind the build tag chaos, so `go test ./...`
// skips the suite. Run it with `make test-chaos`, or one scenario at a time:
//
//	go test -tags chaos -count=1 -timeout 30m ./internal/chaos/ -run TestChaosBaseline -v
//	go test -tags chaos -count=1 ./internal/chaos/ -run TestChaosKill9 -v -chaos.seed 42
//	CHAOS_SCALE=3 go test -tags chaos -count=1 ./internal/chaos/ -v -chaos.report /tmp/chaos.json
//
// Flags (after the package): -chaos.seed (default: the time; printed at the
// start of every scenario so that a failure can be replayed), -chaos.scale
// (or CHAOS_SCALE; 1 = 60 campaigns), -chaos.report <path> (the summaries as
// JSON), -chaos.latency (mean downstream latency, default 50ms ±50 %),
// -chaos.failrate (share of step runs answered 500, default 0.06),
// -chaos.keep (keep the processes' logs, commands.json, calls.json and
// summary.json even when the scenario passes), -chaos.orchestrator <binary>
// (test a binary built elsewhere, e.g. from another commit, instead of
// building ./cmd/orchestrator from the working tree).
//
// TestChaosCheckerCatches tampers with a healthy run's data (events
// repeated, skipped, deleted; a downstream overlap; a stale step result; an
// inbox left full; a forged DLQ entry) and expects the checker to report
// each.
package chaos
