// Package hostprobe makes the node's own TCP connections to enrolled pods
// (the kubelet's probes) come from 169.254.7.127, which the pods'
// redirection lets through to the app untouched. Without it a probe would
// be redirected to ztunnel's plaintext inbound port like any other
// connection, and refused there under STRICT mTLS.
//
// It is one nftables table in the node's network namespace, where the node
// agent runs: a set of the enrolled pods' IPv4 addresses and a source-NAT
// rule for locally originated TCP to them. Forwarded traffic (pod to pod)
// is never touched.
package hostprobe

import "net/netip"

// Table is the nftables table the node agent owns in the node's namespace.
const Table = "ambient-mesh-probes"

// Source is the address probes are rewritten to.
var Source = netip.MustParseAddr("169.254.7.127")
