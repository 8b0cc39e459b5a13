package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/ambient-mesh/mesh/tests/procstat"
)

// Config is one benchmark run.
type Config struct {
	Paths    []string      `json:"paths"`
	Rounds   int           `json:"rounds"`      // times each measurement runs on every path
	Warmup   time.Duration `json:"warmup_ns"`   // unmeasured lead-in of throughput and request runs
	Duration time.Duration `json:"duration_ns"` // measured window of throughput and request runs
	Streams  int           `json:"streams"`     // connections of the parallel throughput run
	RTTIters int           `json:"rtt_iters"`   // measured 1-byte ping-pongs
	Rate     int           `json:"rate"`        // requests per second, open loop
	Conns    int           `json:"conns"`       // request connection pool
	Size     int           `json:"size"`        // request and response bytes

	// ZtunnelEnv is added to the ztunnels' environment, such as
	// GOMAXPROCS=1; the other paths' processes keep netbench's.
	ZtunnelEnv []string `json:"ztunnel_env,omitempty"`

	Prefix string       `json:"-"` // namespace prefix; DefaultPrefix if empty
	Log    *slog.Logger `json:"-"`
}

// DefaultConfig measures the default paths in about three minutes.
func DefaultConfig() Config {
	return Config{
		Paths:    DefaultPaths(),
		Rounds:   3,
		Warmup:   time.Second,
		Duration: 3 * time.Second,
		Streams:  8,
		RTTIters: 10000,
		Rate:     1000,
		Conns:    4,
		Size:     100,
	}
}

func (c Config) validate() error {
	if len(c.Paths) == 0 {
		return errors.New("no paths to measure")
	}
	if c.Rounds <= 0 || c.Warmup < 0 || c.Duration <= 0 || c.Streams <= 0 || c.RTTIters <= 0 || c.Rate <= 0 || c.Conns <= 0 || c.Size <= 0 {
		return fmt.Errorf("invalid config: %+v", c)
	}
	if time.Second/time.Duration(c.Rate) > c.Duration {
		return fmt.Errorf("duration %s holds no request at %d/s", c.Duration, c.Rate)
	}
	return nil
}

// Run builds the scene, starts every path at once, measures them all and
// tears everything down, also on error or cancellation.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	before, err := sampleLoad()
	if err != nil {
		return nil, fmt.Errorf("sample machine load: %w", err)
	}
	rep, err := run(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// After the teardown, so that every child has been reaped and its CPU
	// time counts as ours.
	after, err := sampleLoad()
	if err != nil {
		return nil, fmt.Errorf("sample machine load: %w", err)
	}
	rep.Host.OtherLoad = otherCPUs(before, after)
	return rep, nil
}

func run(ctx context.Context, cfg Config) (_ *Report, err error) {
	started := time.Now()
	env, err := NewEnv(ctx, EnvOptions{Prefix: cfg.Prefix, Log: cfg.Log, ZtunnelEnv: cfg.ZtunnelEnv})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, env.Close()) }()

	type running struct {
		path Path
		ep   Endpoint
	}
	var up []running
	defer func() {
		for _, r := range slices.Backward(up) {
			err = errors.Join(err, r.path.Stop())
		}
	}()
	for _, name := range cfg.Paths {
		p, err := NewPath(name)
		if err != nil {
			return nil, err
		}
		cfg.Log.Info("starting path", "path", name)
		ep, err := p.Start(ctx, env)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		up = append(up, running{p, ep})
	}

	results := make([]PathResult, len(up))
	for i, r := range up {
		results[i].Name = r.path.Name()
		for _, p := range r.ep.Proxies {
			results[i].Proxies = append(results[i].Proxies, p.Name)
		}
		results[i].Rounds = make([]RoundResult, cfg.Rounds)
	}
	// Each measurement runs across all paths back to back before the next
	// begins, and the whole set runs Rounds times, each round starting
	// with the next path: drift on the machine, slow or sudden, then lands
	// on every path alike, and each ratio is taken between figures
	// measured moments apart (see compare). Requests go before throughput
	// so that the proxies' peak RSS reflects request load, not buffers
	// left from bulk transfer.
	phases := []struct {
		name string
		run  func(context.Context, *Env, Config, Endpoint, *RoundResult) error
	}{
		{"1-byte rtt", measureRTTPhase},
		{"requests", measureRatePhase},
		{"throughput, 1 stream", func(ctx context.Context, e *Env, c Config, ep Endpoint, r *RoundResult) error {
			return measureThroughputPhase(ctx, e, c, ep, 1, &r.Throughput1)
		}},
		{fmt.Sprintf("throughput, %d streams", cfg.Streams), func(ctx context.Context, e *Env, c Config, ep Endpoint, r *RoundResult) error {
			return measureThroughputPhase(ctx, e, c, ep, c.Streams, &r.ThroughputN)
		}},
	}
	for round := range cfg.Rounds {
		for _, ph := range phases {
			for k := range up {
				i := (round + k) % len(up)
				r := up[i]
				cfg.Log.Info("measuring", "round", round+1, "what", ph.name, "path", r.path.Name())
				if err := ph.run(ctx, env, cfg, r.ep, &results[i].Rounds[round]); err != nil {
					return nil, fmt.Errorf("round %d: %s on %s: %w", round+1, ph.name, r.path.Name(), err)
				}
			}
		}
	}
	for i := range results {
		results[i].summarizeRounds()
	}
	return newReport(started, hostInfo(), cfg, results), nil
}

func measureRTTPhase(ctx context.Context, env *Env, cfg Config, ep Endpoint, r *RoundResult) error {
	res, err := env.RunClient(ctx, ep.Addr, ClientSpec{Mode: ModeRTT, Iters: cfg.RTTIters}, nil)
	if err != nil {
		return err
	}
	if res.Latency == nil {
		return errors.New("client returned no latencies")
	}
	r.RTT = *res.Latency
	return nil
}

func measureRatePhase(ctx context.Context, env *Env, cfg Config, ep Endpoint, r *RoundResult) error {
	// Peak RSS from here on is the peak under request load.
	for _, p := range ep.Proxies {
		if err := procstat.ResetPeak(p.Pid()); err != nil {
			return fmt.Errorf("reset peak rss of %s: %w", p.Name, err)
		}
	}
	m := &hopMeter{procs: ep.Proxies}
	spec := ClientSpec{Mode: ModeRate, Warmup: cfg.Warmup, Duration: cfg.Duration, Rate: cfg.Rate, Conns: cfg.Conns, Size: cfg.Size}
	res, err := env.RunClient(ctx, ep.Addr, spec, m.mark)
	if err != nil {
		return err
	}
	if res.Latency == nil || res.Latency.N == 0 {
		return errors.New("client recorded no requests")
	}
	r.Requests = RateResult{Latency: *res.Latency}
	if res.DispatchLag != nil {
		r.Requests.DispatchLag = *res.DispatchLag
	}
	if len(ep.Proxies) == 0 {
		return nil
	}
	cpu, err := m.deltas()
	if err != nil {
		return err
	}
	var total time.Duration
	var rss int64
	for i, p := range ep.Proxies {
		mem, err := procstat.ReadMemory(p.Pid())
		peak := mem.HWM
		if err != nil {
			return fmt.Errorf("peak rss of %s: %w", p.Name, err)
		}
		r.Requests.Hops = append(r.Requests.Hops, HopUsage{Name: p.Name, CPUSeconds: cpu[i].Seconds(), PeakRSSBytes: peak})
		total += cpu[i]
		rss += peak
	}
	perK := total.Seconds() / float64(res.Latency.N) * 1000
	r.Requests.ProxyCPUPer1k = &perK
	r.Requests.ProxyPeakRSS = &rss
	return nil
}

func measureThroughputPhase(ctx context.Context, env *Env, cfg Config, ep Endpoint, streams int, out *Throughput) error {
	m := &hopMeter{procs: ep.Proxies}
	spec := ClientSpec{Mode: ModeThroughput, Streams: streams, Warmup: cfg.Warmup, Duration: cfg.Duration}
	res, err := env.RunClient(ctx, ep.Addr, spec, m.mark)
	if err != nil {
		return err
	}
	if res.Seconds <= 0 || res.Bytes <= 0 {
		return fmt.Errorf("no bytes crossed the path (%d bytes in %.3fs)", res.Bytes, res.Seconds)
	}
	*out = Throughput{
		Streams:       streams,
		Bytes:         res.Bytes,
		Seconds:       res.Seconds,
		BitsPerSecond: float64(res.Bytes) * 8 / res.Seconds,
	}
	if len(ep.Proxies) == 0 {
		return nil
	}
	cpu, err := m.deltas()
	if err != nil {
		return err
	}
	var total time.Duration
	for _, d := range cpu {
		total += d
	}
	perGiB := total.Seconds() / (float64(res.Bytes) / (1 << 30))
	out.ProxyCPUPerGiB = &perGiB
	return nil
}

func hostInfo() HostInfo {
	h := HostInfo{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	// The tls ULP is listed once the tls module is available (kTLS).
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_ulp"); err == nil {
		h.KTLS = slices.Contains(strings.Fields(string(b)), "tls")
	}
	return h
}
