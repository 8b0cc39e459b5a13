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

// medianOf returns the median of f over xs: the middle value, or the mean
// of the two middle ones; 0 for no xs.
func medianOf[T any, V float64 | int64 | time.Duration](xs []T, f func(T) V) V {
	if len(xs) == 0 {
		return 0
	}
	vs := make([]V, len(xs))
	for i, x := range xs {
		vs[i] = f(x)
	}
	slices.Sort(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

// summarizeRounds sets each of the path's figures from its rounds: rates,
// percentiles and CPU costs are the rounds' medians, so that one round
// the machine spoiled cannot move them. Peak RSS is the first round's:
// later rounds start with the heap bulk transfer left behind.
func (p *PathResult) summarizeRounds() {
	rs := p.Rounds
	if len(rs) == 0 {
		return
	}
	p.Throughput1 = mergeThroughput(rs, func(r RoundResult) Throughput { return r.Throughput1 })
	p.ThroughputN = mergeThroughput(rs, func(r RoundResult) Throughput { return r.ThroughputN })
	p.RTT = mergeSummaries(rs, func(r RoundResult) Summary { return r.RTT })
	p.Requests = mergeRates(rs)
}

func mergeThroughput(rs []RoundResult, get func(RoundResult) Throughput) Throughput {
	t := Throughput{Streams: get(rs[0]).Streams}
	for _, r := range rs {
		t.Bytes += get(r).Bytes
		t.Seconds += get(r).Seconds
	}
	t.BitsPerSecond = medianOf(rs, func(r RoundResult) float64 { return get(r).BitsPerSecond })
	if get(rs[0]).ProxyCPUPerGiB != nil {
		v := medianOf(rs, func(r RoundResult) float64 { return deref(get(r).ProxyCPUPerGiB) })
		t.ProxyCPUPerGiB = &v
	}
	return t
}

// mergeSummaries combines the rounds' samples: N sums them, Min and Max
// span them, Mean weighs each round by its N, and the percentiles are the
// medians of the rounds'.
func mergeSummaries(rs []RoundResult, get func(RoundResult) Summary) Summary {
	s := Summary{Min: get(rs[0]).Min, Max: get(rs[0]).Max}
	var weighted float64
	for _, r := range rs {
		x := get(r)
		s.N += x.N
		s.Min = min(s.Min, x.Min)
		s.Max = max(s.Max, x.Max)
		weighted += float64(x.Mean) * float64(x.N)
	}
	if s.N > 0 {
		s.Mean = time.Duration(weighted / float64(s.N))
	}
	s.P50 = medianOf(rs, func(r RoundResult) time.Duration { return get(r).P50 })
	s.P90 = medianOf(rs, func(r RoundResult) time.Duration { return get(r).P90 })
	s.P99 = medianOf(rs, func(r RoundResult) time.Duration { return get(r).P99 })
	s.P999 = medianOf(rs, func(r RoundResult) time.Duration { return get(r).P999 })
	return s
}

func mergeRates(rs []RoundResult) RateResult {
	m := RateResult{
		Latency:     mergeSummaries(rs, func(r RoundResult) Summary { return r.Requests.Latency }),
		DispatchLag: mergeSummaries(rs, func(r RoundResult) Summary { return r.Requests.DispatchLag }),
	}
	first := rs[0].Requests
	if first.ProxyCPUPer1k != nil {
		v := medianOf(rs, func(r RoundResult) float64 { return deref(r.Requests.ProxyCPUPer1k) })
		m.ProxyCPUPer1k = &v
	}
	if first.ProxyPeakRSS != nil {
		peak := *first.ProxyPeakRSS
		m.ProxyPeakRSS = &peak
	}
	for j, h := range first.Hops {
		hop := func(r RoundResult) HopUsage {
			if j < len(r.Requests.Hops) {
				return r.Requests.Hops[j]
			}
			return HopUsage{}
		}
		m.Hops = append(m.Hops, HopUsage{
			Name:         h.Name,
			CPUSeconds:   medianOf(rs, func(r RoundResult) float64 { return hop(r).CPUSeconds }),
			PeakRSSBytes: h.PeakRSSBytes,
		})
	}
	return m
}

func deref[V any](p *V) V {
	var zero V
	if p == nil {
		return zero
	}
	return *p
}
