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
