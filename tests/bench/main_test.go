package bench_test

import (
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/ambient-mesh/mesh/tests/bench"
)

func TestMain(m *testing.M) {
	// The harness test re-executes this test binary for its children.
	bench.RunChildIfRequested()
	// Under -race every process sleeps a second at exit by default; the
	// harness test starts a dozen short-lived children.
	if g := os.Getenv("GORACE"); !strings.Contains(g, "atexit_sleep_ms") {
		os.Setenv("GORACE", strings.TrimSpace(g+" atexit_sleep_ms=0"))
	}
	goleak.VerifyTestMain(m)
}
