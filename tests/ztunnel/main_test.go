// Package ztunnel_test is ztunnel's netns suite: the real binary on two
// "nodes" with "pods" as network namespaces, a real gRPC control plane and
// a ZDS peer, no Kubernetes (tests/meshlab).
package ztunnel_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/tests/meshlab"
	"github.com/ambient-mesh/mesh/tests/netlab"
)

// ztunnelBin is built once for the suite.
var ztunnelBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			// CI must run the suite, not pass without it.
			fmt.Fprintln(os.Stderr, "the ztunnel netns suite needs root, and CI must run it")
			return 1
		}
		fmt.Println("skipping the ztunnel netns suite: it needs root")
		return 0
	}
	dir, err := os.MkdirTemp("", "ztunnel-suite-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Namespaces of suites killed before their cleanup.
	if stale, err := netlab.Stale(ctx, "zt"); err == nil && len(stale) > 0 {
		_ = netlab.DeleteNetns(ctx, stale...)
	}
	if ztunnelBin, err = meshlab.Build(ctx, dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
