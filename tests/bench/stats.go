package bench

import (
	"slices"
	"time"
)

// Summary condenses a latency sample.
type Summary struct {
	N    int           `json:"n"`
	Min  time.Duration `json:"min_ns"`
	Mean time.Duration `json:"mean_ns"`
	P50  time.Duration `json:"p50_ns"`
	P90  time.Duration `json:"p90_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
	Max  time.Duration `json:"max_ns"`
}

// summarize sorts d in place and summarizes it.
func summarize(d []time.Duration) Summary {
	if len(d) == 0 {
		return Summary{}
	}
	slices.Sort(d)
	var sum time.Duration
	for _, v := range d {
		sum += v
	}
	return Summary{
		N:    len(d),
		Min:  d[0],
		Mean: sum / time.Duration(len(d)),
		P50:  percentile(d, 0.50),
		P90:  percentile(d, 0.90),
		P99:  percentile(d, 0.99),
		P999: percentile(d, 0.999),
		Max:  d[len(d)-1],
	}
}

// percentile returns the nearest-rank percentile of sorted: the smallest
// value that at least a fraction p of the sample does not exceed.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p*float64(len(sorted)) + 0.999999999)
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}
