// Package bench is the load generator and the measurement behind
// `orchestrator bench`, and the bare pipeline it is compared with.
//
// Run drives campaigns through a running service — create with start=true
// on NATS (events.NewCommandMsg) or POST /api/v1/campaigns — closed loop
// (a fixed number in flight) or open loop (a fixed rate, latencies from the
// intended send time, so a slow service cannot hide its queueing), against
// an in-process fake step service (Fake). It follows every campaign through
// a core-NATS subscription to campaign.evt.<tenant>.> until its
// campaign.completed, and reports throughput, latency distributions
// (HdrHistogram), the per-step orchestration overhead, CPU per campaign,
// peak RSS, Redis commands (INFO commandstats) and JetStream API requests
// per command.
//
// Bare is the bare pipeline: publish with id → fetch (batch) → SET NX PX
// lock → GET state → one Lua write → Lua release → synchronous event
// publish → ack, with 256 goroutines: the least a command of this kind of
// service costs on the same servers. RunBaseline measures it the same way.
//
// Every figure is measured by this process: its CPU and RSS include the
// load generator, the fake and (when the NATS server is embedded) the NATS
// server; a server run as a child process (Child) is measured apart.
package bench
