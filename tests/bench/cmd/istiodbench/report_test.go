package main

import (
	"net/netip"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/tests/procstat"
)

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	s := summarize(ds)
	want := summary{n: 100, p50: 50 * time.Millisecond, p90: 90 * time.Millisecond, p99: 99 * time.Millisecond, max: 100 * time.Millisecond, sum: 5050 * time.Millisecond}
	if s != want {
		t.Errorf("summarize 1..100 ms = %+v, want %+v", s, want)
	}
	if one := summarize([]time.Duration{7}); one.p50 != 7 || one.p99 != 7 || one.max != 7 {
		t.Errorf("one sample: %+v", one)
	}
	if (summarize(nil) != summary{}) {
		t.Errorf("no samples should give the zero summary")
	}
}

func TestPodIPs(t *testing.T) {
	shared := netip.MustParsePrefix("100.64.0.0/10")
	for _, seed := range []uint32{0, 47, 48, 1 << 31} {
		p := newPodIPs(seed)
		seen := map[string]bool{}
		for _, i := range []int{0, 1, 254, 255, 65535, 100000} {
			ip := p.ip(i)
			a, err := netip.ParseAddr(ip)
			if err != nil || !shared.Contains(a) {
				t.Errorf("seed %d pod %d: %q outside %s", seed, i, ip, shared)
			}
			if seen[ip] {
				t.Errorf("seed %d: %s handed out twice", seed, ip)
			}
			seen[ip] = true
		}
	}
	if a, b := newPodIPs(1).ip(0), newPodIPs(2).ip(0); a == b {
		t.Errorf("different runs start at the same address %s", a)
	}
}

func TestMilliseconds(t *testing.T) {
	for d, want := range map[time.Duration]string{
		1500 * time.Microsecond:  "1.5 ms",
		-5600 * time.Microsecond: "-5.6 ms",
		250 * time.Millisecond:   "250 ms",
		-2 * time.Second:         "-2000 ms",
		12 * time.Second:         "12.0 s",
	} {
		if got := ms(d); got != want {
			t.Errorf("ms(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestChangeStats(t *testing.T) {
	st := newChangeStats("x", []change{
		{latency: 10 * time.Millisecond, bytes: 400, resources: 1},
		{latency: 30 * time.Millisecond, bytes: 420, resources: 1, foreign: 2},
	})
	if st.latency.max != 30*time.Millisecond || st.foreign != 2 {
		t.Errorf("%+v", st)
	}
	if lo, p50, hi := intRange(st.bytes); lo != 400 || p50 != 400 || hi != 420 {
		t.Errorf("bytes range %d %d %d", lo, p50, hi)
	}
}

func TestMemoryExtrapolation(t *testing.T) {
	r := &report{pods: 5000, memIdle: procstat.Memory{RSS: 50 << 20}, memLoaded: procstat.Memory{RSS: 120 << 20, HWM: 125 << 20}, memFinal: procstat.Memory{RSS: 121 << 20, HWM: 130 << 20}}
	// Peak growth 80 MiB over 5000 pods: 16 MiB per 1000, 210 MiB at 10k.
	if got := r.memPer1000(); got != 16<<20 {
		t.Errorf("per 1000 pods %v MiB, want 16", got/(1<<20))
	}
	if got := r.memExtrapolated(); got != 210<<20 {
		t.Errorf("at 10k pods %v MiB, want 210", got/(1<<20))
	}
}
