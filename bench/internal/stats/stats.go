// Package stats holds the small numeric helpers of the benchmark suite:
// medians over runs, percentiles over latencies, and target checks.
package stats

import (
	"math"
	"slices"
	"time"
)

// Median returns the median of xs, ignoring NaN entries (runs that did not
// produce a figure). It returns NaN when no value is left.
func Median(xs []float64) float64 {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted durations
// by the nearest-rank method; zero for an empty slice.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = max(rank, 1)
	rank = min(rank, len(sorted))
	return sorted[rank-1]
}

// Verdict is the outcome of one target check.
type Verdict string

// Verdicts of a target check.
const (
	Pass Verdict = "PASS"
	Fail Verdict = "FAIL"
	NA   Verdict = "N/A"
)

// AtLeast checks got >= want; NaN on either side gives NA.
func AtLeast(got, want float64) Verdict {
	if math.IsNaN(got) || math.IsNaN(want) || want == 0 {
		return NA
	}
	if got >= want {
		return Pass
	}
	return Fail
}

// AtMost checks got <= want; NaN on either side gives NA.
func AtMost(got, want float64) Verdict {
	if math.IsNaN(got) || math.IsNaN(want) {
		return NA
	}
	if got <= want {
		return Pass
	}
	return Fail
}
