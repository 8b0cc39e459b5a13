package bench

import (
	"context"
	"net/netip"

	"github.com/ambient-mesh/mesh/tests/netlab"
)

// Netns is a named network namespace (ip netns).
type Netns = netlab.Netns

// Topology is netlab's two nodes with one pod on each, a client pod on
// node1 and a server pod on node2:
//
//	client pod ── veth ── node1 ─┐              ┌─ node2 ── veth ── server pod
//	10.200.1.10        10.200.1.1│   bridge br0  │10.200.2.1         10.200.2.10
//	                   10.200.0.11└─ (host ns) ──┘10.200.0.12
//
// Pods reach each other with their own addresses and no NAT anywhere; see
// package netlab.
type Topology struct {
	*netlab.Topology
	ClientPod, ServerPod             Netns
	Node1PodGateway, Node2PodGateway netip.Addr // each node's end of its pod's veth
	ClientIP, ServerIP               netip.Addr
}

// prefixBase starts the names of everything the harness creates.
const prefixBase = "nb"

// DefaultPrefix names everything one process creates: "nb-<pid>". The pid
// keeps concurrent runs apart and lets leftovers of a killed run be
// recognized (FindStale).
func DefaultPrefix() string { return netlab.PidPrefix(prefixBase) }

// NewTopology creates the topology, all named with prefix. On error it
// removes what it created; Close removes the rest.
func NewTopology(ctx context.Context, prefix string) (*Topology, error) {
	t, err := netlab.New(ctx, prefix, []netlab.PodSpec{{Name: "client", Node: 1}, {Name: "server", Node: 2}})
	if err != nil {
		return nil, err
	}
	c, s := t.Pod("client"), t.Pod("server")
	return &Topology{
		Topology:        t,
		ClientPod:       c.NS,
		ServerPod:       s.NS,
		Node1PodGateway: c.Gateway,
		Node2PodGateway: s.Gateway,
		ClientIP:        c.IP,
		ServerIP:        s.IP,
	}, nil
}
