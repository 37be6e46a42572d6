package worker

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaign-orchestrator/orchestrator/internal/metrics"
)

// countHandler counts log records by message.
type countHandler struct{ n map[string]int }

func (h countHandler) Enabled(context.Context, slog.Level) bool      { return true }
func (h countHandler) Handle(_ context.Context, r slog.Record) error { h.n[r.Message]++; return nil }
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler            { return h }
func (h countHandler) WithGroup(string) slog.Handler                 { return h }

// While pulls fail (no responders: a stream or consumer leader is down) the
// worker backs off, logs once per change of state, and counts each failure.
func TestPullHealthBacksOffAndLogsOnce(t *testing.T) {
	logs := countHandler{n: map[string]int{}}
	reg := prometheus.NewRegistry()
	p := newPullHealth(slog.New(logs), metrics.New(reg), 1e9)
	noResponders := errors.New("nats: no responders available for request")
	var first, total int64
	for i := range 20 {
		d := int64(p.failed(noResponders))
		if d <= 0 {
			t.Fatalf("failure %d: wait %d", i+1, d)
		}
		if i == 0 {
			first = d
		}
		total += d
	}
	if first > 2e8 {
		t.Fatalf("first wait %d: want the initial interval (100 ms, with jitter)", first)
	}
	if total < 20e9 {
		t.Fatalf("20 failed pulls wait %d ns in all: want the back-off to reach seconds", total)
	}
	p.failed(errors.New("nats: timeout"))             // another error: logged once more
	p.ok()                                            // works again: logged once
	p.ok()                                            // still working: nothing
	if first := p.failed(noResponders); first > 2e8 { // back-off reset
		t.Fatalf("first wait after recovery %d: want the initial interval", first)
	}
	if got := logs.n["pulling commands fails: backing off"]; got != 3 {
		t.Fatalf("%d failure logs for 22 failures in 3 spells, want 3", got)
	}
	if got := logs.n["pulling commands works again"]; got != 1 {
		t.Fatalf("%d recovery logs, want 1", got)
	}
	if got := counterOf(t, reg, metrics.Namespace+"_fetch_failures_total"); got != 22 {
		t.Fatalf("fetch_failures_total = %v, want 22", got)
	}
}

func counterOf(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
