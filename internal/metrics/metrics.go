// Package metrics owns the orchestrator's Prometheus metrics: the counters
// and histograms the worker updates as it handles commands (Metrics), and
// the collectors that read a gauge from elsewhere when scraped (the
// JetStream consumer's pending counts, the campaigns by state).
//
// Names follow the Prometheus conventions: the orchestrator_ prefix, _total
// on counters, base units (_seconds). Every label has a bounded set of
// values: a verb label is one of fsm.Verbs or "invalid"; a reason or outcome
// is one of this package's constants; a step label is a step name from the
// workflow definitions (bounded by configuration, and capped at
// MaxStepLabels distinct names, beyond which "other" is used). A tenant,
// campaign or command id is never a label: look those up in the logs, the
// traces or the campaign's history.
//
// The package records; it does not decide. It never logs, and every method
// of a nil *Metrics does nothing, so the packages it instruments run
// without metrics (tests, benchmarks). Counters are per process and count
// what this process saw: work redone after a crash or a lost lock (a step
// re-run, a dead letter published again) is counted again.
//
// The metrics (see New and the collectors for the full help texts):
//
//	orchestrator_commands_received_total{verb}           messages delivered by the consumer, redeliveries included
//	orchestrator_commands_applied_total{verb}            commands the state machine applied
//	orchestrator_commands_rejected_total{verb}           commands the state machine rejected (campaign.command.rejected)
//	orchestrator_commands_duplicated_total{verb}         deliveries whose id was already in the campaign's ledger
//	orchestrator_commands_dead_lettered_total{verb,reason}  copies published to CAMPAIGN_DLQ
//	orchestrator_steps_total{step,outcome}               step runs that succeeded or failed, and attempts followed by a retry
//	orchestrator_step_duration_seconds{step,outcome}     duration of a step run, retries and back-off included
//	orchestrator_step_retries_total{reason}              step attempts retried, by cause
//	orchestrator_lock_acquisitions_total                 campaign locks taken
//	orchestrator_lock_contentions_total                  commands parked behind another holder of their campaign's lock
//	orchestrator_lock_lost_total                         holders that found their lock lost while draining
//	orchestrator_fencing_rejections_total{reason}        store writes refused (lock lost / version conflict)
//	orchestrator_campaigns_rebuilt_total                 campaigns whose lost state a worker rebuilt from their history
//	orchestrator_event_conflicts_total                   publishes refused: the history holds another event at that sequence
//	orchestrator_consumer_*                              the JetStream consumer's counts (ConsumerCollector)
//	orchestrator_campaigns{state}                        campaigns by state (CampaignsCollector)
//	orchestrator_collector_errors_total{collector}       failed reads of the two collectors above
package metrics

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// Namespace prefixes every metric of this package.
const Namespace = "orchestrator"

// VerbInvalid is the verb label of a command whose verb is not one of
// fsm.Verbs.
const VerbInvalid = "invalid"

// Step outcomes (the outcome label of the step metrics).
const (
	OutcomeSucceeded = "succeeded"
	OutcomeFailed    = "failed"
	// OutcomeRetrying counts attempts that failed and were retried; it has
	// no duration.
	OutcomeRetrying = "retrying"
)

// Retry reasons (orchestrator_step_retries_total).
const (
	RetryNetwork = "network" // connection refused or reset, unexpected EOF
	RetryTimeout = "timeout" // the attempt outlived the step's timeout
	RetryStatus  = "status"  // a status the step's retry policy lists
)

// Dead-letter reason classes (orchestrator_commands_dead_lettered_total).
const (
	DLQInvalid         = "invalid"          // cannot be processed (bad JSON, tokens, verb, workflow…)
	DLQUnknownCampaign = "unknown_campaign" // not a create, and the campaign does not exist
	DLQMaxDeliveries   = "max_deliveries"   // the consumer's max_deliver was reached
)

// Fencing rejection reasons (orchestrator_fencing_rejections_total).
const (
	FenceLockLost = "lock_lost" // store.ErrLockLost: another holder or a higher fence
	FenceConflict = "conflict"  // store.ErrConflict: the version moved
)

// Other is the label value that stands for any value outside a bounded set.
const Other = "other"

// MaxStepLabels caps the distinct step names used as label values; names
// seen after that are counted as "other". Workflows come from configuration,
// so the cap only matters if a configuration keeps renaming steps.
const MaxStepLabels = 200

// StepBuckets are the step duration histogram's buckets, in seconds: a step
// is an HTTP call of milliseconds to seconds, retries and back-off included
// (the default timeout is 10 s per attempt, with up to 2 retries).
var StepBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// Metrics are the counters and histograms of command handling. Create it
// with New; a nil *Metrics records nothing.
type Metrics struct {
	received     *prometheus.CounterVec
	applied      *prometheus.CounterVec
	rejected     *prometheus.CounterVec
	duplicated   *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	steps        *prometheus.CounterVec
	stepDuration *prometheus.HistogramVec
	applyDur     *prometheus.HistogramVec
	retries      *prometheus.CounterVec
	lockAcquired prometheus.Counter
	lockContend  prometheus.Counter
	lockLost     prometheus.Counter
	fenced       *prometheus.CounterVec
	fetchFailed  prometheus.Counter
	rebuilt      prometheus.Counter
	conflicts    prometheus.Counter

	// Pre-resolved children of the verb-labelled counters, by verb: the hot
	// path avoids hashing label values.
	byVerb map[string]*verbCounters

	stepNames atomic.Pointer[map[string]struct{}] // copy-on-write
	stepMu    sync.Mutex                          // serializes additions
}

type verbCounters struct {
	received, applied, rejected, duplicated prometheus.Counter
}

// New creates the metrics and registers them on reg (nil: not registered,
// still usable). Registering twice on one registry is not an error: the
// second Metrics shares the first one's collectors, so several workers of
// one process (tests) can each call New. It panics if reg holds a different
// metric under one of these names (a programming error, as with
// prometheus.MustRegister).
func New(reg prometheus.Registerer) *Metrics {
	verb := []string{"verb"}
	m := &Metrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "commands_received_total",
			Help: "Command messages delivered by the JetStream consumer, redeliveries included, by verb (\"invalid\" when the subject's verb is unknown).",
		}, verb),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "commands_applied_total",
			Help: "Commands the state machine applied, by verb (advance: a step run or the completion).",
		}, verb),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "commands_rejected_total",
			Help: "Commands the state machine rejected in the campaign's state (event campaign.command.rejected), by verb.",
		}, verb),
		duplicated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "commands_duplicated_total",
			Help: "Command deliveries ignored because the command id was already applied to the campaign (its ledger), by verb.",
		}, verb),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "commands_dead_lettered_total",
			Help: "Commands copied to CAMPAIGN_DLQ, by verb and reason class (invalid, unknown_campaign, max_deliveries).",
		}, []string{"verb", "reason"}),
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "steps_total",
			Help: "Step runs by step and outcome: succeeded or failed (once per run), retrying (once per attempt that is retried).",
		}, []string{"step", "outcome"}),
		stepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "step_duration_seconds",
			Help:    "Duration of a step run, retries and back-off waits included, by step and outcome (succeeded, failed).",
			Buckets: StepBuckets,
		}, []string{"step", "outcome"}),
		applyDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "command_apply_duration_seconds",
			Help: "Time the lock holder takes to apply one command, by verb: state machine, fenced write, publishing its events " +
				"(and for an advance the step's call). Exemplars carry the command's trace id.",
			Buckets: StepBuckets,
		}, []string{"verb"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "step_retries_total",
			Help: "Step attempts that failed and were retried, by reason (network, timeout, status).",
		}, []string{"reason"}),
		lockAcquired: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "lock_acquisitions_total",
			Help: "Campaign locks taken (a command parked in a free campaign's inbox).",
		}),
		lockContend: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "lock_contentions_total",
			Help: "Commands parked in the inbox of a campaign whose lock another handler held: they wait there for that holder instead of being redelivered.",
		}),
		lockLost: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "lock_lost_total",
			Help: "Times a holder found its campaign lock lost (expired or taken over) while draining.",
		}),
		fenced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "fencing_rejections_total",
			Help: "Store writes refused by the fencing check, by reason (lock_lost: not the holder or a higher fence wrote; conflict: the version moved).",
		}, []string{"reason"}),
		fetchFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "fetch_failures_total",
			Help: "Pulls from the command consumer that failed (no responders while a stream or consumer leader is down, say); the worker backs off meanwhile.",
		}),
		rebuilt: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "campaigns_rebuilt_total",
			Help: "Campaigns whose state the store had lost (Redis restarted empty, say), rebuilt from their history in CAMPAIGN_EVENTS by a worker that met one of their commands.",
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "event_conflicts_total",
			Help: "Event publishes refused because CAMPAIGN_EVENTS holds another event at that campaign sequence: the store's state is behind the history (a Redis failover to a replica that lost writes, say). The campaign stops until repaired (see the README, Operations).",
		}),
	}
	if reg != nil {
		register(reg, &m.received)
		register(reg, &m.applied)
		register(reg, &m.rejected)
		register(reg, &m.duplicated)
		register(reg, &m.deadLettered)
		register(reg, &m.steps)
		register(reg, &m.stepDuration)
		register(reg, &m.applyDur)
		register(reg, &m.retries)
		register(reg, &m.lockAcquired)
		register(reg, &m.lockContend)
		register(reg, &m.lockLost)
		register(reg, &m.fenced)
		register(reg, &m.fetchFailed)
		register(reg, &m.rebuilt)
		register(reg, &m.conflicts)
	}

	// Every bounded series exists from the start, at zero: rate() and the
	// dashboard work before the first event.
	m.byVerb = make(map[string]*verbCounters, len(fsm.Verbs)+1)
	for _, v := range append(verbStrings(), VerbInvalid) {
		m.byVerb[v] = &verbCounters{
			received:   m.received.WithLabelValues(v),
			applied:    m.applied.WithLabelValues(v),
			rejected:   m.rejected.WithLabelValues(v),
			duplicated: m.duplicated.WithLabelValues(v),
		}
		for _, r := range []string{DLQInvalid, DLQUnknownCampaign, DLQMaxDeliveries} {
			m.deadLettered.WithLabelValues(v, r)
		}
		m.applyDur.WithLabelValues(v)
	}
	for _, r := range []string{RetryNetwork, RetryTimeout, RetryStatus} {
		m.retries.WithLabelValues(r)
	}
	for _, r := range []string{FenceLockLost, FenceConflict} {
		m.fenced.WithLabelValues(r)
	}
	empty := map[string]struct{}{}
	m.stepNames.Store(&empty)
	return m
}

// register registers *c on reg, or replaces *c with the collector already
// registered under the same description.
func register[C prometheus.Collector](reg prometheus.Registerer, c *C) {
	if err := reg.Register(*c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				*c = existing
				return
			}
		}
		panic(err)
	}
}

func verbStrings() []string {
	out := make([]string, len(fsm.Verbs))
	for i, v := range fsm.Verbs {
		out[i] = string(v)
	}
	return out
}

// VerbLabel returns verb if it is one of fsm.Verbs, else "invalid".
func VerbLabel(verb string) string {
	if fsm.Verb(verb).Valid() {
		return verb
	}
	return VerbInvalid
}

func (m *Metrics) verb(v string) *verbCounters {
	if c, ok := m.byVerb[v]; ok {
		return c
	}
	return m.byVerb[VerbInvalid]
}

// stepLabel returns name, or "other" once MaxStepLabels names are in use.
func (m *Metrics) stepLabel(name string) string {
	if _, ok := (*m.stepNames.Load())[name]; ok {
		return name
	}
	m.stepMu.Lock()
	defer m.stepMu.Unlock()
	cur := *m.stepNames.Load()
	if _, ok := cur[name]; ok {
		return name
	}
	if len(cur) >= MaxStepLabels {
		return Other
	}
	next := make(map[string]struct{}, len(cur)+1)
	for k := range cur {
		next[k] = struct{}{}
	}
	next[name] = struct{}{}
	m.stepNames.Store(&next)
	return name
}

// oneOf returns v if it is in allowed, else "other".
func oneOf(v string, allowed ...string) string {
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	return Other
}

// InitSteps creates the step series of the named steps at zero, so that
// they are exposed before the first run (call it with the configured
// workflows' steps).
func (m *Metrics) InitSteps(names ...string) {
	if m == nil {
		return
	}
	for _, n := range names {
		s := m.stepLabel(n)
		for _, o := range []string{OutcomeSucceeded, OutcomeFailed} {
			m.steps.WithLabelValues(s, o)
			m.stepDuration.WithLabelValues(s, o)
		}
		m.steps.WithLabelValues(s, OutcomeRetrying)
	}
}

// CommandReceived counts a delivery of a command message whose subject's
// verb is verb.
func (m *Metrics) CommandReceived(verb string) {
	if m == nil {
		return
	}
	m.verb(verb).received.Inc()
}

// CommandApplied counts a command the state machine applied.
func (m *Metrics) CommandApplied(verb string) {
	if m == nil {
		return
	}
	m.verb(verb).applied.Inc()
}

// CommandRejected counts a command the state machine rejected.
func (m *Metrics) CommandRejected(verb string) {
	if m == nil {
		return
	}
	m.verb(verb).rejected.Inc()
}

// CommandDuplicated counts a delivery of a command already in the
// campaign's ledger.
func (m *Metrics) CommandDuplicated(verb string) {
	if m == nil {
		return
	}
	m.verb(verb).duplicated.Inc()
}

// CommandDeadLettered counts a command copied to the DLQ; reason is one of
// the DLQ* constants (anything else is counted as "other").
func (m *Metrics) CommandDeadLettered(verb, reason string) {
	if m == nil {
		return
	}
	if _, ok := m.byVerb[verb]; !ok {
		verb = VerbInvalid
	}
	m.deadLettered.WithLabelValues(verb, oneOf(reason, DLQInvalid, DLQUnknownCampaign, DLQMaxDeliveries)).Inc()
}

// StepFinished records a step run that ended: outcome is OutcomeSucceeded
// or OutcomeFailed, d the run's duration (retries and waits included).
// traceID, when not empty, becomes the observation's exemplar.
func (m *Metrics) StepFinished(step, outcome string, d time.Duration, traceID ...string) {
	if m == nil {
		return
	}
	s, o := m.stepLabel(step), oneOf(outcome, OutcomeSucceeded, OutcomeFailed)
	m.steps.WithLabelValues(s, o).Inc()
	observe(m.stepDuration.WithLabelValues(s, o), d, traceID)
}

// CommandApplyDuration records how long applying one command took (see
// orchestrator_command_apply_duration_seconds); traceID, when not empty,
// becomes the observation's exemplar.
func (m *Metrics) CommandApplyDuration(verb string, d time.Duration, traceID string) {
	if m == nil {
		return
	}
	if _, ok := m.byVerb[verb]; !ok {
		verb = VerbInvalid
	}
	observe(m.applyDur.WithLabelValues(verb), d, []string{traceID})
}

// ExemplarTraceID is the exemplar label of a trace id, as Grafana and
// Prometheus look it up.
const ExemplarTraceID = "trace_id"

// observe records d on o, with {trace_id} as exemplar when one is given
// (served only to an OpenMetrics scrape).
func observe(o prometheus.Observer, d time.Duration, traceID []string) {
	if len(traceID) > 0 && traceID[0] != "" {
		if eo, ok := o.(prometheus.ExemplarObserver); ok {
			eo.ObserveWithExemplar(d.Seconds(), prometheus.Labels{ExemplarTraceID: traceID[0]})
			return
		}
	}
	o.Observe(d.Seconds())
}

// StepRetrying records an attempt of step that failed and will be retried;
// reason is one of the Retry* constants.
func (m *Metrics) StepRetrying(step, reason string) {
	if m == nil {
		return
	}
	m.steps.WithLabelValues(m.stepLabel(step), OutcomeRetrying).Inc()
	m.retries.WithLabelValues(oneOf(reason, RetryNetwork, RetryTimeout, RetryStatus)).Inc()
}

// LockAcquired counts a campaign lock taken.
func (m *Metrics) LockAcquired() {
	if m == nil {
		return
	}
	m.lockAcquired.Inc()
}

// LockContended counts a command parked behind another holder of its
// campaign's lock.
func (m *Metrics) LockContended() {
	if m == nil {
		return
	}
	m.lockContend.Inc()
}

// LockLost counts a holder that found its lock lost while draining.
func (m *Metrics) LockLost() {
	if m == nil {
		return
	}
	m.lockLost.Inc()
}

// CampaignRebuilt counts a campaign whose lost state was rebuilt from its
// history.
func (m *Metrics) CampaignRebuilt() {
	if m == nil {
		return
	}
	m.rebuilt.Inc()
}

// EventConflict counts a publish refused because the history holds
// another event at its sequence.
func (m *Metrics) EventConflict() {
	if m == nil {
		return
	}
	m.conflicts.Inc()
}

// FetchFailed counts a failed pull from the command consumer.
func (m *Metrics) FetchFailed() {
	if m == nil {
		return
	}
	m.fetchFailed.Inc()
}

// FencingRejected counts a store write refused by the fencing check; reason
// is FenceLockLost or FenceConflict.
func (m *Metrics) FencingRejected(reason string) {
	if m == nil {
		return
	}
	m.fenced.WithLabelValues(oneOf(reason, FenceLockLost, FenceConflict)).Inc()
}
