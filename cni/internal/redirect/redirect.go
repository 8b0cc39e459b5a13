// Package redirect configures, inside one enrolled pod's network
// namespace, the redirection of the pod's TCP traffic to the node's
// ztunnel, which listens in that same namespace:
//
//   - outbound TCP not to 127.0.0.1 and not marked 0x539 (ztunnel's own
//     sockets) goes to 15001, with the original destination recoverable by
//     ztunnel (SO_ORIGINAL_DST after a NAT redirect, or the accepted
//     socket's local address after a transparent assignment);
//   - inbound TCP to the pod goes to 15006, except to port 15008 (HBONE,
//     which ztunnel serves itself) and from the probe address
//     169.254.7.127 (kubelet probes, SNATed on the node);
//   - ztunnel's marked traffic is never touched;
//   - with DNS capture, outbound DNS (UDP and TCP 53) goes to 15053.
//
// Two modes implement it with identical behaviour: eBPF programs attached
// in the pod's namespace, and nftables rules (for kernels without the eBPF
// features the first needs). Nothing is installed on the node's own
// network namespace, so other CNIs' host-level hooks are never touched.
package redirect

import "net/netip"

// Ports and marks of the reference redirection (../shared/PROTOCOLS.md).
const (
	OutboundPort = 15001
	InboundPort  = 15006 // plaintext inbound
	HBONEPort    = 15008
	DNSPort      = 15053
	// ZtunnelMark is the SO_MARK ztunnel sets on its own sockets; traffic
	// with it (under MarkMask) is never redirected.
	ZtunnelMark = 0x539
	MarkMask    = 0xfff
)

// ProbeSource is the address kubelet probes to enrolled pods are SNATed to
// on the node; the pod lets traffic from it through untouched.
var ProbeSource = netip.MustParseAddr("169.254.7.127")

// Config is what a pod's redirection depends on.
type Config struct {
	// PodIPs are the pod's addresses (IPv4 and, when dual-stack, IPv6).
	PodIPs []netip.Addr
	// DNSCapture sends the pod's DNS to ztunnel's 15053.
	DNSCapture bool
}

// Mode installs and removes the redirection in a pod's network namespace.
// Implementations must be safe for concurrent use on different pods.
type Mode interface {
	// Name is "ebpf" or "nftables", as the chart value and logs spell it.
	Name() string
	// Apply installs the redirection in the network namespace at
	// netnsPath (a /proc/<pid>/ns/net or bind-mounted path). It is
	// idempotent: applying again replaces what is there, and a failure
	// leaves no partial redirection behind.
	Apply(netnsPath string, cfg Config) error
	// Remove takes the redirection out again; removing from a namespace
	// that has none, or that no longer exists, is not an error.
	Remove(netnsPath string) error
}
