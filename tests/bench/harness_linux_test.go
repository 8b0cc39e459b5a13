package bench_test

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/tests/bench"
)

// TestHarness runs a very short version of the suite's measurements over
// real namespaces and processes, and checks what the benchmark relies on:
// bytes cross each path end to end, the server sees the pod's own address
// on the direct path (routing without NAT), and nothing the harness created
// outlives it. It checks no timing.
func TestHarness(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to create network namespaces; run `go test` as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipped: needs iproute2's ip command")
	}
	linksBefore := rootLinks(t)
	ctx := t.Context()
	env, err := bench.NewEnv(ctx, bench.EnvOptions{Log: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	prefix := env.Topo.Prefix
	// Also on failure; Close is idempotent.
	t.Cleanup(func() { _ = env.Close() })
	pids := []int{env.Server.Pid()}

	const short = 200 * time.Millisecond
	for _, tc := range []struct {
		path string
		// The server sees the address of whoever opened its connection:
		// the client pod itself, or the last hop on node2.
		source func(*bench.Topology) netip.Addr
	}{
		{bench.PathDirect, func(t *bench.Topology) netip.Addr { return t.ClientIP }},
		{bench.PathTCPChain, func(t *bench.Topology) netip.Addr { return t.Node2PodGateway }},
		{bench.PathTLSChain, func(t *bench.Topology) netip.Addr { return t.Node2PodGateway }},
		// In the server pod, the second hop dials the server locally.
		{bench.PathTLSInPods, func(t *bench.Topology) netip.Addr { return t.ServerIP }},
	} {
		t.Run(tc.path, func(t *testing.T) {
			p, err := bench.NewPath(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			ep, err := p.Start(ctx, env)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := p.Stop(); err != nil {
					t.Errorf("stop %s: %v", tc.path, err)
				}
			}()
			for _, pr := range ep.Proxies {
				pids = append(pids, pr.Pid())
			}
			seen := len(env.Server.Conns())

			res, err := env.RunClient(ctx, ep.Addr, bench.ClientSpec{Mode: bench.ModeThroughput, Streams: 2, Warmup: short / 4, Duration: short}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.Bytes <= 0 || res.SentTotal < res.Bytes || res.ServerTotal != res.SentTotal {
				t.Fatalf("throughput: %d bytes in window, %d sent, %d read by the server", res.Bytes, res.SentTotal, res.ServerTotal)
			}
			sinks := waitConns(t, env.Server, seen, 2)
			var read int64
			want := tc.source(env.Topo)
			for _, c := range sinks {
				read += c.BytesIn
				src, err := netip.ParseAddrPort(c.Remote)
				if err != nil || src.Addr() != want {
					t.Errorf("server saw a connection from %s, want source address %s", c.Remote, want)
				}
			}
			if read != res.SentTotal {
				t.Errorf("server reports %d bytes read, client wrote %d", read, res.SentTotal)
			}

			rtt, err := env.RunClient(ctx, ep.Addr, bench.ClientSpec{Mode: bench.ModeRTT, Iters: 100}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if rtt.Latency == nil || rtt.Latency.N != 100 {
				t.Errorf("rtt: %+v, want 100 round trips", rtt.Latency)
			}

			marks := make(chan string, 2)
			rate, err := env.RunClient(ctx, ep.Addr, bench.ClientSpec{Mode: bench.ModeRate, Warmup: short / 4, Duration: short, Rate: 1000, Conns: 2, Size: 100},
				func(m string) { marks <- m })
			if err != nil {
				t.Fatal(err)
			}
			if rate.Latency == nil || rate.Latency.N != 200 {
				t.Errorf("requests: %+v, want 200 measured", rate.Latency)
			}
			if len(marks) != 2 {
				t.Errorf("client marked %d window edges, want 2", len(marks))
			}
		})
	}

	if err := env.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), prefix+"-") {
		t.Errorf("namespaces left behind:\n%s", out)
	}
	for _, l := range rootLinks(t) {
		if !slices.Contains(linksBefore, l) && slices.Contains([]string{"br0", "node1", "node2", "veth-client", "veth-server"}, l) {
			t.Errorf("link %s appeared in the machine's namespace", l)
		}
	}
	for _, pid := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Errorf("child %d still exists", pid)
		}
	}
	if kids := children(t); len(kids) > 0 {
		t.Errorf("processes still children of the test: %v", kids)
	}
}

// waitConns waits for n server reports after the first seen ones: the
// server's events arrive on their own pipe, a moment after the client's.
func waitConns(t *testing.T, server *bench.Proc, seen, n int) []bench.ConnReport {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var sinks []bench.ConnReport
		for _, c := range server.Conns()[seen:] {
			if c.Mode == "sink" {
				sinks = append(sinks, c)
			}
		}
		if len(sinks) >= n || time.Now().After(deadline) {
			if len(sinks) != n {
				t.Fatalf("server reported %d sink connections, want %d", len(sinks), n)
			}
			return sinks
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func rootLinks(t *testing.T) []string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return names
}

// children lists the pids whose parent is this process.
func children(t *testing.T) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var kids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(os.Getpid()) {
			kids = append(kids, pid)
		}
	}
	return kids
}
