package bench

import (
	"fmt"
	"net/netip"
	"os"
)

// Netns is a named network namespace (ip netns), bind-mounted under
// /run/netns so that `ip netns list` shows it while it exists.
type Netns struct{ Name string }

// Path is the namespace's bind mount, which setns accepts.
func (n Netns) Path() string { return "/run/netns/" + n.Name }

// Topology is two nodes and one pod on each, all network namespaces:
//
//	client pod ── veth ── node1 ─┐              ┌─ node2 ── veth ── server pod
//	10.200.1.10        10.200.1.1│   bridge br0  │10.200.2.1         10.200.2.10
//	                   10.200.0.11└─ (host ns) ──┘10.200.0.12
//
// The nodes meet on a bridge in a host namespace of the topology's own, as
// kind or a cloud VPC would put them on one L2 segment, rather than on a
// bare veth pair: the bridge is on every path alike, and the machine's own
// namespace is never touched. Each node routes the other node's pod subnet
// to it and forwards, so pods reach each other with their own addresses and
// no NAT anywhere, as a flat pod network does.
type Topology struct {
	Prefix                           string
	Host, Node1, Node2               Netns
	ClientPod, ServerPod             Netns
	Node1IP, Node2IP                 netip.Addr // on the node network
	Node1PodGateway, Node2PodGateway netip.Addr // each node's end of its pod's veth
	ClientIP, ServerIP               netip.Addr

	created []Netns // to delete, in creation order
}

// The address plan. The namespaces are private, so these can only clash
// with nothing.
var (
	nodeNet     = netip.MustParsePrefix("10.200.0.0/24")
	node1PodNet = netip.MustParsePrefix("10.200.1.0/24")
	node2PodNet = netip.MustParsePrefix("10.200.2.0/24")
)

// DefaultPrefix names everything one process creates: "nb-<pid>". The pid
// keeps concurrent runs apart and lets leftovers of a killed run be
// recognized (StaleNamespaces).
func DefaultPrefix() string { return fmt.Sprintf("nb-%d", os.Getpid()) }

func planTopology(prefix string) *Topology {
	ns := func(s string) Netns { return Netns{Name: prefix + "-" + s} }
	return &Topology{
		Prefix:          prefix,
		Host:            ns("host"),
		Node1:           ns("node1"),
		Node2:           ns("node2"),
		ClientPod:       ns("client"),
		ServerPod:       ns("server"),
		Node1IP:         netip.MustParseAddr("10.200.0.11"),
		Node2IP:         netip.MustParseAddr("10.200.0.12"),
		Node1PodGateway: netip.MustParseAddr("10.200.1.1"),
		Node2PodGateway: netip.MustParseAddr("10.200.2.1"),
		ClientIP:        netip.MustParseAddr("10.200.1.10"),
		ServerIP:        netip.MustParseAddr("10.200.2.10"),
	}
}

// Namespaces returns the topology's namespaces.
func (t *Topology) Namespaces() []Netns {
	return []Netns{t.Host, t.Node1, t.Node2, t.ClientPod, t.ServerPod}
}
