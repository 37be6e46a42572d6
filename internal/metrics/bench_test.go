package metrics_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaign-orchestrator/orchestrator/internal/metrics"
)

// perCommand makes the calls the worker makes for one external command that
// runs a step: the command's and its advance's deliveries, lock taken,
// both applied, the step's result.
func perCommand(m *metrics.Metrics) {
	m.CommandReceived("start")
	m.LockAcquired()
	m.CommandApplied("start")
	m.CommandReceived("advance")
	m.LockAcquired()
	m.StepFinished("segment", metrics.OutcomeSucceeded, 42*time.Millisecond)
	m.CommandApplied("advance")
}

// BenchmarkInstrumentation measures the metrics calls of one command, with
// a nil *Metrics (metrics off) and with registered metrics, in parallel as
// the worker's handlers make them.
func BenchmarkInstrumentation(b *testing.B) {
	for _, on := range []bool{false, true} {
		var m *metrics.Metrics
		name := "metrics=off"
		if on {
			m = metrics.New(prometheus.NewRegistry())
			m.InitSteps("segment")
			name = "metrics=on"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					perCommand(m)
				}
			})
		})
	}
}
