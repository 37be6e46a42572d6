package bench

import (
	"math"
	"testing"
	"time"
)

// near: HdrHistogram keeps 3 significant digits.
func near(got, want float64) bool { return math.Abs(got-want) <= 0.002*math.Abs(want)+0.001 }

func TestRecorder(t *testing.T) {
	r := newRecorder()
	if d := r.dist(); d.Count != 0 {
		t.Fatalf("empty: %+v", d)
	}
	for i := 1; i <= 100; i++ { // 1..100 ms
		r.record(time.Duration(i) * time.Millisecond)
	}
	d := r.dist()
	if d.Count != 100 || !near(d.P50, 50) || !near(d.P90, 90) || !near(d.P99, 99) || !near(d.Max, 100) || d.Negative != 0 {
		t.Errorf("1..100 ms: %+v", d)
	}
	if d.Mean < 50.4 || d.Mean > 50.6 {
		t.Errorf("mean %.3f, want 50.5", d.Mean)
	}

	r = newRecorder()
	for i := -50; i < 50; i++ { // -50..49 ms
		r.record(time.Duration(i) * time.Millisecond)
	}
	d = r.dist()
	if d.Count != 100 || d.Negative != 50 || !near(d.P50, -1) || !near(d.P90, 39) || !near(d.P99, 48) || !near(d.Max, 49) {
		t.Errorf("-50..49 ms: %+v", d)
	}
	if d.Mean < -0.6 || d.Mean > -0.4 {
		t.Errorf("mean %.3f, want -0.5", d.Mean)
	}

	r = newRecorder()
	r.record(-3 * time.Millisecond)
	r.record(-1 * time.Millisecond)
	if d := r.dist(); !near(d.P50, -3) || !near(d.P99, -1) || !near(d.Max, -1) {
		t.Errorf("-3, -1 ms: %+v", d)
	}
	r = newRecorder()
	r.record(0)
	if d := r.dist(); d.Count != 1 || d.Max != 0 || d.P50 != 0 {
		t.Errorf("0: %+v", d)
	}
	r.record(2 * time.Hour) // beyond the range: kept as the largest value
	if d := r.dist(); d.Count != 2 || d.Max < 3500e3 {
		t.Errorf("0, 2 h: %+v", d)
	}
}

func TestAPIKind(t *testing.T) {
	for subject, want := range map[string]string{
		"$JS.API.INFO":                                             "INFO",
		"$JS.API.STREAM.INFO.CAMPAIGN_COMMANDS":                    "STREAM.INFO",
		"$JS.API.STREAM.MSG.GET.CAMPAIGN_EVENTS":                   "STREAM.MSG.GET",
		"$JS.API.DIRECT.GET.CAMPAIGN_EVENTS":                       "DIRECT.GET",
		"$JS.API.DIRECT.GET.CAMPAIGN_EVENTS.campaign.evt.a.b":      "DIRECT.GET",
		"$JS.API.CONSUMER.MSG.NEXT.CAMPAIGN_COMMANDS.orchestrator": "CONSUMER.MSG.NEXT",
		"$JS.API.CONSUMER.CREATE.S.c.f":                            "CONSUMER.CREATE",
		"$JS.API.CONSUMER.DURABLE.CREATE.S.c":                      "CONSUMER.DURABLE.CREATE",
		"$JS.API.CONSUMER.INFO.S.c":                                "CONSUMER.INFO",
		"$JS.API.SOMETHING.NEW.X":                                  "SOMETHING.NEW",
	} {
		if got := apiKind(subject); got != want {
			t.Errorf("apiKind(%q) = %q, want %q", subject, got, want)
		}
	}
}
