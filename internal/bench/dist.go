package bench

import (
	"math"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// histMax is the largest value recorded, in microseconds (an hour); values
// are recorded with 3 significant digits.
const histMax = int64(time.Hour / time.Microsecond)

// recorder is a latency distribution (HdrHistogram, microseconds) that also
// takes negative values: differences between two clocks (an event's time,
// in milliseconds, and the fake's) can be below 0. Negative values are kept
// by magnitude in a second histogram, so that both keep their precision.
type recorder struct {
	pos, neg *hdrhistogram.Histogram
}

func newRecorder() *recorder {
	return &recorder{pos: hdrhistogram.New(1, histMax, 3), neg: hdrhistogram.New(1, histMax, 3)}
}

func (r *recorder) record(d time.Duration) {
	us := d.Microseconds()
	h := r.pos
	if us < 0 {
		h, us = r.neg, -us
	}
	_ = h.RecordValue(min(us, histMax)) // in range: cannot fail (0 is recorded as 0)
}

// Dist summarises a distribution, in milliseconds.
type Dist struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
	// Negative counts the values below 0 (clock resolution).
	Negative int64 `json:"negative,omitempty"`
}

// quantile is the value at q (0..100) of both histograms together, in µs.
func (r *recorder) quantile(q float64) int64 {
	np, nn := r.pos.TotalCount(), r.neg.TotalCount()
	n := np + nn
	k := int64(math.Ceil(q / 100 * float64(n))) // rank, from 1
	k = min(max(k, 1), n)
	if k <= nn {
		// The k-th smallest value is the (nn-k+1)-th smallest magnitude.
		return -r.neg.ValueAtQuantile(float64(nn-k+1) / float64(nn) * 100)
	}
	return r.pos.ValueAtQuantile(float64(k-nn) / float64(np) * 100)
}

func (r *recorder) dist() Dist {
	np, nn := r.pos.TotalCount(), r.neg.TotalCount()
	if np+nn == 0 {
		return Dist{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	d := Dist{Count: np + nn, Negative: nn,
		P50: ms(r.quantile(50)), P90: ms(r.quantile(90)), P99: ms(r.quantile(99))}
	if np > 0 {
		d.Max = ms(r.pos.Max())
	} else {
		d.Max = -ms(r.neg.Min())
	}
	d.Mean = (r.pos.Mean()*float64(np) - r.neg.Mean()*float64(nn)) / float64(np+nn) / 1000
	return d
}
