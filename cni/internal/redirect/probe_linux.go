package redirect

import (
	"fmt"
	"net/netip"

	"github.com/ambient-mesh/mesh/pkg/netns"
)

// probeNFTables installs the full nftables redirection, with DNS capture
// and IPv6, in a scratch network namespace: that needs nf_tables, its NAT
// chains in an inet table, and the redirect expression, which the kernel
// loads as modules on demand. The namespace, and the table with it, goes
// away when the probe closes it.
func probeNFTables() error {
	ns, err := netns.New()
	if err != nil {
		return fmt.Errorf("scratch namespace: %w", err)
	}
	defer ns.Close()
	cfg := Config{
		PodIPs:     []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")},
		DNSCapture: true,
	}
	if err := nftReplace(ns, nftPlan(cfg)); err != nil {
		return fmt.Errorf("install nftables redirection in a scratch namespace: %w", err)
	}
	return nil
}
