package echo

import (
	"math"
	"slices"
	"time"
)

// maxErrorSamples bounds Summary.ErrorSamples.
const maxErrorSamples = 5

// Summary is the client's report on one batch of requests.
type Summary struct {
	URL      string `json:"url"`
	Protocol string `json:"protocol"`
	Total    int    `json:"total"`
	OK       int    `json:"ok"`
	Errors   int    `json:"errors"`
	// ByPod and ByVersion count successful replies by the pod and version
	// they name; a reply naming none (say, a proxy's error page the test
	// expected) is counted in OK only.
	ByPod     map[string]int `json:"byPod"`
	ByVersion map[string]int `json:"byVersion"`
	// LatencyMs covers successful requests only, so that fast failures do
	// not flatter it.
	LatencyMs Latency `json:"latencyMs"`
	// ErrorSamples holds the first few distinct errors, in request order.
	ErrorSamples []string `json:"errorSamples"`
	// First is the reply to the first request (in request order) that
	// succeeded; nil if none did.
	First *Reply `json:"first"`
}

// Latency percentiles in milliseconds, nearest-rank.
type Latency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func summarize(url, protocol string, results []result) *Summary {
	s := &Summary{
		URL:          url,
		Protocol:     protocol,
		Total:        len(results),
		ByPod:        map[string]int{},
		ByVersion:    map[string]int{},
		ErrorSamples: []string{},
	}
	var latencies []time.Duration
	for i := range results {
		r := &results[i]
		if r.err != nil {
			s.Errors++
			msg := r.err.Error()
			if len(s.ErrorSamples) < maxErrorSamples && !slices.Contains(s.ErrorSamples, msg) {
				s.ErrorSamples = append(s.ErrorSamples, msg)
			}
			continue
		}
		s.OK++
		latencies = append(latencies, r.latency)
		if r.reply.Pod != "" {
			s.ByPod[r.reply.Pod]++
		}
		if r.reply.Version != "" {
			s.ByVersion[r.reply.Version]++
		}
		if s.First == nil {
			s.First = &r.reply
		}
	}
	s.LatencyMs = latencyOf(latencies)
	return s
}

func latencyOf(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p/100*float64(len(ds)))) - 1
		return millis(ds[max(i, 0)])
	}
	return Latency{P50: rank(50), P90: rank(90), P99: rank(99), Max: millis(ds[len(ds)-1])}
}

// millis rounds to microseconds: finer digits are noise.
func millis(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}
