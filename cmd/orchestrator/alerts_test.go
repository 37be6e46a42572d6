package main

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
)

// alertsFile is the Prometheus rules file operators load.
const alertsFile = "../../deploy/prometheus/alerts.yaml"

// The rules file is valid as Prometheus loads it (rulefmt, what promtool
// check rules runs: expressions, durations, label names, annotation
// templates, duplicate names).
func TestAlertRulesLoad(t *testing.T) {
	raw, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	groups, errs := rulefmt.Parse(raw, false, model.UTF8Validation, parser.NewParser(parser.Options{}), nil)
	for _, err := range errs {
		t.Errorf("%s: %v", alertsFile, err)
	}
	if groups == nil || len(groups.Groups) == 0 {
		t.Fatalf("%s: no rule groups", alertsFile)
	}
}

// alertScenario is a half hour of scraped series and the alerts that must
// be firing at its end (every other rule must not be).
type alertScenario struct {
	name   string
	series []synthSeries
	firing map[string][]string // alert → the value of its "step" label for each alert (nil: one alert without it)
}

// synthSeries is one scraped series: a name, label pairs and its value at
// minute m of the scenario (every 15 s from 0 to 30).
type synthSeries struct {
	name   string
	labels []string
	at     func(m float64) float64
}

func constant(v float64) func(float64) float64  { return func(float64) float64 { return v } }
func perSecond(r float64) func(float64) float64 { return func(m float64) float64 { return r * 60 * m } }
func after(m0 float64, v float64) func(float64) float64 {
	return func(m float64) float64 {
		if m >= m0 {
			return v
		}
		return 0
	}
}

// Every alert rule of deploy/prometheus/alerts.yaml, evaluated by the
// Prometheus query engine over synthetic scrapes (its `for` included: the
// expression holds at every minute of the window), fires in the situations
// it is meant for and stays silent otherwise. In particular a saturated
// backlog, every pull answered at once so none waits, is not "no worker
// ready".
func TestAlertRulesFire(t *testing.T) {
	raw, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	groups, errs := rulefmt.Parse(raw, false, model.UTF8Validation, parser.NewParser(parser.Options{}), nil)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	type rule struct {
		name, expr string
		hold       time.Duration
	}
	var rules []rule
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			rules = append(rules, rule{r.Alert, r.Expr, time.Duration(r.For)})
		}
	}

	consumer := []string{"stream", "CAMPAIGN_COMMANDS", "consumer", "orchestrator"}
	// A healthy idle process: a pull waits, nothing is received.
	healthy := func(extra ...synthSeries) []synthSeries {
		return append([]synthSeries{
			{"orchestrator_consumer_waiting_pulls", consumer, constant(1)},
			{"orchestrator_consumer_pending_messages", consumer, constant(0)},
			{"orchestrator_consumer_redelivered_messages", consumer, constant(0)},
			{"orchestrator_commands_received_total", []string{"verb", "create"}, constant(0)},
			{"orchestrator_commands_dead_lettered_total", []string{"verb", "start", "reason", "unknown_campaign"}, constant(0)},
			{"orchestrator_lock_lost_total", nil, constant(0)},
			{"orchestrator_event_conflicts_total", nil, constant(0)},
			{"orchestrator_steps_total", []string{"step", "segment", "outcome", "succeeded"}, constant(0)},
			{"orchestrator_steps_total", []string{"step", "segment", "outcome", "failed"}, constant(0)},
		}, extra...)
	}
	steps := func(step string, ok, failed float64) []synthSeries {
		return []synthSeries{
			{"orchestrator_steps_total", []string{"step", step, "outcome", "succeeded"}, perSecond(ok)},
			{"orchestrator_steps_total", []string{"step", step, "outcome", "failed"}, perSecond(failed)},
		}
	}
	scenarios := []alertScenario{
		{name: "healthy and idle", series: healthy()},
		{name: "one dead letter 5 min ago", series: healthy(synthSeries{"orchestrator_commands_dead_lettered_total", []string{"verb", "start", "reason", "unknown_campaign"}, after(25, 1)}),
			firing: map[string][]string{"OrchestratorDLQGrowing": nil}},
		{name: "a dead letter 20 min ago", series: healthy(synthSeries{"orchestrator_commands_dead_lettered_total", []string{"verb", "start", "reason", "unknown_campaign"}, after(10, 1)})},
		{name: "backlog of 5000 with every worker busy", series: healthy(
			synthSeries{"orchestrator_consumer_pending_messages", consumer, constant(5000)},
			synthSeries{"orchestrator_consumer_waiting_pulls", consumer, constant(0)}, // each pull answered at once
			synthSeries{"orchestrator_commands_received_total", []string{"verb", "create"}, perSecond(50)}),
			firing: map[string][]string{"OrchestratorConsumerLag": nil}},
		{name: "backlog for 3 min only", series: healthy(synthSeries{"orchestrator_consumer_pending_messages", consumer, after(27, 5000)})},
		{name: "backlog of 500", series: healthy(synthSeries{"orchestrator_consumer_pending_messages", consumer, constant(500)})},
		{name: "redeliveries", series: healthy(synthSeries{"orchestrator_consumer_redelivered_messages", consumer, constant(250)}),
			firing: map[string][]string{"OrchestratorCommandsRedelivered": nil}},
		{name: "an event conflict 10 min ago", series: healthy(synthSeries{"orchestrator_event_conflicts_total", nil, after(20, 1)}),
			firing: map[string][]string{"OrchestratorEventConflict": nil}},
		{name: "locks lost once a second", series: healthy(synthSeries{"orchestrator_lock_lost_total", nil, perSecond(1)}),
			firing: map[string][]string{"OrchestratorLocksLost": nil}},
		{name: "segment fails 10 % of its runs, validate none", series: append(healthy(steps("segment", 9, 1)...), steps("validate", 10, 0)...),
			firing: map[string][]string{"OrchestratorStepFailureRatio": {"segment"}}},
		{name: "segment fails 1 % of its runs", series: healthy(steps("segment", 99, 1)...)},
		{name: "workers gone: no pull waits, nothing received", series: healthy(
			synthSeries{"orchestrator_consumer_waiting_pulls", consumer, constant(0)}),
			firing: map[string][]string{"OrchestratorNoWorkerReady": nil}},
		{name: "workers gone with a backlog growing", series: healthy(
			synthSeries{"orchestrator_consumer_waiting_pulls", consumer, constant(0)},
			synthSeries{"orchestrator_consumer_pending_messages", consumer, func(m float64) float64 { return 200 * m }}),
			firing: map[string][]string{"OrchestratorNoWorkerReady": nil, "OrchestratorConsumerLag": nil}},
		{name: "nothing scraped", firing: map[string][]string{"OrchestratorNoWorkerReady": nil}},
	}

	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	start := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	end := start.Add(30 * time.Minute)
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			q := synthQueryable(start, end, sc.series)
			for _, r := range rules {
				// Firing at end: the expression holds at every evaluation
				// (each minute) of the last `for`.
				var got []string
				holds := true
				for ts := end.Add(-r.hold); !ts.After(end); ts = ts.Add(time.Minute) {
					qry, err := engine.NewInstantQuery(context.Background(), q, nil, r.expr, ts)
					if err != nil {
						t.Fatalf("%s: %v", r.name, err)
					}
					res := qry.Exec(context.Background())
					if res.Err != nil {
						t.Fatalf("%s: %v", r.name, res.Err)
					}
					vec, err := res.Vector()
					if err != nil {
						t.Fatalf("%s: %v", r.name, err)
					}
					qry.Close()
					if len(vec) == 0 {
						holds = false
						break
					}
					got = got[:0]
					for _, s := range vec {
						got = append(got, s.Metric.Get("step"))
					}
				}
				want, wantFiring := sc.firing[r.name]
				switch {
				case holds != wantFiring:
					t.Errorf("%s: firing %v, want %v", r.name, holds, wantFiring)
				case holds && want != nil && !slices.Equal(sorted(got), want):
					t.Errorf("%s: fires for steps %v, want %v", r.name, got, want)
				}
			}
		})
	}
}

// synthQueryable is an in-memory storage.Queryable of series, sampled
// every 15 s from start to end.
func synthQueryable(start, end time.Time, series []synthSeries) storage.Queryable {
	var all []storage.Series
	for _, s := range series {
		lbls := labels.FromStrings(append([]string{model.MetricNameLabel, s.name}, s.labels...)...)
		var smp []chunks.Sample
		for ts := start; !ts.After(end); ts = ts.Add(15 * time.Second) {
			smp = append(smp, floatSample{ts.UnixMilli(), s.at(ts.Sub(start).Minutes())})
		}
		// A later entry for the same labels replaces an earlier one
		// (scenarios override the healthy defaults).
		all = slices.DeleteFunc(all, func(o storage.Series) bool { return labels.Equal(o.Labels(), lbls) })
		all = append(all, storage.NewListSeries(lbls, smp))
	}
	slices.SortFunc(all, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
	return &storage.MockQueryable{MockQuerier: &storage.MockQuerier{
		SelectMockFunction: func(_ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
			var out []storage.Series
			for _, s := range all {
				if !slices.ContainsFunc(ms, func(m *labels.Matcher) bool { return !m.Matches(s.Labels().Get(m.Name)) }) {
					out = append(out, s)
				}
			}
			return &sliceSeriesSet{series: out, i: -1}
		},
	}}
}

type sliceSeriesSet struct {
	series []storage.Series
	i      int
}

func (s *sliceSeriesSet) Next() bool                        { s.i++; return s.i < len(s.series) }
func (s *sliceSeriesSet) At() storage.Series                { return s.series[s.i] }
func (s *sliceSeriesSet) Err() error                        { return nil }
func (s *sliceSeriesSet) Warnings() annotations.Annotations { return nil }

// floatSample is a chunks.Sample of a float value.
type floatSample struct {
	t int64
	f float64
}

func (s floatSample) T() int64                      { return s.t }
func (s floatSample) ST() int64                     { return 0 }
func (s floatSample) F() float64                    { return s.f }
func (s floatSample) H() *histogram.Histogram       { return nil }
func (s floatSample) FH() *histogram.FloatHistogram { return nil }
func (s floatSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s floatSample) Copy() chunks.Sample           { return s }
