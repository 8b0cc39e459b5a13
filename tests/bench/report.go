package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything one run measured. Every ratio in it compares
// figures from the same run.
type Report struct {
	Started time.Time    `json:"started"`
	Host    HostInfo     `json:"host"`
	Config  Config       `json:"config"`
	Paths   []PathResult `json:"paths"`
}

// HostInfo says where the figures come from.
type HostInfo struct {
	Kernel string `json:"kernel"`
	CPUs   int    `json:"cpus"`
	Go     string `json:"go"`
	KTLS   bool   `json:"ktls"`
	// OtherLoad is how many CPUs, on average over the run, were busy with
	// work other than the benchmark's: a shared machine skews every figure.
	OtherLoad float64 `json:"other_load_cpus"`
}

// busyThresholds flag a run whose figures the machine's state spoiled.
const (
	busyOtherLoad = 0.2                    // CPUs taken by other work
	busyLag       = 200 * time.Microsecond // open-loop send lag, p50
)

// PathResult is one path's figures. Each is the median of the rounds'
// (see summarizeRounds), and the rounds' own figures come with them.
type PathResult struct {
	Name        string        `json:"name"`
	Proxies     []string      `json:"proxies,omitempty"`
	Throughput1 Throughput    `json:"throughput_1_stream"`
	ThroughputN Throughput    `json:"throughput_n_streams"`
	RTT         Summary       `json:"rtt_1_byte"`
	Requests    RateResult    `json:"requests"`
	Rounds      []RoundResult `json:"rounds,omitempty"`
	// Ratios against the baselines measured in the same run; absent for
	// a baseline itself and when the baseline was not measured.
	VsDirect   *Comparison `json:"vs_direct,omitempty"`
	VsTLSChain *Comparison `json:"vs_tls_chain,omitempty"`
}

// RoundResult is what one round measured on a path.
type RoundResult struct {
	Throughput1 Throughput `json:"throughput_1_stream"`
	ThroughputN Throughput `json:"throughput_n_streams"`
	RTT         Summary    `json:"rtt_1_byte"`
	Requests    RateResult `json:"requests"`
}

// Throughput is one bulk-transfer run, client to server. Over several
// rounds, Bytes and Seconds are their sums, the rates their medians.
type Throughput struct {
	Streams       int     `json:"streams"`
	Bytes         int64   `json:"bytes"`
	Seconds       float64 `json:"seconds"`
	BitsPerSecond float64 `json:"bits_per_second"`
	// ProxyCPUPerGiB is the CPU seconds all hops spent per GiB carried.
	ProxyCPUPerGiB *float64 `json:"proxy_cpu_s_per_gib,omitempty"`
}

// RateResult is the fixed-rate request run. Over several rounds, each
// figure is the median of the rounds', except peak RSS: the first
// round's, the only one that no bulk transfer went before.
type RateResult struct {
	Latency     Summary `json:"latency"`
	DispatchLag Summary `json:"dispatch_lag"`
	// ProxyCPUPer1k is the CPU seconds all hops spent per 1000 requests;
	// ProxyPeakRSS the sum of the hops' peak RSS during the run.
	ProxyCPUPer1k *float64   `json:"proxy_cpu_s_per_1k_req,omitempty"`
	ProxyPeakRSS  *int64     `json:"proxy_peak_rss_bytes,omitempty"`
	Hops          []HopUsage `json:"hops,omitempty"`
}

// HopUsage is one proxy process during the request run.
type HopUsage struct {
	Name         string  `json:"name"`
	CPUSeconds   float64 `json:"cpu_s"`
	PeakRSSBytes int64   `json:"peak_rss_bytes"`
}

// Comparison sets a path against a baseline: throughput as ratios
// (path/base), latency as differences (path-base).
type Comparison struct {
	Base        string        `json:"base"`
	Throughput1 float64       `json:"throughput_1_stream_ratio"`
	ThroughputN float64       `json:"throughput_n_streams_ratio"`
	RTTP50      time.Duration `json:"rtt_p50_delta_ns"`
	RTTP99      time.Duration `json:"rtt_p99_delta_ns"`
	ReqP50      time.Duration `json:"req_p50_delta_ns"`
	ReqP99      time.Duration `json:"req_p99_delta_ns"`
	// Rounds compares round by round, each from figures measured moments
	// apart; the fields above are then the medians of these.
	Rounds []Comparison `json:"rounds,omitempty"`
}

func newReport(started time.Time, host HostInfo, cfg Config, results []PathResult) *Report {
	r := &Report{Started: started, Host: host, Config: cfg, Paths: results}
	direct, tlsChain := r.find(PathDirect), r.find(PathTLSChain)
	for i := range r.Paths {
		p := &r.Paths[i]
		if direct != nil && p.Name != PathDirect {
			p.VsDirect = compare(p, direct)
		}
		if tlsChain != nil && p.Name != PathTLSChain {
			p.VsTLSChain = compare(p, tlsChain)
		}
	}
	return r
}

func (r *Report) find(name string) *PathResult {
	for i := range r.Paths {
		if r.Paths[i].Name == name {
			return &r.Paths[i]
		}
	}
	return nil
}

// compare sets p against base. With rounds, each round of p is set
// against the same round of base, measured moments before or after it,
// and the comparison is the median of those: a machine whose speed
// drifts over the run moves both sides of each pair alike, where the
// medians of the two paths' figures could come from different moments.
func compare(p, base *PathResult) *Comparison {
	if len(p.Rounds) == 0 || len(p.Rounds) != len(base.Rounds) {
		c := compareRound(&RoundResult{p.Throughput1, p.ThroughputN, p.RTT, p.Requests},
			&RoundResult{base.Throughput1, base.ThroughputN, base.RTT, base.Requests})
		c.Base = base.Name
		return &c
	}
	c := &Comparison{Base: base.Name}
	for i := range p.Rounds {
		rc := compareRound(&p.Rounds[i], &base.Rounds[i])
		rc.Base = base.Name
		c.Rounds = append(c.Rounds, rc)
	}
	c.Throughput1 = medianOf(c.Rounds, func(c Comparison) float64 { return c.Throughput1 })
	c.ThroughputN = medianOf(c.Rounds, func(c Comparison) float64 { return c.ThroughputN })
	c.RTTP50 = medianOf(c.Rounds, func(c Comparison) time.Duration { return c.RTTP50 })
	c.RTTP99 = medianOf(c.Rounds, func(c Comparison) time.Duration { return c.RTTP99 })
	c.ReqP50 = medianOf(c.Rounds, func(c Comparison) time.Duration { return c.ReqP50 })
	c.ReqP99 = medianOf(c.Rounds, func(c Comparison) time.Duration { return c.ReqP99 })
	return c
}

func compareRound(p, base *RoundResult) Comparison {
	return Comparison{
		Throughput1: ratio(p.Throughput1.BitsPerSecond, base.Throughput1.BitsPerSecond),
		ThroughputN: ratio(p.ThroughputN.BitsPerSecond, base.ThroughputN.BitsPerSecond),
		RTTP50:      p.RTT.P50 - base.RTT.P50,
		RTTP99:      p.RTT.P99 - base.RTT.P99,
		ReqP50:      p.Requests.Latency.P50 - base.Requests.Latency.P50,
		ReqP99:      p.Requests.Latency.P99 - base.Requests.Latency.P99,
	}
}

// ratio is a/b, or 0 when b is 0 (JSON has no NaN).
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// WriteJSON writes the report for machines.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report for people: absolute figures, then the
// ratios against each baseline.
func (r *Report) WriteTable(w io.Writer) error {
	c := r.Config
	var b strings.Builder
	ktls := "no kTLS"
	if r.Host.KTLS {
		ktls = "kTLS available (unused)"
	}
	fmt.Fprintf(&b, "netbench %s: kernel %s, %d CPUs, %s, %s; every figure from this run\n",
		r.Started.Format(time.DateTime), r.Host.Kernel, r.Host.CPUs, r.Host.Go, ktls)
	fmt.Fprintf(&b, "other work on the machine during the run: %.2f of %d CPUs\n", r.Host.OtherLoad, r.Host.CPUs)
	if c.Rounds > 1 {
		fmt.Fprintf(&b, "%d rounds, each measuring every path in turn; each figure is the median of the rounds'\n", c.Rounds)
	}
	fmt.Fprintf(&b, "throughput: 1 and %d streams of 256 KiB writes, %s after %s warm-up\n", c.Streams, c.Duration, c.Warmup)
	fmt.Fprintf(&b, "rtt: %d 1-byte ping-pongs on one connection\n", c.RTTIters)
	if len(c.ZtunnelEnv) > 0 {
		fmt.Fprintf(&b, "ztunnels run with %s (the other paths' processes without)\n", strings.Join(c.ZtunnelEnv, " "))
	}
	fmt.Fprintf(&b, "req: %d/s open loop (latency from scheduled send), %d B each way, %d connections, %s after %s warm-up\n\n",
		c.Rate, c.Size, c.Conns, c.Duration, c.Warmup)

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "path\ttput 1\ttput %d\trtt p50\trtt p99\treq p50\treq p99\tproxy cpu/1k req\tproxy peak rss\tproxy cpu/GiB (%d)\t\n", c.Streams, c.Streams)
	var lag50, lag99 time.Duration
	for _, p := range r.Paths {
		cpuK, rss, cpuG := "-", "-", "-"
		if v := p.Requests.ProxyCPUPer1k; v != nil {
			cpuK = fmtSeconds(*v)
		}
		if v := p.Requests.ProxyPeakRSS; v != nil {
			rss = fmtBytes(*v)
		}
		if v := p.ThroughputN.ProxyCPUPerGiB; v != nil {
			cpuG = fmtSeconds(*v)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", p.Name,
			fmtBits(p.Throughput1.BitsPerSecond), fmtBits(p.ThroughputN.BitsPerSecond),
			fmtDur(p.RTT.P50), fmtDur(p.RTT.P99),
			fmtDur(p.Requests.Latency.P50), fmtDur(p.Requests.Latency.P99),
			cpuK, rss, cpuG)
		lag50 = max(lag50, p.Requests.DispatchLag.P50)
		lag99 = max(lag99, p.Requests.DispatchLag.P99)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	for _, base := range []struct {
		name string
		get  func(*PathResult) *Comparison
	}{
		{PathDirect, func(p *PathResult) *Comparison { return p.VsDirect }},
		{PathTLSChain, func(p *PathResult) *Comparison { return p.VsTLSChain }},
	} {
		var rows []*PathResult
		for i := range r.Paths {
			if base.get(&r.Paths[i]) != nil {
				rows = append(rows, &r.Paths[i])
			}
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\nvs %s: throughput as path/%s, latency as path - %s", base.name, base.name, base.name)
		if c.Rounds > 1 {
			fmt.Fprintf(&b, "; median of the rounds' pairs, lowest..highest below")
		}
		b.WriteString("\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "path\ttput 1\ttput %d\trtt p50\trtt p99\treq p50\treq p99\t\n", c.Streams)
		for _, p := range rows {
			cmp := base.get(p)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", p.Name,
				fmtRatio(cmp.Throughput1), fmtRatio(cmp.ThroughputN),
				fmtDelta(cmp.RTTP50), fmtDelta(cmp.RTTP99), fmtDelta(cmp.ReqP50), fmtDelta(cmp.ReqP99))
			if len(cmp.Rounds) > 1 {
				fmt.Fprintf(tw, "\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
					spread(cmp.Rounds, func(c Comparison) float64 { return c.Throughput1 }, fmtRatio),
					spread(cmp.Rounds, func(c Comparison) float64 { return c.ThroughputN }, fmtRatio),
					spread(cmp.Rounds, func(c Comparison) time.Duration { return c.RTTP50 }, fmtDelta),
					spread(cmp.Rounds, func(c Comparison) time.Duration { return c.RTTP99 }, fmtDelta),
					spread(cmp.Rounds, func(c Comparison) time.Duration { return c.ReqP50 }, fmtDelta),
					spread(cmp.Rounds, func(c Comparison) time.Duration { return c.ReqP99 }, fmtDelta))
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintf(&b, "\nproxy cpu: utime+stime of all hops over the measured window (10 ms ticks); proxy peak rss: sum of the hops' VmHWM during the first req run\n")
	fmt.Fprintf(&b, "harness check: open-loop send lag behind schedule p50 %s, p99 %s (worst path; counted in req latency)\n", fmtDur(lag50), fmtDur(lag99))
	if r.Host.OtherLoad > busyOtherLoad || lag50 > busyLag {
		fmt.Fprintf(&b, "WARNING: the machine was busy with other work; figures, the req latencies above all, are not representative\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// spread formats the lowest and the highest of f over the rounds.
func spread[V float64 | time.Duration](rounds []Comparison, f func(Comparison) V, format func(V) string) string {
	lo, hi := f(rounds[0]), f(rounds[0])
	for _, r := range rounds[1:] {
		lo, hi = min(lo, f(r)), max(hi, f(r))
	}
	return format(lo) + ".." + format(hi)
}

func fmtBits(bps float64) string {
	switch {
	case bps >= 1e9:
		return fmt.Sprintf("%.2f Gbit/s", bps/1e9)
	case bps >= 1e6:
		return fmt.Sprintf("%.0f Mbit/s", bps/1e6)
	default:
		return fmt.Sprintf("%.0f kbit/s", bps/1e3)
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	}
}

func fmtDelta(d time.Duration) string {
	if d < 0 {
		return "-" + fmtDur(-d)
	}
	return "+" + fmtDur(d)
}

func fmtRatio(r float64) string {
	if r == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", r)
}

func fmtSeconds(s float64) string {
	if s < 1 {
		return fmt.Sprintf("%.0f ms", s*1000)
	}
	return fmt.Sprintf("%.2f s", s)
}

func fmtBytes(n int64) string {
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
