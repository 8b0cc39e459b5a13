package echo

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

func TestLatencyPercentiles(t *testing.T) {
	tests := []struct {
		name string
		ms   []int
		want Latency
	}{
		{"none", nil, Latency{}},
		{"one", []int{7}, Latency{7, 7, 7, 7}},
		{"unsorted ten", []int{10, 1, 9, 2, 8, 3, 7, 4, 6, 5}, Latency{P50: 5, P90: 9, P99: 10, Max: 10}},
		{"hundred", seq(1, 100), Latency{P50: 50, P90: 90, P99: 99, Max: 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ds []time.Duration
			for _, m := range tt.ms {
				ds = append(ds, time.Duration(m)*time.Millisecond)
			}
			if got := latencyOf(ds); got != tt.want {
				t.Errorf("latencyOf(%v) = %+v, want %+v", tt.ms, got, tt.want)
			}
		})
	}
	if got := millis(1500 * time.Microsecond); got != 1.5 {
		t.Errorf("millis(1.5ms) = %v, want 1.5", got)
	}
}

func seq(from, to int) []int {
	var s []int
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func TestSummarize(t *testing.T) {
	ok := func(pod, version string, ms int) result {
		return result{latency: time.Duration(ms) * time.Millisecond, reply: Reply{Pod: pod, Version: version}}
	}
	fail := func(msg string) result { return result{latency: time.Hour, err: errors.New(msg)} }
	results := []result{
		fail("e1"),
		ok("a", "v1", 1),
		ok("b", "v2", 3),
		fail("e1"),
		ok("a", "v1", 2),
		ok("", "", 4), // a reply naming no pod, such as an expected proxy error
	}
	for i := range 6 {
		results = append(results, fail(fmt.Sprintf("e%d", i+2)))
	}
	s := summarize("http://x", "http", results)

	if s.Total != 12 || s.OK != 4 || s.Errors != 8 {
		t.Errorf("total/ok/errors = %d/%d/%d, want 12/4/8", s.Total, s.OK, s.Errors)
	}
	if want := map[string]int{"a": 2, "b": 1}; !reflect.DeepEqual(s.ByPod, want) {
		t.Errorf("byPod = %v, want %v", s.ByPod, want)
	}
	if want := map[string]int{"v1": 2, "v2": 1}; !reflect.DeepEqual(s.ByVersion, want) {
		t.Errorf("byVersion = %v, want %v", s.ByVersion, want)
	}
	// Distinct, in request order, at most five.
	if want := []string{"e1", "e2", "e3", "e4", "e5"}; !reflect.DeepEqual(s.ErrorSamples, want) {
		t.Errorf("errorSamples = %q, want %q", s.ErrorSamples, want)
	}
	if s.First == nil || s.First.Pod != "a" {
		t.Errorf("first = %+v, want the reply from pod a", s.First)
	}
	// Failures' latencies (an hour each here) are left out.
	if want := (Latency{P50: 2, P90: 4, P99: 4, Max: 4}); s.LatencyMs != want {
		t.Errorf("latency = %+v, want %+v", s.LatencyMs, want)
	}
}
