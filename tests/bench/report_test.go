package bench

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestReportRatios(t *testing.T) {
	res := func(name string, gbps float64, rtt time.Duration) PathResult {
		return PathResult{
			Name:        name,
			Throughput1: Throughput{Streams: 1, BitsPerSecond: gbps * 1e9},
			ThroughputN: Throughput{Streams: 8, BitsPerSecond: 2 * gbps * 1e9},
			RTT:         Summary{P50: rtt, P99: 2 * rtt},
			Requests:    RateResult{Latency: Summary{P50: rtt, P99: 3 * rtt}},
		}
	}
	r := newReport(time.Now(), HostInfo{}, DefaultConfig(), []PathResult{
		res(PathDirect, 10, 50*time.Microsecond),
		res(PathTCPChain, 5, 100*time.Microsecond),
		res(PathTLSChain, 2, 150*time.Microsecond),
	})

	if r.Paths[0].VsDirect != nil || r.Paths[2].VsTLSChain != nil {
		t.Error("a baseline is compared with itself")
	}
	tcp := r.Paths[1]
	if got := tcp.VsDirect.Throughput1; got != 0.5 {
		t.Errorf("tcp-chain/direct throughput = %v, want 0.5", got)
	}
	if got := tcp.VsTLSChain.ThroughputN; got != 2.5 {
		t.Errorf("tcp-chain/tls-chain throughput = %v, want 2.5", got)
	}
	if got := tcp.VsTLSChain.RTTP50; got != -50*time.Microsecond {
		t.Errorf("tcp-chain - tls-chain rtt p50 = %v, want -50µs", got)
	}
	if got := r.Paths[2].VsDirect.ReqP99; got != 300*time.Microsecond {
		t.Errorf("tls-chain - direct req p99 = %v, want 300µs", got)
	}

	var table bytes.Buffer
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"10.00 Gbit/s", "vs direct", "vs tls-chain", "0.50x", "+100 µs", "-50 µs"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("json does not read back: %v", err)
	}
	if back.Paths[1].VsDirect.Throughput1 != 0.5 {
		t.Errorf("json round trip lost the ratio: %+v", back.Paths[1].VsDirect)
	}
}

// TestReportRounds checks that a path's figures are its rounds' medians
// and that ratios pair each round with the baseline's same round: the
// baseline's slow second round must not pass for the path's.
func TestReportRounds(t *testing.T) {
	cpu := func(v float64) *float64 { return &v }
	rss := func(v int64) *int64 { return &v }
	round := func(gbps float64, rtt time.Duration, cpuPerGiB float64, peak int64) RoundResult {
		return RoundResult{
			Throughput1: Throughput{Streams: 1, Bytes: 1 << 30, Seconds: 1, BitsPerSecond: gbps * 1e9, ProxyCPUPerGiB: cpu(cpuPerGiB)},
			ThroughputN: Throughput{Streams: 8, Bytes: 1 << 30, Seconds: 1, BitsPerSecond: gbps * 1e9},
			RTT:         Summary{N: 100, Min: rtt / 2, Mean: rtt, P50: rtt, P99: 2 * rtt, Max: 3 * rtt},
			Requests: RateResult{
				Latency:       Summary{N: 1000, P50: rtt, P99: 4 * rtt},
				ProxyCPUPer1k: cpu(cpuPerGiB / 10),
				ProxyPeakRSS:  rss(peak),
				Hops:          []HopUsage{{Name: "hop", CPUSeconds: cpuPerGiB, PeakRSSBytes: peak}},
			},
		}
	}
	us := time.Microsecond
	base := PathResult{Name: PathTLSChain, Rounds: []RoundResult{
		round(10, 100*us, 1, 10), round(4, 300*us, 2, 10), round(6, 120*us, 3, 10),
	}}
	path := PathResult{Name: PathZtunnel, Rounds: []RoundResult{
		round(9, 110*us, 5, 30), round(3.6, 310*us, 4, 20), round(6.6, 130*us, 6, 40),
	}}
	base.summarizeRounds()
	path.summarizeRounds()

	if got := path.Throughput1.BitsPerSecond; got != 6.6e9 {
		t.Errorf("median throughput = %v, want 6.6e9 (the middle round)", got)
	}
	if got := path.Throughput1.Bytes; got != 3<<30 {
		t.Errorf("bytes over rounds = %d, want their sum %d", got, 3<<30)
	}
	if got := *path.Throughput1.ProxyCPUPerGiB; got != 5 {
		t.Errorf("median cpu/GiB = %v, want 5", got)
	}
	if got := path.RTT; got.P50 != 130*us || got.N != 300 || got.Min != 55*us || got.Max != 930*us {
		t.Errorf("rtt over rounds = %+v, want p50 130µs, n 300, min 55µs, max 930µs", got)
	}
	// Peak RSS is the first round's: later ones follow bulk transfer.
	if got := *path.Requests.ProxyPeakRSS; got != 30 {
		t.Errorf("peak rss over rounds = %d, want the first round's, 30", got)
	}
	if h := path.Requests.Hops; len(h) != 1 || h[0].CPUSeconds != 5 || h[0].PeakRSSBytes != 30 {
		t.Errorf("hops over rounds = %+v, want cpu 5 (median), peak 30 (first round)", h)
	}

	cfg := DefaultConfig()
	cfg.Rounds = 3
	r := newReport(time.Now(), HostInfo{}, cfg, []PathResult{base, path})
	cmp := r.Paths[1].VsTLSChain
	// Round by round: 0.9, 0.9 and 1.1; the medians alone would say 1.1.
	if got := cmp.Throughput1; got < 0.8999 || got > 0.9001 {
		t.Errorf("paired throughput ratio = %v, want 0.9", got)
	}
	if got := cmp.RTTP50; got != 10*us {
		t.Errorf("paired rtt p50 delta = %v, want 10µs", got)
	}
	if len(cmp.Rounds) != 3 {
		t.Fatalf("comparison has %d rounds, want 3", len(cmp.Rounds))
	}
	var table bytes.Buffer
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"3 rounds", "0.90x", "0.90x..1.10x", "+10 µs..+10 µs"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}
