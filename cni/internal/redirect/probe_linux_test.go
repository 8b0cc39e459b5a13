package redirect

import (
	"os"
	"testing"
)

// TestProbeThisKernel runs the real probes; the test machines' kernels
// have nf_tables with NAT, so the nftables mode must be found supported.
func TestProbeThisKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: probes in a scratch network namespace")
	}
	r := Probe()
	t.Logf("probe:\n%s", r)
	if !r.Supported("nftables") {
		t.Errorf("nftables unsupported on this kernel:\n%s", r)
	}
}
