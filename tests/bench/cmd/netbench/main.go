// Command netbench measures the mesh's candidate data paths side by side in
// one run: direct, a plain TCP two-proxy chain and a mutual-TLS two-proxy
// chain and the path through two ztunnels between a client pod and a server pod
// on two nodes built from network namespaces. It prints absolute figures
// and ratios against the direct path and the TLS chain. Run it as root:
//
//	go run ./tests/bench/cmd/netbench [-rounds 3] [-duration 3s] [-json]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ambient-mesh/mesh/tests/bench"
)

func main() {
	// The harness re-executes this binary for its servers, proxies and
	// clients; in that case this does not return.
	bench.RunChildIfRequested()

	cfg := bench.DefaultConfig()
	paths := flag.String("paths", strings.Join(cfg.Paths, ","), "comma-separated paths to measure, in report order ")
	flag.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "times each measurement runs on every path; figures are the rounds' medians")
	flag.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured window of each throughput and request run")
	flag.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "unmeasured lead-in of each throughput and request run")
	flag.IntVar(&cfg.Streams, "streams", cfg.Streams, "connections of the parallel throughput run")
	flag.IntVar(&cfg.RTTIters, "rtt-iters", cfg.RTTIters, "1-byte ping-pongs of the round-trip run")
	flag.IntVar(&cfg.Rate, "rate", cfg.Rate, "requests per second of the request run (open loop)")
	flag.IntVar(&cfg.Conns, "conns", cfg.Conns, "persistent connections of the request run")
	flag.IntVar(&cfg.Size, "size", cfg.Size, "request and response size in bytes")
	ztEnv := flag.String("ztunnel-env", "", "comma-separated KEY=VALUE added to the ztunnels' environment only, e.g. GOMAXPROCS=1")
	jsonOut := flag.Bool("json", false, "print the report as JSON instead of a table")
	verbose := flag.Bool("v", false, "log progress to stderr")
	cleanStale := flag.Bool("clean-stale", false, "first remove namespaces and files left by killed netbench runs")
	flag.Parse()
	cfg.Paths = strings.Split(*paths, ",")
	if *ztEnv != "" {
		for _, kv := range strings.Split(*ztEnv, ",") {
			if !strings.Contains(kv, "=") {
				fmt.Fprintf(os.Stderr, "netbench: -ztunnel-env %q: want KEY=VALUE\n", kv)
				os.Exit(2)
			}
			cfg.ZtunnelEnv = append(cfg.ZtunnelEnv, kv)
		}
	}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	// Signals cancel the run; the teardown in Run then removes every
	// namespace and process. Signals stay caught until it is done.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg, *jsonOut, *cleanStale)
	stop()
	switch {
	case err != nil && ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "netbench: interrupted; cleaned up:", err)
		os.Exit(130)
	case err != nil:
		fmt.Fprintln(os.Stderr, "netbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg bench.Config, jsonOut, cleanStale bool) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root to create network namespaces")
	}

	stale, err := bench.FindStale(ctx)
	if err != nil {
		return err
	}
	if !stale.Empty() {
		if !cleanStale {
			cfg.Log.Warn("left behind by killed runs; -clean-stale removes them", "netns", stale.Namespaces, "dirs", stale.Dirs)
		} else if err := stale.Remove(ctx); err != nil {
			return err
		}
	}

	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if jsonOut {
		return rep.WriteJSON(os.Stdout)
	}
	return rep.WriteTable(os.Stdout)
}
